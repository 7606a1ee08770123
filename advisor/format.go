package advisor

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

// Format writes the advice for a terminal: time to ready, the phases, their gap to the
// host's limits, contention (pull and model download; other pulls on the node), the
// what-if scenarios, and the ranked recommendations.
func (a *Advice) Format(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("coldtrace advice for %s (%d runs)\n", a.Workload, a.Runs)
	ew.printf("time to ready: median %s, p90 %s, p99 %s\n\n", est(a.TimeToReady.Median), est(a.TimeToReady.P90), est(a.TimeToReady.P99))

	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PHASE\tSPAN MEDIAN [95% CI]\tP90\tP99\tCRITICAL MEDIAN [95% CI]\tP90\tP99")
	for _, p := range a.Phases {
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%.2f\t%s\t%.2f\t%.2f\n", p.Phase, est(p.Span.Median), p.Span.P90.Value, p.Span.P99.Value,
			est(p.Critical.Median), p.Critical.P90.Value, p.Critical.P99.Value)
	}
	tw.Flush()

	if len(a.SpeedOfLight) > 0 {
		l := a.Limits
		ew.printf("\nspeed of light (link %s/s %s, disk %s/s %s and %.2f ms a cold file (%s), page cache %s/s):\n", bytesStr(l.Link), rateRange(l.LinkFrom, l.LinkRange),
			bytesStr(l.Disk), rateRange(l.DiskFrom, l.DiskRange), 1e3*l.DiskLatency, l.LatencyFrom, bytesStr(l.PageCache))
		tw = tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PHASE\tBYTES\tTHROUGHPUT\tBOUND BY\tBUSY\tAT THE LIMIT\tEFFICIENCY")
		for _, g := range a.SpeedOfLight {
			fmt.Fprintf(tw, "%s\t%s\t%s/s\t%s\t%.2f s\t%.2f s\t%.0f%%\n", g.Phase, bytesStr(g.Bytes), bytesStr(g.Throughput), g.Limit, g.Busy, g.Ideal, 100*g.Efficiency)
		}
		tw.Flush()
	}
	for _, c := range a.Contention {
		ew.printf("\ncontention: %s and %s shared the link for %s, the download getting %.0f%% of it; removing the pull gains %s\n",
			c.Phases[0], c.Phases[1], est(c.Overlap), 100*c.FetchShare, est(c.Gain))
	}

	for _, c := range a.PullContention {
		ew.printf("\npull contention: other pulls downloaded during the pull in %d of %d runs, overlapping it by %s; the pull had %.0f%% of the link then; alone it gains %s\n",
			c.Runs, a.Runs, est(c.Overlap), 100*c.Share, est(c.Gain))
		for _, o := range c.Others {
			ew.printf("  %s (namespace %s): %s over %.2f s, in %d runs (medians)\n", o.name(), o.Namespace, bytesStr(o.Bytes), o.Overlap, o.Runs)
		}
	}

	ew.printf("\nwhat if (predicted cold start, with the interval of the runs and the disk rate):\n")
	tw = tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	for _, s := range a.WhatIf {
		fmt.Fprintf(tw, "  %s\t%s\tsaves %s\n", s.Name, est(s.Predicted), est(s.Saved))
	}
	tw.Flush()

	ew.printf("\nrecommendations:\n")
	for i, r := range a.Recommendations {
		if r.Saved.Value > 0 {
			ew.printf("%2d. %s: saves %s\n", i+1, r.Title, est(r.Saved))
		} else {
			ew.printf("%2d. %s\n", i+1, r.Title)
		}
		for _, e := range r.Evidence {
			ew.printf("    evidence: %s\n", e)
		}
		ew.printf("    action:   %s\n", r.Action)
	}
	if len(a.Warnings) > 0 {
		ew.printf("\nwarnings:\n")
		for _, s := range a.Warnings {
			ew.printf("  - %s\n", s)
		}
	}
	return ew.err
}

// WriteJSON writes the advice as indented JSON.
func (a *Advice) WriteJSON(w io.Writer) error { return writeJSON(w, a) }

// Format writes the comparison as a table, regressions marked.
func (d *DiffReport) Format(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("coldtrace diff: %d old runs, %d new runs, alpha %.3g\n\n", d.Old, d.New, d.Alpha)
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PHASE\tOLD MEDIAN\tNEW MEDIAN\tCHANGE\tP\t")
	for _, c := range append(d.Phases, d.TimeToReady) {
		mark := ""
		switch {
		case c.Regression:
			mark = "REGRESSION"
		case c.Large:
			mark = "LARGE REGRESSION"
		}
		fmt.Fprintf(tw, "%s\t%.2f s\t%.2f s\t%+.1f%%\t%.4f\t%s\n", c.Name, c.OldMedian, c.NewMedian, 100*c.Change, c.P, mark)
	}
	tw.Flush()
	switch d.Verdict {
	case VerdictRegression:
		ew.printf("\nsignificant regression\n")
	case VerdictNone:
		ew.printf("\nno significant regression\n")
	default:
		ew.printf("\n%s: %s\n", d.Verdict, d.Reason)
	}
	return ew.err
}

// WriteJSON writes the comparison as indented JSON.
func (d *DiffReport) WriteJSON(w io.Writer) error { return writeJSON(w, d) }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func est(e Estimate) string {
	return fmt.Sprintf("%.2f s [%.2f, %.2f]", e.Value, e.Lo, e.Hi)
}

// errWriter keeps the first write error so that a long report checks it once.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, args ...any) { fmt.Fprintf(e, format, args...) }

// rateRange says where a limit came from and, where it is uncertain, its range.
func rateRange(from string, r [2]float64) string {
	if r[0] == r[1] {
		return "(" + from + ")"
	}
	return fmt.Sprintf("(%s, %s-%s/s)", from, bytesStr(r[0]), bytesStr(r[1]))
}
