package advisor

import (
	"fmt"
	"strings"
	"testing"

	"github.com/coldtrace/coldtrace/trace"
)

// Runs on two node classes: the second loads slower and reads a second file; the classes
// are told apart, the gap and the hot sets' overlap are measured, and a split is advised
// only when the hot sets differ.
func TestAnalyzeFleet(t *testing.T) {
	h100 := trace.Host{Kernel: "6.8.0", Driver: "550.54", GPUs: []trace.GPUDev{{Model: "NVIDIA H100"}, {Model: "NVIDIA H100"}}}
	a10 := trace.Host{Kernel: "6.8.0", Driver: "535.1", GPUs: []trace.GPUDev{{Model: "NVIDIA A10G"}}}
	runs := func(extra bool) []*trace.Trace {
		var ts []*trace.Trace
		for i := range 6 {
			load, host := 9.0, h100
			if i >= 4 {
				load, host = 12.0, a10
			}
			tr := genTrace(t, fmt.Sprint("run", i), step{trace.PhaseInit, 1, 0}, step{trace.PhaseLoad, load, 0})
			tr.Host.Kernel, tr.Host.Driver, tr.Host.GPUs = host.Kernel, host.Driver, host.GPUs
			readFile(tr, "/models/a.safetensors", 1<<20, 1, [2]int64{0, 3 * 4096})
			if extra && i >= 4 {
				readFile(tr, "/models/b.bin", 1<<20, 2, [2]int64{0, 9 * 4096})
			}
			ts = append(ts, tr)
		}
		return ts
	}

	f, err := AnalyzeFleet(runs(true), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Classes) != 2 || f.Classes[0].Runs != 4 || f.Classes[0].Class.GPU != "2x NVIDIA H100" || f.Classes[1].Class.Driver != "535.1" {
		t.Fatalf("classes: %+v", f.Classes)
	}
	if f.Classes[0].Ready != 10 || f.Classes[1].Ready != 13 {
		t.Errorf("median ready %v and %v, want 10 and 13", f.Classes[0].Ready, f.Classes[1].Ready)
	}
	// 3 pages in common out of 12: 25%.
	if !f.Split || len(f.Differences) != 2 || !strings.Contains(f.Differences[0], "+30%") || !strings.Contains(f.Differences[1], "shares 25%") {
		t.Errorf("split %v, differences %q", f.Split, f.Differences)
	}
	if n := len(f.Classes[1].Manifest.Spec.HotSet); n != 2 || len(f.Classes[0].Manifest.Spec.HotSet) != 1 {
		t.Errorf("per-class hot sets: %d and %d entries", len(f.Classes[0].Manifest.Spec.HotSet), n)
	}

	f, err = AnalyzeFleet(runs(false), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if f.Split || len(f.Differences) != 1 {
		t.Errorf("the same hot set on both classes: split %v, differences %q", f.Split, f.Differences)
	}
}
