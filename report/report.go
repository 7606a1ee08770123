// Package report renders a cold-start trace for people and tools: a terminal table, the
// trace as pretty JSON, an SVG waterfall, a self-contained HTML page, Chrome trace-event
// JSON for Perfetto, a pprof profile for flame graphs and OpenTelemetry spans in OTLP/JSON.
package report

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/coldtrace/coldtrace/export/otlp"
	"github.com/coldtrace/coldtrace/trace"
)

// Formats lists the formats Render accepts.
var Formats = []string{"table", "json", "svg", "html", "chrome", "pprof", "otlp-json"}

// Render writes t in the named format, one of Formats.
func Render(w io.Writer, t *trace.Trace, format string) error {
	if t == nil {
		return errors.New("report: no trace")
	}
	switch format {
	case "table":
		return Table(w, t, TableOptions{})
	case "json":
		return JSON(w, t)
	case "svg":
		return SVG(w, t)
	case "html":
		return HTML(w, t)
	case "chrome":
		return Chrome(w, t)
	case "pprof":
		return Pprof(w, t)
	case "otlp-json":
		return otlp.JSON(w, t)
	}
	return fmt.Errorf("report: unknown format %q (valid formats: %s)", format, strings.Join(Formats, ", "))
}

// pageSize converts cache-miss pages to bytes. The trace does not record the host's page
// size; 4 KiB is the page size of the x86-64 and most arm64 hosts coldtrace runs on.
const pageSize = 4096

// phases returns the trace's phases in the order of trace.Phases, whatever order the
// collector wrote them in.
func phases(t *trace.Trace) []trace.Phase {
	ps := slices.Clone(t.Phases)
	slices.SortStableFunc(ps, func(a, b trace.Phase) int {
		return cmp.Compare(slices.Index(trace.Phases, a.Name), slices.Index(trace.Phases, b.Name))
	})
	return ps
}

// shares returns each phase's critical-path share in tenths of a percent, rounded by largest
// remainder so that the shares add up to exactly 1000 (100.0%). It returns nil when no time
// is attributed.
func shares(ps []trace.Phase) []int {
	var total int64
	for _, p := range ps {
		total += int64(p.Critical)
	}
	if total <= 0 {
		return nil
	}
	out := make([]int, len(ps))
	rem := make([]int64, len(ps))
	left := 1000
	for i, p := range ps {
		scaled := int64(p.Critical) * 1000 // nanoseconds; fits int64 for traces under ~100 days
		out[i] = int(scaled / total)
		rem[i] = scaled % total
		left -= out[i]
	}
	order := make([]int, len(ps))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(rem[b], rem[a]) })
	for _, i := range order[:left] {
		out[i]++
	}
	return out
}

// fileBytes is what a file contributed to the cold start: bytes read plus bytes mapped in.
func fileBytes(f trace.File) int64 { return f.BytesRead + f.MappedBytes }

// firstAccess is when the workload first touched a file's contents, or opened it when it
// read nothing.
func firstAccess(f trace.File) trace.Duration {
	first := f.FirstOpen
	for i, r := range f.Ranges {
		if i == 0 || r.First < first {
			first = r.First
		}
	}
	return first
}

// topFilesByBytes returns the files that moved bytes, largest first.
func topFilesByBytes(t *trace.Trace) []trace.File {
	var fs []trace.File
	for _, f := range t.Files {
		if fileBytes(f) > 0 {
			fs = append(fs, f)
		}
	}
	slices.SortStableFunc(fs, func(a, b trace.File) int { return cmp.Compare(fileBytes(b), fileBytes(a)) })
	return fs
}

// topConns returns the connections, most bytes received first.
func topConns(t *trace.Trace) []trace.Conn {
	cs := slices.Clone(t.Conns)
	slices.SortStableFunc(cs, func(a, b trace.Conn) int {
		return cmp.Compare(b.BytesRecv+b.BytesSent, a.BytesRecv+a.BytesSent)
	})
	return cs
}

// connEnd is when a connection closed, or the end of the recording when it stayed open.
func connEnd(t *trace.Trace, c trace.Conn) trace.Duration {
	if c.Close > c.Open {
		return c.Close
	}
	return max(t.Duration, c.Open)
}

// workloadName is the human name of what was started.
func workloadName(t *trace.Trace) string {
	if t.Workload.Image != "" {
		return t.Workload.Image
	}
	if k := t.Workload.Key(); k != "" {
		return k
	}
	return "(unnamed workload)"
}

// readyText says when and how the workload became ready, or how the recording ended.
func readyText(t *trace.Trace) string {
	if t.Ready == nil {
		s := fmt.Sprintf("not ready (%s)", t.Outcome)
		if t.Error != "" {
			s += ": " + t.Error
		}
		return s
	}
	s := fmt.Sprintf("%s via %s", fmtDur(t.Ready.At), t.Ready.Kind)
	if t.Ready.Addr != "" {
		s += " on " + t.Ready.Addr
	}
	if t.Ready.PID != 0 {
		s += fmt.Sprintf(" (pid %d)", t.Ready.PID)
	}
	return s
}

// missingProbes are the probes that did not attach.
func missingProbes(t *trace.Trace) []trace.Probe {
	var out []trace.Probe
	for _, p := range t.Host.Probes {
		if !p.Attached {
			out = append(out, p)
		}
	}
	return out
}
