package collector

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/bpf"
	"github.com/coldtrace/coldtrace/trace"
)

const t0 = 1_000_000_000

func hdr(typ, pid uint32, at time.Duration) bpf.Header {
	return bpf.Header{Type: typ, Pid: pid, Tid: pid, Ts: t0 + uint64(at)}
}

func cstr(dst []int8, s string) {
	for i := range s {
		dst[i] = int8(s[i])
	}
}

func openEv(pid uint32, at time.Duration, dirfd, fd int32, name string, ino uint64, mode uint32, size int64) []byte {
	e := bpf.EventOpen{H: hdr(bpf.EvOpen, pid, at), Dirfd: dirfd, Fd: fd, Mode: mode, Dev: 8, Ino: ino, Size: size}
	cstr(e.Path[:], name)
	// As the kernel sends it: only up to the path's NUL.
	raw := bpf.Encode(&e)
	return raw[:len(raw)-len(e.Path)+len(name)+1]
}

func readEv(pid uint32, at time.Duration, fd int32, ino uint64, off, n int64) []byte {
	e := bpf.EventRead{H: hdr(bpf.EvRead, pid, at), Dev: 8, Ino: ino, Off: off, Len: n,
		First: t0 + uint64(at), Last: t0 + uint64(at) + 1000, Busy: 1000, Count: 1, Fd: fd}
	return bpf.Encode(&e)
}

func handle(t testing.TB, c *Collector, evs ...[]byte) {
	for _, e := range evs {
		if err := c.Handle(e); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPathResolution(t *testing.T) {
	c := New(t0, Options{})
	c.AddProcess(10, 1, "/bin/app", "/srv", t0)
	dir := bpf.EventChdir{H: hdr(bpf.EvChdir, 10, time.Millisecond), Fd: -1}
	cstr(dir.Path[:], "models/../data")
	fork := bpf.EventFork{H: hdr(bpf.EvFork, 10, 3*time.Millisecond), Child: 11}
	handle(t, c,
		openEv(10, 0, atFDCWD, 3, "conf/app.yaml", 1, sIFREG, 10),
		bpf.Encode(&dir),
		openEv(10, 2*time.Millisecond, atFDCWD, 4, "x.bin", 2, sIFREG, 10),
		openEv(10, 2*time.Millisecond, atFDCWD, 5, "/opt/w", 3, sIFDIR, 0),
		bpf.Encode(&fork),
		openEv(11, 4*time.Millisecond, 5, 6, "./sub/model.safetensors", 4, sIFREG, 10),
		openEv(11, 4*time.Millisecond, atFDCWD, 7, "y", 5, sIFREG, 10),
	)
	tr := c.Trace(Meta{End: t0 + uint64(10*time.Millisecond), Outcome: trace.OutcomeExited})
	want := map[uint64]string{1: "/srv/conf/app.yaml", 2: "/srv/data/x.bin", 4: "/opt/w/sub/model.safetensors", 5: "/srv/data/y"}
	for _, f := range tr.Files {
		if w, ok := want[f.Ino]; ok && f.Path != w {
			t.Errorf("inode %d resolved to %s, want %s", f.Ino, f.Path, w)
		}
		delete(want, f.Ino)
	}
	if len(want) > 0 {
		t.Errorf("files missing from the trace: %v", want)
	}
}

// TestBatchedReads feeds read runs the way the kernel sends them: several in one record.
func TestBatchedReads(t *testing.T) {
	c := New(t0, Options{})
	c.AddProcess(10, 1, "/bin/app", "/srv", t0)
	var batch []byte
	for i := int64(0); i < 3; i++ {
		batch = append(batch, readEv(10, time.Millisecond, 3, 1, i*4096, 4096)...)
	}
	handle(t, c, openEv(10, 0, atFDCWD, 3, "w.bin", 1, sIFREG, 3*4096), batch)
	if c.Events() != 4 {
		t.Errorf("%d events handled, want 4", c.Events())
	}
	tr := c.Trace(Meta{End: t0 + uint64(10*time.Millisecond), Outcome: trace.OutcomeExited})
	if len(tr.Files) != 1 || tr.Files[0].BytesRead != 3*4096 {
		t.Errorf("files %+v, want w.bin with %d bytes read", tr.Files, 3*4096)
	}
}

func TestCoalesce(t *testing.T) {
	ms := time.Millisecond
	got := coalesce([]trace.Range{
		{Off: 8192, Len: 4096, First: 5 * ms, Last: 5 * ms, Via: trace.AccessMmap},
		{Off: 0, Len: 4096, First: 3 * ms, Last: 3 * ms, Via: trace.AccessRead},
		{Off: 4096, Len: 4096, First: 1 * ms, Last: 9 * ms, Via: trace.AccessRead},
		{Off: 100000, Len: 10, First: 2 * ms, Last: 2 * ms, Via: trace.AccessRead},
		{Off: 100002, Len: 4, First: 7 * ms, Last: 8 * ms, Via: trace.AccessRead},
	})
	want := []trace.Range{
		{Off: 0, Len: 12288, First: 1 * ms, Last: 9 * ms, Via: trace.AccessRead},
		{Off: 100000, Len: 10, First: 2 * ms, Last: 8 * ms, Via: trace.AccessRead},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("range %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if r := clip([]trace.Range{{Off: 0, Len: 65536}, {Off: 65536, Len: 65536}}, 70000); len(r) != 2 || r[1].Len != 70000-65536 {
		t.Errorf("clip: %+v", r)
	}
}

// TestCriticalPath checks the attribution rule: overlapping phases give each instant to the
// phase whose activity ends last, idle time is init before the weights and compute after,
// and the parts add up to the total.
func TestCriticalPath(t *testing.T) {
	ms := time.Millisecond
	tr := &trace.Trace{Duration: 100 * ms}
	acts := map[trace.PhaseName][]trace.Interval{
		trace.PhaseFetch: {{Start: 10 * ms, End: 40 * ms}},
		trace.PhaseLoad:  {{Start: 30 * ms, End: 50 * ms}},
		trace.PhaseGPU:   {{Start: 70 * ms, End: 80 * ms}, {Start: 80*ms + 500*time.Microsecond, End: 90 * ms}},
	}
	phases, segs := segment(tr, acts, 0)
	want := []trace.Segment{
		{Phase: trace.PhaseInit, Start: 0, End: 10 * ms},
		{Phase: trace.PhaseFetch, Start: 10 * ms, End: 30 * ms},
		{Phase: trace.PhaseLoad, Start: 30 * ms, End: 50 * ms},
		{Phase: trace.PhaseCompute, Start: 50 * ms, End: 70 * ms},
		{Phase: trace.PhaseGPU, Start: 70 * ms, End: 90 * ms},
		{Phase: trace.PhaseCompute, Start: 90 * ms, End: 100 * ms},
	}
	if len(segs) != len(want) {
		t.Fatalf("segments %+v, want %+v", segs, want)
	}
	for i := range want {
		if segs[i] != want[i] {
			t.Errorf("segment %d: got %+v, want %+v", i, segs[i], want[i])
		}
	}
	var sum time.Duration
	got := map[trace.PhaseName]trace.Phase{}
	for _, p := range phases {
		sum += p.Critical
		got[p.Name] = p
	}
	if sum != tr.Duration {
		t.Errorf("attribution adds up to %v, not %v", sum, tr.Duration)
	}
	if p := got[trace.PhaseInit]; p.Start != 0 || p.End != 30*ms || p.Critical != 10*ms {
		t.Errorf("init %+v: want span [0,30ms), 10ms critical", p)
	}
	if p := got[trace.PhaseGPU]; p.Busy != 20*ms || len(p.Activity) != 1 {
		t.Errorf("gpu %+v: intervals 0.5 ms apart must merge", p)
	}
	if p := got[trace.PhaseCompute]; p.Critical != 30*ms || p.Start != 50*ms || p.End != 100*ms {
		t.Errorf("compute %+v", p)
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		path string
		size int64
		want trace.FileKind
	}{
		{"/m/model-00001-of-00004.safetensors", 10, trace.KindWeights},
		{"/m/pytorch_model.bin", 2 << 20, trace.KindWeights},
		{"/usr/lib/python3/site-packages/foo.pth", 151, trace.KindOther},
		{"/lib/x86_64-linux-gnu/libc.so.6", 2 << 20, trace.KindLibrary},
		{"/etc/ld.so.cache", 40000, trace.KindOther},
		{"/usr/lib/python3.11/json/__init__.py", 100, trace.KindLibrary},
		// A model file the cache agent staged, as the pod mounts its store: named by its
		// digest, without an extension.
		{"/cache/sha256/" + strings.Repeat("ab", 32), 192 << 20, trace.KindWeights},
		{"/cache/sha256/" + strings.Repeat("ab", 32), 4096, trace.KindOther},
		{"/var/lib/coldtrace/artifacts/tenants/default/sha256/" + strings.Repeat("0f", 32), MinArtifactSize, trace.KindWeights},
		// Image blobs of a content store, a digest that is not hex, and a short name.
		{"/var/lib/containerd/io.containerd.content.v1.content/blobs/sha256/" + strings.Repeat("ab", 32), 192 << 20, trace.KindOther},
		{"/cache/sha256/" + strings.Repeat("zz", 32), 192 << 20, trace.KindOther},
		{"/cache/sha256/" + strings.Repeat("AB", 32), 192 << 20, trace.KindOther},
		{"/cache/sha256/abcdef", 192 << 20, trace.KindOther},
	}
	for _, c := range cases {
		if got := Classify(c.path, c.size); got != c.want {
			t.Errorf("Classify(%s, %d) = %s, want %s", c.path, c.size, got, c.want)
		}
	}
}

func TestMalformedEvents(t *testing.T) {
	c := New(t0, Options{})
	for _, raw := range [][]byte{nil, make([]byte, 8), bpf.Encode(&bpf.Header{Type: 999}), bpf.Encode(&bpf.Header{Type: bpf.EvOpen})} {
		if err := c.Handle(raw); err == nil {
			t.Errorf("accepted %d malformed bytes", len(raw))
		}
	}
	if c.Errors() != 4 {
		t.Errorf("%d errors counted, want 4", c.Errors())
	}
}

// BenchmarkIngest measures the events per second one core of the collector sustains, on
// the mix a start-up produces: opens, reads and closes of many files, and page faults.
func BenchmarkIngest(b *testing.B) {
	const files = 1000
	var evs [][]byte
	for i := 0; i < files; i++ {
		at := time.Duration(i) * time.Microsecond
		evs = append(evs, openEv(10, at, atFDCWD, 3, "lib/python3/module.py", uint64(i), sIFREG, 4096))
		evs = append(evs, readEv(10, at, 3, uint64(i), 0, 4096))
		evs = append(evs, faultEv(10, at, 8, 5000, uint64(i)*65536, 65536))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		c := New(t0, Options{})
		c.AddProcess(10, 1, "/usr/bin/python3", "/srv", t0)
		for _, e := range evs {
			c.Handle(e)
		}
	}
	b.ReportMetric(float64(len(evs)*b.N)/b.Elapsed().Seconds(), "events/s")
}

func TestDriverVersion(t *testing.T) {
	for in, want := range map[string]string{
		// The proprietary and the open kernel modules, x86-64 and Arm.
		"NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Fri Oct 17 2025\nGCC version:  gcc 12":               "580.159.04",
		"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs-builder@U16-I3-B03-4-3)": "580.65.06",
		"NVRM version: NVIDIA UNIX Kernel Module for aarch64  535.104.05  Sat Aug 19 01:13:04 UTC 2023":                   "535.104.05",
	} {
		if got := driverVersion(in); got != want {
			t.Errorf("driverVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

// faultEv is a fault at the first page of a mapping of [off, off+n) of a file, at a
// 64 KiB-aligned address, so that the fault-around window is the mapping's first 64 KiB.
func faultEv(pid uint32, at time.Duration, dev, ino, off, n uint64) []byte {
	const addr = 0x7f0000000000
	return bpf.Encode(&bpf.EventFault{H: hdr(bpf.EvFault, pid, at), Dev: dev, Ino: ino, Addr: addr,
		From: addr, To: addr + min(n, 64<<10), VmStart: addr, VmEnd: addr + n, VmOff: off})
}

// TestFaultWithoutVMA: a fault the kernel could not look up (bpf_find_vma busy: dev and
// ino 0) is found among the process's mappings, and gets the fault-around window the
// kernel maps, cut to the mapping; one outside every file mapping is dropped.
func TestFaultWithoutVMA(t *testing.T) {
	c := New(t0, Options{})
	c.faultAround = 64 << 10
	const base = 0x7f0000000000 + 52<<10 // 12 KiB before a 64 KiB boundary
	mm := bpf.EventMmap{H: hdr(bpf.EvMmap, 10, time.Millisecond), Addr: base, Len: 200 << 10, Off: 4096,
		Dev: 8, Ino: 77, Mode: sIFREG, Fd: 3}
	fork := bpf.EventFork{H: hdr(bpf.EvFork, 10, 2*time.Millisecond), Child: 11}
	fault := func(pid uint32, addr uint64) []byte {
		return bpf.Encode(&bpf.EventFault{H: hdr(bpf.EvFault, pid, 3*time.Millisecond), Addr: addr})
	}
	handle(t, c, openEv(10, 0, -100, 3, "/models/w.bin", 77, sIFREG, 1<<20), bpf.Encode(&mm), bpf.Encode(&fork),
		fault(10, base),           // the mapping's first 12 KiB, up to the boundary
		fault(11, base+20<<10),    // the child, through the inherited mapping: the next 64 KiB
		fault(10, base+199<<10),   // the last window, cut at the mapping's end
		fault(10, 0x7e0000000000)) // no file mapping there
	tr := c.Trace(Meta{End: t0 + uint64(time.Second)})
	var got []trace.Range
	for _, f := range tr.Files {
		if f.Ino == 77 {
			for _, r := range f.Ranges {
				got = append(got, trace.Range{Off: r.Off, Len: r.Len})
			}
		}
	}
	// File offsets: base is file offset 4096; the boundary is 12 KiB on; the mapping ends
	// 200 KiB on, its last window starting at the boundary at 140 KiB.
	want := []trace.Range{{Off: 4096, Len: 76 << 10}, {Off: 4096 + 140<<10, Len: 60 << 10}}
	if !slices.Equal(got, want) {
		t.Errorf("ranges %v, want %v", got, want)
	}
}

// TestFaultMapsLargeFolio: a fault whose page came into the page cache in a large folio
// maps the whole folio where it lies within the mapping and within one page table's span
// of addresses (Linux 6.18), only the fault-around window where it does not; before 6.18
// only a folio that a PMD maps.
func TestFaultMapsLargeFolio(t *testing.T) {
	const base = 0x7f0000000000 // 2 MiB-aligned
	ms := time.Millisecond
	fault := func(addr, start, end, off uint64) []byte {
		win := addr &^ (64<<10 - 1) // each fault's window is an aligned 64 KiB within the mapping
		return bpf.Encode(&bpf.EventFault{H: hdr(bpf.EvFault, 10, 2*ms), Dev: 8, Ino: 77, Addr: addr,
			From: win, To: win + 64<<10, VmStart: start, VmEnd: end, VmOff: off})
	}
	miss := func(index, pages uint64, order uint32) []byte {
		return bpf.Encode(&bpf.EventCacheMiss{H: hdr(bpf.EvCacheMiss, 10, 3*ms), Dev: 8, Ino: 77, Index: index, Pages: pages, Order: order})
	}
	events := [][]byte{openEv(10, ms, atFDCWD, 3, "/models/w.bin", 77, sIFREG, 16<<20),
		// A 2 MiB folio (order 9) under the first fault: all of it.
		fault(base+12<<10, base, base+8<<20, 0), miss(0, 512, 9),
		// 256 KiB folios (order 6): the one under the fault at 4 MiB + 300 KiB.
		fault(base+4<<20+300<<10, base, base+8<<20, 0), miss(1024, 256, 6),
		// Order-0 pages: the window only.
		fault(base+6<<20, base, base+8<<20, 0), miss(1536, 16, 0),
		// A mapping that starts 1 MiB into a 2 MiB folio: the window only.
		fault(base+64<<10, base, base+1<<20, 9<<20), miss(2048, 1024, 9),
		// A 2 MiB folio mapped at an address 1 MiB past a page table's start: it would
		// span two page tables, so the window only.
		fault(base+1<<20+64<<10, base+1<<20, base+4<<20, 12<<20), miss(3072, 512, 9),
	}
	ranges := func(whole bool) []trace.Range {
		c := New(t0, Options{})
		c.faultAround, c.page, c.wholeFolios = 64<<10, 4096, whole
		handle(t, c, events...)
		var got []trace.Range
		for _, f := range c.Trace(Meta{End: t0 + uint64(time.Second)}).Files {
			for _, r := range f.Ranges {
				got = append(got, trace.Range{Off: r.Off, Len: r.Len})
			}
		}
		return got
	}
	window := []trace.Range{{Off: 6 << 20, Len: 64 << 10}, {Off: 9<<20 + 64<<10, Len: 64 << 10}, {Off: 12<<20 + 64<<10, Len: 64 << 10}}
	want := append([]trace.Range{{Off: 0, Len: 2 << 20}, {Off: 4<<20 + 256<<10, Len: 256 << 10}}, window...)
	if got := ranges(true); !slices.Equal(got, want) {
		t.Errorf("Linux 6.18: ranges %v, want %v", got, want)
	}
	want = append([]trace.Range{{Off: 0, Len: 2 << 20}, {Off: 4<<20 + 256<<10, Len: 64 << 10}}, window...)
	if got := ranges(false); !slices.Equal(got, want) {
		t.Errorf("before 6.18: ranges %v, want %v", got, want)
	}
}
