package bpf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/coldtrace/coldtrace/internal/testenv"
)

func TestLoadAttachesEverything(t *testing.T) {
	testenv.RequireBPF(t)
	p, err := Load(Config{RingBufferBytes: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, s := range p.Status() {
		if !s.Attached {
			t.Errorf("probe %s did not attach: %s", s.Name, s.Error)
		}
	}
}

// TestDegrades plays a kernel that refuses one program and lacks one attach point: the
// rest loads and attaches, and each loss is reported with what it costs.
func TestDegrades(t *testing.T) {
	testenv.RequireBPF(t)
	spec, err := loadColdtrace()
	if err != nil {
		t.Fatal(err)
	}
	spec.Maps["events"].MaxEntries = 1 << 16
	// The verifier refuses a program that returns without setting R0.
	spec.Programs["page_fault"].Instructions = asm.Instructions{asm.Return()}
	spec.Programs["enter_openat2"].SectionName = "tracepoint/syscalls/sys_enter_no_such_call"
	p, err := load(spec, false)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	missing := map[string]string{}
	attached := 0
	for _, s := range p.Status() {
		if s.Attached {
			attached++
		} else {
			missing[s.Name] = s.Error + " / " + s.Loses
		}
	}
	if len(missing) != 2 || attached < 40 {
		t.Fatalf("missing %v, %d attached: want exactly the two broken probes missing", missing, attached)
	}
	if m := missing["page_fault"]; !strings.Contains(m, "load program") || !strings.Contains(m, "mmapped files") {
		t.Errorf("page_fault: %q does not say it was refused and what is lost", m)
	}
	if m := missing["enter_openat2"]; !strings.Contains(m, "openat2") {
		t.Errorf("enter_openat2: %q does not say what is lost", m)
	}
}

func TestRingBufferSize(t *testing.T) {
	for _, n := range []int{1000, 3 << 12} {
		if _, err := Load(Config{RingBufferBytes: n}); err == nil || !strings.Contains(err.Error(), "power of two") {
			t.Errorf("ring buffer of %d bytes: %v", n, err)
		}
	}
}

// TestOnDemand: with Config.OnDemand a traced process's opens reach the ring only while
// the probes are active, and again after they were detached and attached anew.
func TestOnDemand(t *testing.T) {
	testenv.RequireBPF(t)
	p, err := Load(Config{RingBufferBytes: 1 << 20, OnDemand: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.TrackPID(uint32(os.Getpid())); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "marker")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for i, active := range []bool{false, true, false, true} {
		if err := p.SetActive(active); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if seen := sawOpen(t, p, path); seen != active {
			t.Errorf("step %d: active %v, but the open was seen: %v", i, active, seen)
		}
	}
}

// sawOpen reads the ring until it is empty and says whether an open of path was in it.
func sawOpen(t *testing.T, p *Probes, path string) bool {
	seen := false
	var rec ringbuf.Record
	for {
		p.Ring().SetDeadline(time.Now().Add(100 * time.Millisecond))
		if err := p.Ring().ReadInto(&rec); err != nil {
			return seen
		}
		if typ, _, err := Decode(rec.RawSample); err == nil && typ == EvOpen && OpenPath(rec.RawSample) == path {
			seen = true
		}
	}
}
