package report

import (
	"bytes"
	"encoding/json"
	"sort"
	"testing"

	"github.com/coldtrace/coldtrace/trace"
)

type chromeFile struct {
	TraceEvents []struct {
		Name string         `json:"name"`
		Ph   string         `json:"ph"`
		Ts   *float64       `json:"ts"`
		Dur  *float64       `json:"dur"`
		Pid  int            `json:"pid"`
		Tid  int            `json:"tid"`
		Args map[string]any `json:"args"`
	} `json:"traceEvents"`
	DisplayTimeUnit string `json:"displayTimeUnit"`
}

func parseChrome(t *testing.T, tr *trace.Trace) chromeFile {
	t.Helper()
	var buf bytes.Buffer
	if err := Chrome(&buf, tr); err != nil {
		t.Fatal(err)
	}
	if !json.Valid(buf.Bytes()) {
		t.Fatalf("invalid JSON:\n%s", buf.String())
	}
	var f chromeFile
	if err := json.Unmarshal(buf.Bytes(), &f); err != nil {
		t.Fatal(err)
	}
	if f.DisplayTimeUnit != "ms" {
		t.Errorf("displayTimeUnit %q", f.DisplayTimeUnit)
	}
	// Every event is named and timed; every complete event has a duration, never negative;
	// every track that holds events is named.
	named := map[[2]int]bool{}
	for _, e := range f.TraceEvents {
		if e.Ph == "M" && e.Name == "thread_name" {
			named[[2]int{e.Pid, e.Tid}] = true
		}
	}
	for i, e := range f.TraceEvents {
		if e.Name == "" || e.Ph == "" || e.Ts == nil || *e.Ts < 0 {
			t.Errorf("event %d lacks a name, phase or time: %+v", i, e)
		}
		if e.Ph == "M" && (e.Args["name"] == nil || e.Args["name"] == "") {
			t.Errorf("metadata event %d names nothing: %+v", i, e)
		}
		if e.Ph == "X" {
			if e.Dur == nil || *e.Dur < 0 {
				t.Errorf("complete event %d (%s) has duration %v", i, e.Name, e.Dur)
			}
			if !named[[2]int{e.Pid, e.Tid}] {
				t.Errorf("complete event %d (%s) is on an unnamed track %d/%d", i, e.Name, e.Pid, e.Tid)
			}
		}
	}
	checkNesting(t, f)
	return f
}

// checkNesting fails when two complete events on one track overlap without one containing
// the other: Perfetto drops such events.
func checkNesting(t *testing.T, f chromeFile) {
	t.Helper()
	type span struct{ start, end float64 }
	tracks := map[[2]int][]span{}
	for _, e := range f.TraceEvents {
		if e.Ph == "X" {
			k := [2]int{e.Pid, e.Tid}
			tracks[k] = append(tracks[k], span{*e.Ts, *e.Ts + *e.Dur})
		}
	}
	for k, spans := range tracks {
		sort.Slice(spans, func(i, j int) bool {
			if spans[i].start != spans[j].start {
				return spans[i].start < spans[j].start
			}
			return spans[i].end > spans[j].end
		})
		var stack []span
		for _, s := range spans {
			for len(stack) > 0 && stack[len(stack)-1].end <= s.start+1e-6 {
				stack = stack[:len(stack)-1]
			}
			if len(stack) > 0 && s.end > stack[len(stack)-1].end+1e-6 {
				t.Errorf("track %v: [%v, %v] overlaps [%v, %v] without nesting", k, s.start, s.end, stack[len(stack)-1].start, stack[len(stack)-1].end)
			}
			stack = append(stack, s)
		}
	}
}

func countPh(f chromeFile) map[string]int {
	n := map[string]int{}
	for _, e := range f.TraceEvents {
		n[e.Ph]++
	}
	return n
}

func TestChromeRealistic(t *testing.T) {
	tr := realistic()
	f := parseChrome(t, tr)
	n := countPh(f)

	var activity, ranges, samples, fileTracks int
	for _, p := range tr.Phases {
		activity += len(p.Activity)
	}
	for _, fl := range tr.Files {
		ranges += len(fl.Ranges)
		if len(fl.Ranges) > 0 {
			fileTracks++
		}
	}
	for _, c := range tr.Conns {
		samples += len(c.Samples)
	}
	wantX := len(tr.Phases) + activity + len(tr.Critical) + ranges + len(tr.Conns) + len(tr.GPU.Calls) + len(tr.GPU.Ioctls)
	if n["X"] != wantX {
		t.Errorf("%d complete events, want %d", n["X"], wantX)
	}
	if n["C"] != samples {
		t.Errorf("%d counter events, want %d (one per connection sample)", n["C"], samples)
	}
	if want := len(tr.GPU.Opens) + 1; n["i"] != want {
		t.Errorf("%d instant events, want %d (device opens and ready)", n["i"], want)
	}
	// Ranges and ioctls that overlap in time take a second track: a shard's two mmapped
	// halves, and /dev/nvidiactl's two request codes.
	var threads int
	for _, e := range f.TraceEvents {
		if e.Name == "thread_name" {
			threads++
		}
	}
	if want := len(tr.Phases) + 1 + fileTracks + 4 + len(tr.Conns) + 2 + 3 + 1; threads != want {
		t.Errorf("%d named tracks, want %d", threads, want)
	}

	names := map[string]bool{}
	for _, e := range f.TraceEvents {
		if e.Ph == "M" {
			names[e.Args["name"].(string)] = true
		}
		if e.Ph == "X" && e.Name == "cuInit" && (*e.Ts != 68e6 || *e.Dur != 3.3e6) {
			t.Errorf("cuInit at %v µs for %v µs, want 68e6 for 3.3e6", *e.Ts, *e.Dur)
		}
		if e.Ph == "i" && e.Name == "ready" && *e.Ts != 118e6 {
			t.Errorf("ready at %v µs", *e.Ts)
		}
	}
	for _, want := range []string{"phases", "files", "network", "gpu", "critical path", "load", "compute", "registry 10.0.0.5:443", "/dev/nvidiactl", weirdPath} {
		if !names[want] {
			t.Errorf("no track named %q", want)
		}
	}
}

func TestChromeEmptyAndIncomplete(t *testing.T) {
	f := parseChrome(t, empty())
	if n := countPh(f); n["X"] != 0 || n["i"] != 0 || n["M"] != 1 {
		t.Errorf("empty trace events %v, want only the phases process name", n)
	}
	tr := incomplete()
	f = parseChrome(t, tr)
	if n := countPh(f); n["X"] != len(tr.Phases)+len(tr.Critical) || n["i"] != 0 {
		t.Errorf("incomplete trace events %v", n)
	}
}
