package report

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"slices"

	"github.com/coldtrace/coldtrace/internal/units"
	"github.com/coldtrace/coldtrace/trace"
)

// chromeEvent is one event of the Chrome trace-event format, as Perfetto reads it.
type chromeEvent struct {
	Name string         `json:"name"`
	Cat  string         `json:"cat,omitempty"`
	Ph   string         `json:"ph"`
	Ts   float64        `json:"ts"`            // microseconds
	Dur  *float64       `json:"dur,omitempty"` // set on every "X" event, zero included
	Pid  int            `json:"pid"`
	Tid  int            `json:"tid"`
	S    string         `json:"s,omitempty"` // scope of instant events
	Args map[string]any `json:"args,omitempty"`
}

// The Chrome "processes" that group the tracks.
const (
	pidPhases = 1 + iota
	pidFiles
	pidNetwork
	pidGPU
)

// tidCritical is the critical path's track in the phases process, after the phase tracks.
const tidCritical = 100

// Chrome writes t as Chrome trace-event JSON, which opens in Perfetto and chrome://tracing.
func Chrome(w io.Writer, t *trace.Trace) error {
	var ev []chromeEvent
	us := func(d trace.Duration) float64 { return float64(d) / 1e3 }
	meta := func(name string, pid, tid int, value string) {
		ev = append(ev, chromeEvent{Name: name, Ph: "M", Pid: pid, Tid: tid, Args: map[string]any{"name": value}})
	}
	span := func(name, cat string, pid, tid int, start, end trace.Duration, args map[string]any) {
		d := us(max(end-start, 0))
		ev = append(ev, chromeEvent{Name: name, Cat: cat, Ph: "X", Ts: us(start), Dur: &d, Pid: pid, Tid: tid, Args: args})
	}

	meta("process_name", pidPhases, 0, "phases")
	for i, p := range phases(t) {
		tid := i + 1 // tids in phase order keep the tracks in phase order
		meta("thread_name", pidPhases, tid, string(p.Name))
		span(string(p.Name), "phase", pidPhases, tid, p.Start, p.End, map[string]any{
			"busy_ms": ms(p.Busy), "critical_ms": ms(p.Critical), "bytes": p.Bytes,
		})
		// Activity intervals, clamped to the span, nest under it on the same track.
		for _, a := range p.Activity {
			span("active", "activity", pidPhases, tid, max(a.Start, p.Start), min(a.End, p.End), nil)
		}
	}
	if len(t.Critical) > 0 {
		meta("thread_name", pidPhases, tidCritical, "critical path")
		for _, s := range t.Critical {
			span(string(s.Phase), "critical", pidPhases, tidCritical, s.Start, s.End, nil)
		}
	}

	if len(t.Files) > 0 {
		meta("process_name", pidFiles, 0, "files")
	}
	fileTid := 0
	for _, f := range t.Files {
		spans := make([][2]trace.Duration, len(f.Ranges))
		for i, r := range f.Ranges {
			spans[i] = [2]trace.Duration{r.First, r.Last}
		}
		row, rows := packRows(spans)
		for r := range rows {
			meta("thread_name", pidFiles, fileTid+1+r, trackName(f.Path, r))
		}
		for i, r := range f.Ranges {
			span(fmt.Sprintf("%s %s", r.Via, units.Bytes(r.Len)), "file", pidFiles, fileTid+1+row[i], r.First, r.Last, map[string]any{
				"path": f.Path, "off": r.Off, "len": r.Len,
			})
		}
		fileTid += rows
	}

	if len(t.Conns) > 0 {
		meta("process_name", pidNetwork, 0, "network")
	}
	for i, c := range t.Conns {
		tid := i + 1
		meta("thread_name", pidNetwork, tid, fmt.Sprintf("%s %s", c.Role, c.Remote))
		span(c.Remote, "conn", pidNetwork, tid, c.Open, connEnd(t, c), map[string]any{
			"pid": c.PID, "local": c.Local, "dir": c.Dir, "bytes_recv": c.BytesRecv, "bytes_sent": c.BytesSent,
		})
		// Counter names are global per process, so each connection gets its own.
		name := fmt.Sprintf("bytes #%d %s", tid, c.Remote)
		for _, s := range c.Samples {
			ev = append(ev, chromeEvent{Name: name, Ph: "C", Ts: us(s.At), Pid: pidNetwork, Tid: tid,
				Args: map[string]any{"recv": s.Recv, "sent": s.Sent}})
		}
	}

	g := t.GPU
	if len(g.Calls)+len(g.Ioctls)+len(g.Opens) > 0 {
		meta("process_name", pidGPU, 0, "gpu")
	}
	threads := map[int]bool{}
	for _, c := range g.Calls {
		if !threads[c.TID] {
			threads[c.TID] = true
			meta("thread_name", pidGPU, c.TID, fmt.Sprintf("driver calls (pid %d tid %d)", c.PID, c.TID))
		}
		span(c.Name, "gpu", pidGPU, c.TID, c.Start, c.End, map[string]any{"pid": c.PID, "ret": c.Return})
	}
	// Device opens and ioctl aggregates go on tracks per device, numbered from the kernel's
	// PID_MAX_LIMIT up so that they cannot collide with the driver calls' real tids.
	devices := deviceNames(g)
	devTid := 1 << 22
	for _, dev := range devices {
		var ioctls []trace.IoctlStat
		var spans [][2]trace.Duration
		for _, x := range g.Ioctls {
			if x.Device == dev {
				ioctls = append(ioctls, x)
				spans = append(spans, [2]trace.Duration{x.First, x.Last})
			}
		}
		row, rows := packRows(spans)
		for r := range max(rows, 1) {
			meta("thread_name", pidGPU, devTid+r, trackName(dev, r))
		}
		for _, o := range g.Opens {
			if o.Path == dev {
				ev = append(ev, chromeEvent{Name: "open " + path.Base(o.Path), Cat: "gpu", Ph: "i", S: "t",
					Ts: us(o.At), Pid: pidGPU, Tid: devTid, Args: map[string]any{"pid": o.PID}})
			}
		}
		for i, x := range ioctls {
			span(fmt.Sprintf("ioctl 0x%08x", x.Request), "gpu", pidGPU, devTid+row[i], x.First, x.Last, map[string]any{
				"count": x.Count, "total_ms": ms(x.Total), "note": "first to last call; total_ms is the time inside them",
			})
		}
		devTid += max(rows, 1)
	}

	if t.Ready != nil {
		ev = append(ev, chromeEvent{Name: "ready", Cat: "ready", Ph: "i", S: "g", Ts: us(t.Ready.At), Pid: pidPhases,
			Args: map[string]any{"kind": t.Ready.Kind, "addr": t.Ready.Addr, "pid": t.Ready.PID}})
	}

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	if err := enc.Encode(struct {
		TraceEvents     []chromeEvent     `json:"traceEvents"`
		DisplayTimeUnit string            `json:"displayTimeUnit"`
		OtherData       map[string]string `json:"otherData"`
	}{ev, "ms", map[string]string{"workload": workloadName(t), "outcome": string(t.Outcome), "total": fmtDur(t.Duration), "trace_id": t.ID}}); err != nil {
		return err
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// packRows gives each interval a row so that the intervals of a row do not overlap:
// complete events on one Chrome track must nest, and Perfetto drops those that only
// partly overlap. It returns each interval's row and the number of rows.
func packRows(spans [][2]trace.Duration) ([]int, int) {
	order := make([]int, len(spans))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(spans[a][0], spans[b][0]) })
	row := make([]int, len(spans))
	var ends []trace.Duration // the end of the last interval of each row
	for _, i := range order {
		start, end := spans[i][0], max(spans[i][1], spans[i][0])
		r := slices.IndexFunc(ends, func(e trace.Duration) bool { return e <= start })
		if r < 0 {
			r = len(ends)
			ends = append(ends, end)
		}
		ends[r] = end
		row[i] = r
	}
	return row, len(ends)
}

// trackName names the r-th row of a thing's tracks.
func trackName(name string, r int) string {
	if r == 0 {
		return name
	}
	return fmt.Sprintf("%s (%d)", name, r+1)
}

// ms is a duration in milliseconds, for args people read in Perfetto's details pane.
func ms(d trace.Duration) float64 { return float64(d) / 1e6 }
