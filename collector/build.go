package collector

import (
	"cmp"
	"slices"
	"sort"
	"time"

	"github.com/coldtrace/coldtrace/trace"
)

// mergeGap joins activity intervals of one phase that are closer than this: a loop of
// reads with microseconds between them is one stretch of loading, not thousands.
const mergeGap = time.Millisecond

// Meta is what the recorder knows beyond the kernel's events.
type Meta struct {
	ID       string
	Workload trace.Workload
	Start    time.Time // wall-clock time zero
	End      uint64    // CLOCK_MONOTONIC end of the recording
	Outcome  trace.Outcome
	Error    string
	Lost     uint64
	Warnings []string
	Host     trace.Host
	// Activity adds intervals the events cannot show, such as pull, unpack and create of
	// a container, observed through the runtime.
	Activity map[trace.PhaseName][]trace.Interval
	Pull     *trace.Pull
	// Conns are connections the probes do not see, such as the puller's registry
	// connections when the pull runs in this process.
	Conns []trace.Conn
}

// Trace assembles the trace of everything handled so far.
func (c *Collector) Trace(m Meta) *trace.Trace {
	c.nameFiles()
	end := c.rel(m.End)
	t := &trace.Trace{
		Format: trace.Format, Version: trace.Version,
		ID: m.ID, Workload: m.Workload, Start: m.Start, MonotonicStart: int64(c.t0),
		Duration: end, Outcome: m.Outcome, Error: m.Error,
		LostEvents: m.Lost, Warnings: m.Warnings, Host: m.Host, Pull: m.Pull,
		Processes: []trace.Process{}, Files: []trace.File{}, Conns: []trace.Conn{},
	}
	if c.ready != nil && c.ready.At <= end {
		r := *c.ready
		t.Ready = &r
	}
	if m.Lost > 0 {
		t.Incomplete = true
	}
	if m.Outcome != trace.OutcomeReady && m.Outcome != trace.OutcomeExited {
		t.Incomplete = true
	}
	for _, pid := range c.order {
		t.Processes = append(t.Processes, c.procs[pid].Process)
	}
	for _, cs := range c.conns {
		cs.URL = RequestURL(cs.request, cs.Remote)
	}
	for _, f := range c.files {
		t.Files = append(t.Files, c.finishFile(f))
	}
	sort.Slice(t.Files, func(i, j int) bool {
		a, b := t.Files[i], t.Files[j]
		if a.FirstOpen != b.FirstOpen {
			return a.FirstOpen < b.FirstOpen
		}
		return a.Path < b.Path
	})
	for _, sk := range c.connSeq {
		t.Conns = append(t.Conns, c.conns[sk].Conn)
	}
	t.Conns = append(t.Conns, m.Conns...)
	t.GPU = c.gpu
	t.GPU.Ioctls = nil
	for _, st := range c.ioctls {
		t.GPU.Ioctls = append(t.GPU.Ioctls, *st)
	}
	sort.Slice(t.GPU.Ioctls, func(i, j int) bool {
		a, b := t.GPU.Ioctls[i], t.GPU.Ioctls[j]
		if a.Device != b.Device {
			return a.Device < b.Device
		}
		return a.Request < b.Request
	})
	sort.Slice(t.GPU.Calls, func(i, j int) bool { return t.GPU.Calls[i].Start < t.GPU.Calls[j].Start })
	t.Phases, t.Critical = segment(t, c.activity(t, m.Activity), c.firstExec())
	return t
}

// finishFile coalesces a file's ranges and counts.
func (c *Collector) finishFile(f *fileState) trace.File {
	out := f.File
	faults := clip(coalesce(c.faultRanges(f)), f.Size)
	for _, r := range faults {
		out.MappedBytes += r.Len
	}
	out.Ranges = coalesce(append(coalesce(f.reads), faults...))
	c.finishWrites(f, &out)
	for i, m := range f.misses {
		out.CacheMisses += int64(m.pages)
		if at := c.rel(m.at); i == 0 || at < out.CacheMissAt {
			out.CacheMissAt = at
		}
	}
	return out
}

// faultRanges are the pages f's faults mapped: the range bpf saw (the fault-around window
// and the large folios already cached at its ends), or more where the faulting page came
// into the page cache in a large folio during the fault, which bpf could not see yet, as
// the misses tell. Linux 6.18 maps such a folio whole when it lies within the mapping,
// within the file and within one page table (one PMD's span of addresses; a folio that
// size is then mapped by the PMD), and the accesses to the rest of it fault no more; older
// kernels do so only for a folio a PMD maps.
func (c *Collector) faultRanges(f *fileState) []trace.Range {
	runs := slices.Clone(f.misses)
	slices.SortFunc(runs, func(a, b missRun) int { return cmp.Compare(a.index, b.index) })
	span := c.tableSpan()
	out := make([]trace.Range, len(f.faults))
	for i, ft := range f.faults {
		out[i] = ft.Range
		pg := uint64(ft.page) / c.page
		// The last run that starts at or before the page.
		j := sort.Search(len(runs), func(j int) bool { return runs[j].index > pg }) - 1
		if j < 0 || pg >= runs[j].index+runs[j].pages || runs[j].order == 0 {
			continue
		}
		size := c.page << runs[j].order
		start := ft.page &^ int64(size-1)
		addr := ft.vmStart + uint64(start-ft.lo) // where the folio is mapped
		switch {
		case start < ft.lo || start+int64(size) > ft.hi || (f.Size > 0 && start+int64(size) > f.Size):
		case addr/span != (addr+size-1)/span:
		case size < span && !c.wholeFolios:
		default:
			end := max(start+int64(size), out[i].End())
			out[i].Off = min(start, out[i].Off)
			out[i].Len = end - out[i].Off
		}
	}
	return out
}

// coalesce sorts ranges and merges those that overlap or touch; a merged range keeps the
// earliest first access and how that access was made.
func coalesce(rs []trace.Range) []trace.Range {
	if len(rs) == 0 {
		return nil
	}
	sorted := append([]trace.Range(nil), rs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Off < sorted[j].Off })
	out := sorted[:1]
	for _, r := range sorted[1:] {
		last := &out[len(out)-1]
		if r.Off > last.End() {
			out = append(out, r)
			continue
		}
		if end := r.End(); end > last.End() {
			last.Len = end - last.Off
		}
		if r.First < last.First {
			last.First, last.Via = r.First, r.Via
		}
		if r.Last > last.Last {
			last.Last = r.Last
		}
	}
	return out
}

// clip cuts ranges at the file's size: a fault-around window can reach past the end.
func clip(rs []trace.Range, size int64) []trace.Range {
	if size <= 0 {
		return rs
	}
	out := rs[:0]
	for _, r := range rs {
		if r.Off >= size {
			continue
		}
		if r.End() > size {
			r.Len = size - r.Off
		}
		out = append(out, r)
	}
	return out
}

// firstExec is the first exec of the workload: the entrypoint's when the container's
// init is known (see SetInit), not the runtime's exec of itself; else the first exec of
// any process, or zero before any.
func (c *Collector) firstExec() trace.Duration {
	first, any := trace.Duration(-1), trace.Duration(-1)
	for _, p := range c.procs {
		if !p.execd {
			continue
		}
		if any < 0 || p.Exec < any {
			any = p.Exec
		}
		if !p.Runtime && (first < 0 || p.Exec < first) {
			first = p.Exec
		}
	}
	if first < 0 {
		first = any
	}
	return max(first, 0)
}
