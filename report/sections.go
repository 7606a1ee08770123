package report

import (
	"cmp"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/coldtrace/coldtrace/internal/units"
	"github.com/coldtrace/coldtrace/trace"
)

// fact is one line of the report header.
type fact struct{ key, value string }

// section is one titled table. Table renders sections as text and HTML as <table>s, so
// that both show the same numbers.
type section struct {
	title string
	head  []string
	rows  [][]string
	note  string // what the table leaves out, or why it is empty
}

// facts is the header: what ran, how it ended, and how far to trust the numbers.
func facts(t *trace.Trace) []fact {
	fs := []fact{
		{"workload", workloadName(t)},
		{"outcome", string(t.Outcome)},
		{"total", fmtDur(t.Duration)},
		{"ready", readyText(t)},
	}
	if t.Ready != nil && t.Error != "" {
		fs = append(fs, fact{"error", t.Error})
	}
	if !t.Start.IsZero() {
		fs = append(fs, fact{"started", t.Start.UTC().Format("2006-01-02 15:04:05.000 UTC")})
	}
	if h := hostText(t.Host); h != "" {
		fs = append(fs, fact{"host", h})
	}
	if p := t.Pull; p != nil {
		var n int64
		for _, l := range p.Layers {
			n += l.Bytes
		}
		v := fmt.Sprintf("%s: %d layers, %s in %s", p.Ref, len(p.Layers), units.Bytes(n), fmtDur(p.End-p.Start))
		if len(p.Contended) > 0 {
			v += "; contended with " + strings.Join(p.Contended, ", ")
		}
		fs = append(fs, fact{"pull", v})
	}
	fs = append(fs, fact{"lost events", fmt.Sprint(t.LostEvents)})
	for _, w := range t.Warnings {
		fs = append(fs, fact{"warning", w})
	}
	if t.Incomplete {
		fs = append(fs, fact{"INCOMPLETE", "this trace misses part of the cold start; counts are lower bounds"})
	}
	return fs
}

// hostText summarises the host facts that matter when reading the phases.
func hostText(h trace.Host) string {
	var parts []string
	if h.Hostname != "" {
		parts = append(parts, h.Hostname)
	}
	if h.Kernel != "" {
		parts = append(parts, "kernel "+h.Kernel)
	}
	if h.CPUs > 0 {
		parts = append(parts, fmt.Sprintf("%d CPUs", h.CPUs))
	}
	if h.MemoryBytes > 0 {
		parts = append(parts, units.Bytes(int64(h.MemoryBytes))+" memory")
	}
	if len(h.GPUs) > 0 {
		g := fmt.Sprintf("%d× %s", len(h.GPUs), h.GPUs[0].Model)
		if h.Driver != "" {
			g += ", driver " + h.Driver
		}
		if h.Persistence != "" {
			g += ", persistence " + h.Persistence
		}
		parts = append(parts, g)
	}
	return strings.Join(parts, ", ")
}

// sections builds every table of the report; top bounds the long ones. Tables that could
// only say "nothing here" are folded into one note.
func sections(t *trace.Trace, top int) []section {
	out := []section{phaseSection(t), filesByBytes(t, top)}
	if byTime := filesByTime(t, top); len(byTime.rows) > 0 {
		out = append(out, byTime)
	}
	out = append(out, peerSection(t, top))
	if p := t.Pull; p != nil && len(p.Overlaps) > 0 {
		out = append(out, contentionSection(p))
	}
	if g := t.GPU; len(g.Opens)+len(g.Ioctls)+len(g.Calls) == 0 {
		out = append(out, section{title: "GPU", note: "no accelerator activity: no device opens, ioctls or driver calls"})
	} else {
		out = append(out, gpuDevices(t), gpuIoctls(t, top), gpuCalls(t))
	}
	return append(out, probeSection(t))
}

func phaseSection(t *trace.Trace) section {
	s := section{
		title: "Phases",
		head:  []string{"PHASE", "START", "END", "SPAN", "BUSY", "CRITICAL", "SHARE", "BYTES", "THROUGHPUT"},
	}
	ps := phases(t)
	if len(ps) == 0 {
		s.note = "no phases recorded"
		return s
	}
	sh := shares(ps)
	var crit trace.Duration
	var bytes int64
	for i, p := range ps {
		share := "-"
		if sh != nil {
			share = fmtShare(sh[i])
		}
		busy := p.Busy
		if busy == 0 {
			busy = p.Span() // a phase without activity intervals was busy for its span
		}
		s.rows = append(s.rows, []string{
			string(p.Name), fmtDur(p.Start), fmtDur(p.End), fmtDur(p.Span()), fmtDur(p.Busy),
			fmtDur(p.Critical), share, bytesOrDash(p.Bytes), fmtRate(p.Bytes, busy),
		})
		crit += p.Critical
		bytes += p.Bytes
	}
	total := "-"
	if sh != nil {
		total = fmtShare(1000)
	}
	s.rows = append(s.rows, []string{"total", "0", fmtDur(t.Duration), fmtDur(t.Duration), "", fmtDur(crit), total, bytesOrDash(bytes), ""})
	if sh == nil {
		s.note = "no critical-path attribution in this trace"
	}
	return s
}

func bytesOrDash(n int64) string {
	if n == 0 {
		return "-"
	}
	return units.Bytes(n)
}

var fileHead = []string{"PATH", "KIND", "READ", "MAPPED", "MISS PAGES", "MISS BYTES", "RANGES", "FIRST ACCESS", "READ TIME"}

func fileRow(f trace.File) []string {
	return []string{
		shortPath(f.Path, 60), string(f.Kind), units.Bytes(f.BytesRead), units.Bytes(f.MappedBytes),
		fmt.Sprint(f.CacheMisses), units.Bytes(f.CacheMisses * pageSize), fmt.Sprint(len(f.Ranges)),
		fmtDur(firstAccess(f)), fmtDur(f.ReadTime),
	}
}

func filesByBytes(t *trace.Trace, top int) section {
	s := section{title: "Top files by bytes", head: fileHead}
	fs := topFilesByBytes(t)
	for _, f := range fs[:min(top, len(fs))] {
		s.rows = append(s.rows, fileRow(f))
	}
	s.note = moreNote(len(fs), top, "no file contents read")
	return s
}

func filesByTime(t *trace.Trace, top int) section {
	s := section{title: "Top files by read time", head: fileHead}
	var fs []trace.File
	for _, f := range t.Files {
		if f.ReadTime > 0 {
			fs = append(fs, f)
		}
	}
	slices.SortStableFunc(fs, func(a, b trace.File) int { return cmp.Compare(b.ReadTime, a.ReadTime) })
	for _, f := range fs[:min(top, len(fs))] {
		s.rows = append(s.rows, fileRow(f))
	}
	s.note = moreNote(len(fs), top, "")
	return s
}

// moreNote says how many rows a table left out, or why it has none.
func moreNote(n, top int, empty string) string {
	switch {
	case n == 0:
		return empty
	case n > top:
		return fmt.Sprintf("and %d more", n-top)
	}
	return ""
}

// shortPath keeps the end of a long path, where the file name is.
func shortPath(p string, n int) string {
	r := []rune(p)
	if len(r) <= n {
		return p
	}
	return "…" + string(r[len(r)-n+1:])
}

// contentionSection is the other pulls that downloaded on the node while the image did,
// each with its rate during the overlap, beside this pull's own rate.
func contentionSection(p *trace.Pull) section {
	s := section{
		title: "Pull contention",
		head:  []string{"OTHER PULL", "NAMESPACE", "BLOBS", "FROM", "TO", "OVERLAP", "RECV", "RECV RATE"},
		note:  "other pulls on the node while this one downloaded, from containerd's content ingests",
	}
	for _, o := range p.Overlaps {
		name := o.Ref
		if name == "" {
			name = "unknown image"
		}
		overlap := trace.Total(o.Intervals)
		from, to := "-", "-"
		if n := len(o.Intervals); n > 0 {
			from, to = fmtDur(o.Intervals[0].Start), fmtDur(o.Intervals[n-1].End)
		}
		s.rows = append(s.rows, []string{
			name, o.Namespace, fmt.Sprint(len(o.Blobs)), from, to, fmtDur(overlap), units.Bytes(o.Bytes), fmtRate(o.Bytes, overlap),
		})
	}
	return s
}

// peer aggregates the connections to one remote endpoint: model downloads often open
// several connections to the same server.
type peer struct {
	remote, role, dir string
	conns             int
	recv, sent        int64
	start, end        trace.Duration
	firstRecv, last   trace.Duration
}

func peerSection(t *trace.Trace, top int) section {
	s := section{
		title: "Network peers",
		head:  []string{"REMOTE", "ROLE", "DIR", "CONNS", "RECV", "SENT", "DURATION", "RECV RATE"},
	}
	var peers []*peer
	byKey := map[string]*peer{}
	for _, c := range t.Conns {
		key := c.Remote + "\x00" + c.Role + "\x00" + c.Dir
		p := byKey[key]
		if p == nil {
			p = &peer{remote: c.Remote, role: c.Role, dir: c.Dir, start: c.Open, end: connEnd(t, c), firstRecv: -1}
			byKey[key] = p
			peers = append(peers, p)
		}
		p.conns++
		p.recv += c.BytesRecv
		p.sent += c.BytesSent
		p.start = min(p.start, c.Open)
		p.end = max(p.end, connEnd(t, c))
		if c.BytesRecv > 0 && c.LastRecv > c.FirstRecv {
			if p.firstRecv < 0 || c.FirstRecv < p.firstRecv {
				p.firstRecv = c.FirstRecv
			}
			p.last = max(p.last, c.LastRecv)
		}
	}
	slices.SortStableFunc(peers, func(a, b *peer) int { return cmp.Compare(b.recv+b.sent, a.recv+a.sent) })
	for _, p := range peers[:min(top, len(peers))] {
		// The rate is over the receiving window when known: idle keep-alive time is not
		// the link's fault.
		window := p.end - p.start
		if p.firstRecv >= 0 {
			window = p.last - p.firstRecv
		}
		s.rows = append(s.rows, []string{
			p.remote, p.role, p.dir, fmt.Sprint(p.conns), units.Bytes(p.recv), units.Bytes(p.sent),
			fmtDur(p.end - p.start), fmtRate(p.recv, window),
		})
	}
	s.note = moreNote(len(peers), top, "no TCP connections")
	return s
}

func gpuDevices(t *trace.Trace) section {
	s := section{title: "GPU device opens", head: []string{"DEVICE", "OPENS", "FIRST", "PIDS"}}
	type dev struct {
		opens int
		first trace.Duration
		pids  []int
	}
	var names []string
	devs := map[string]*dev{}
	for _, o := range t.GPU.Opens {
		d := devs[o.Path]
		if d == nil {
			d = &dev{first: o.At}
			devs[o.Path] = d
			names = append(names, o.Path)
		}
		d.opens++
		d.first = min(d.first, o.At)
		if !slices.Contains(d.pids, o.PID) {
			d.pids = append(d.pids, o.PID)
		}
	}
	for _, n := range names {
		d := devs[n]
		pids := make([]string, len(d.pids))
		for i, p := range d.pids {
			pids[i] = fmt.Sprint(p)
		}
		s.rows = append(s.rows, []string{n, fmt.Sprint(d.opens), fmtDur(d.first), strings.Join(pids, ",")})
	}
	if len(names) == 0 {
		s.note = "no accelerator device opened"
	} else if t.GPU.Mmaps > 0 {
		s.note = fmt.Sprintf("%d mmaps of device memory", t.GPU.Mmaps)
	}
	return s
}

func gpuIoctls(t *trace.Trace, top int) section {
	s := section{title: "GPU ioctls", head: []string{"DEVICE", "REQUEST", "COUNT", "TOTAL", "FIRST", "LAST"}}
	is := slices.Clone(t.GPU.Ioctls)
	slices.SortStableFunc(is, func(a, b trace.IoctlStat) int { return cmp.Compare(b.Total, a.Total) })
	var total trace.Duration
	var count int64
	for i, x := range is {
		total += x.Total
		count += x.Count
		if i < top {
			s.rows = append(s.rows, []string{
				x.Device, fmt.Sprintf("0x%08x", x.Request), fmt.Sprint(x.Count), fmtDur(x.Total), fmtDur(x.First), fmtDur(x.Last),
			})
		}
	}
	if len(is) == 0 {
		s.note = "no ioctls on accelerator devices"
		return s
	}
	s.note = fmt.Sprintf("%d ioctls in %s in all", count, fmtDur(total))
	if more := moreNote(len(is), top, ""); more != "" {
		s.note += "; " + more + " request codes"
	}
	return s
}

func gpuCalls(t *trace.Trace) section {
	s := section{title: "GPU driver calls", head: []string{"CALL", "PID", "TID", "START", "DURATION", "RETURN"}}
	for _, c := range t.GPU.Calls {
		s.rows = append(s.rows, []string{
			c.Name, fmt.Sprint(c.PID), fmt.Sprint(c.TID), fmtDur(c.Start), fmtDur(c.End - c.Start), fmt.Sprint(c.Return),
		})
	}
	switch {
	case len(t.GPU.Calls) == 0:
		s.note = "no driver calls traced"
	case t.GPU.Library != "":
		s.note = "traced in " + path.Base(t.GPU.Library)
	}
	return s
}

func probeSection(t *trace.Trace) section {
	s := section{title: "Probes not attached", head: []string{"PROBE", "ERROR", "LOSES"}}
	for _, p := range missingProbes(t) {
		s.rows = append(s.rows, []string{p.Name, p.Error, p.Loses})
	}
	switch {
	case len(t.Host.Probes) == 0:
		s.note = "the trace does not say which probes were attached"
	case len(s.rows) == 0:
		s.note = fmt.Sprintf("all %d probes attached", len(t.Host.Probes))
	}
	return s
}

// deviceNames lists the accelerator devices a trace opened or issued ioctls on, in order of
// appearance.
func deviceNames(g trace.GPU) []string {
	var devices []string
	for _, o := range g.Opens {
		if !slices.Contains(devices, o.Path) {
			devices = append(devices, o.Path)
		}
	}
	for _, x := range g.Ioctls {
		if !slices.Contains(devices, x.Device) {
			devices = append(devices, x.Device)
		}
	}
	return devices
}
