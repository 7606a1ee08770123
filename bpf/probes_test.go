package bpf

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

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
	p, err := load(spec)
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

// TestOnDemand: a traced process's opens reach the ring only while the probes are active,
// and again after they were detached and attached anew.
func TestOnDemand(t *testing.T) {
	testenv.RequireBPF(t)
	p, err := Load(Config{RingBufferBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	path := filepath.Join(t.TempDir(), "marker")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.TrackPID(uint32(os.Getpid())); err != nil {
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

// TestFaultPaths touches every page of a mapped file and of anonymous memory, both paths
// of page faults: on rss_stat (Linux 6.2+) and looked up at the fault (older kernels).
// The fault events must cover the file's every page, as the program touched them all; on
// rss_stat, the anonymous memory must send none.
func TestFaultPaths(t *testing.T) {
	testenv.RequireBPF(t)
	const size = 8 << 20
	path := filepath.Join(t.TempDir(), "weights")
	if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	faultPaths(t, path, func(t *testing.T, p *Probes, f *os.File, lookup bool) {
		file, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(file)
		anon, err := unix.Mmap(-1, 0, 64<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(anon)
		// 4 KiB pages, one fault each, as without transparent huge pages.
		if err := unix.Madvise(anon, unix.MADV_NOHUGEPAGE); err != nil {
			t.Fatal(err)
		}
		var sum byte
		for off := 0; off < size; off += 4096 {
			sum += file[off]
		}
		for off := 0; off < len(anon); off += 4096 {
			anon[off] = sum
		}
		fileAt := uint64(uintptr(unsafe.Pointer(&file[0])))
		anonAt := uint64(uintptr(unsafe.Pointer(&anon[0])))
		pages := map[uint64]bool{} // file pages that faults mapped
		anonFaults, events := 0, 0
		for _, e := range faultEvents(p) {
			switch {
			case e.Addr >= anonAt && e.Addr < anonAt+uint64(len(anon)):
				anonFaults++
			case e.Addr >= fileAt && e.Addr < fileAt+size:
				events++
				if e.Dev == 0 { // looked up in user space (the collector's mmap table)
					continue
				}
				for a := max(e.From, fileAt); a < min(e.To, fileAt+size); a += 4096 {
					pages[(a-fileAt)/4096] = true
				}
			}
		}
		t.Logf("%d fault events on the file, covering %d of its %d pages; %d on anonymous memory", events, len(pages), size/4096, anonFaults)
		if !lookup && anonFaults > 0 {
			t.Errorf("%d fault events for anonymous memory", anonFaults)
		}
		if !lookup && len(pages) != size/4096 {
			t.Errorf("the fault events cover %d of the file's %d pages", len(pages), size/4096)
		}
		if lookup && events == 0 {
			t.Errorf("no fault event for the file")
		}
	})
}

// faultPaths runs test on both paths of page faults (on rss_stat where the kernel has it,
// and looked up at the fault), each with its own probes tracking this process and path
// open, on one locked thread: the rss_stat path notes faults in a slot that the thread's
// first traced syscall (the open) creates.
func faultPaths(t *testing.T, path string, test func(t *testing.T, p *Probes, f *os.File, lookup bool)) {
	for _, lookup := range []bool{false, true} {
		if !lookup && !RSSPerFault() {
			continue
		}
		t.Run(fmt.Sprintf("lookup=%v", lookup), func(t *testing.T) {
			p, err := Load(Config{RingBufferBytes: 8 << 20, FaultLookup: lookup})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if err := p.TrackPID(uint32(os.Getpid())); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			test(t, p, f, lookup)
		})
	}
}

// faultEvents reads the fault events queued in p's ring until it stays empty for 200 ms.
func faultEvents(p *Probes) []EventFault {
	var out []EventFault
	var rec ringbuf.Record
	for {
		p.Ring().SetDeadline(time.Now().Add(200 * time.Millisecond))
		if err := p.Ring().ReadInto(&rec); err != nil {
			return out
		}
		if typ, ptr, err := Decode(rec.RawSample); err == nil && typ == EvFault {
			out = append(out, *(*EventFault)(ptr))
		}
	}
}

// TestKernelFaults hands readlink a path that lies in a mapped file, which the program
// itself never touches: the kernel faults the page in while it copies the argument (as
// with a path constant in an executable's .rodata), and both fault paths must report it.
func TestKernelFaults(t *testing.T) {
	testenv.RequireBPF(t)
	const page = 5
	content := make([]byte, 8*4096)
	copy(content[page*4096:], "/proc/self/exe\x00")
	path := filepath.Join(t.TempDir(), "rodata")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	faultPaths(t, path, func(t *testing.T, p *Probes, f *os.File, _ bool) {
		m, err := unix.Mmap(int(f.Fd()), 0, len(content), unix.PROT_READ, unix.MAP_PRIVATE)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(m)
		arg := uint64(uintptr(unsafe.Pointer(&m[page*4096])))
		var buf [256]byte
		n, _, errno := unix.Syscall(unix.SYS_READLINK, uintptr(arg), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
		if errno != 0 || n == 0 {
			t.Fatalf("readlink of the mapped path: %v", errno)
		}
		var hits int
		for _, e := range faultEvents(p) {
			if e.Addr == arg {
				hits++
				if e.Dev != 0 && (arg < e.From || arg >= e.To) {
					t.Errorf("the fault at %#x maps [%#x, %#x)", arg, e.From, e.To)
				}
			}
		}
		if hits != 1 {
			t.Errorf("%d fault events at the readlink argument, want 1", hits)
		}
	})
}
