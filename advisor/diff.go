package advisor

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/stat/distuv"

	"github.com/coldtrace/coldtrace/trace"
)

// DiffOptions steer Diff. Zero fields take the defaults.
type DiffOptions struct {
	// Alpha is the family-wise significance level over all the comparisons of a report
	// (Bonferroni: each of k comparisons is tested at Alpha/k). Default 0.05.
	Alpha float64
	// A regression must also matter: the median must grow by at least MinChange (relative,
	// default 0.10) and MinSeconds (default 0.05 s), so that CI does not fail on noise
	// that is real but irrelevant.
	MinChange  float64
	MinSeconds float64
	// Force accepts traces of different workloads within one side.
	Force bool
}

func (o DiffOptions) withDefaults() DiffOptions {
	if o.Alpha <= 0 {
		o.Alpha = 0.05
	}
	if o.MinChange <= 0 {
		o.MinChange = 0.10
	}
	if o.MinSeconds <= 0 {
		o.MinSeconds = 0.05
	}
	return o
}

// Comparison is one quantity compared between the old and the new traces.
type Comparison struct {
	// Name is a phase, or "time to ready".
	Name      string  `json:"name"`
	OldMedian float64 `json:"old_median_s"`
	NewMedian float64 `json:"new_median_s"`
	// Change is the relative change of the median, (new-old)/old; 0 when old is 0.
	Change float64 `json:"change"`
	// P is the one-sided Mann-Whitney U p-value of "new is slower".
	P          float64 `json:"p"`
	Regression bool    `json:"regression"`
}

// DiffReport compares two sets of traces phase by phase (critical-path time) and in
// time to ready.
type DiffReport struct {
	Old         int          `json:"old_runs"`
	New         int          `json:"new_runs"`
	Alpha       float64      `json:"alpha"`
	TimeToReady Comparison   `json:"time_to_ready"`
	Phases      []Comparison `json:"phases"`
}

// Regressed reports whether anything regressed significantly: the CI gate.
func (d *DiffReport) Regressed() bool {
	if d.TimeToReady.Regression {
		return true
	}
	for _, c := range d.Phases {
		if c.Regression {
			return true
		}
	}
	return false
}

// Diff compares the traces before a change with those after it (for example two
// versions of an image). Each side must be of one workload unless Force; the two sides
// may differ.
func Diff(before, after []*trace.Trace, opt DiffOptions) (*DiffReport, error) {
	opt = opt.withDefaults()
	if err := CheckWorkloads(before, opt.Force); err != nil {
		return nil, fmt.Errorf("old traces: %w", err)
	}
	if err := CheckWorkloads(after, opt.Force); err != nil {
		return nil, fmt.Errorf("new traces: %w", err)
	}
	oldRuns, newRuns := runsOf(before), runsOf(after)
	var phases []trace.PhaseName
	for _, p := range trace.Phases {
		if hasPhase(before, p) || hasPhase(after, p) {
			phases = append(phases, p)
		}
	}
	// Bonferroni over the phases and the time to ready.
	level := opt.Alpha / float64(len(phases)+1)
	d := &DiffReport{Old: len(before), New: len(after), Alpha: opt.Alpha}
	ready := func(r run) float64 { return r.ready() }
	d.TimeToReady = compare("time to ready", values(oldRuns, ready), values(newRuns, ready), level, opt)
	for _, p := range phases {
		crit := func(r run) float64 { return r.critical[p] }
		d.Phases = append(d.Phases, compare(string(p), values(oldRuns, crit), values(newRuns, crit), level, opt))
	}
	return d, nil
}

func compare(name string, before, after []float64, level float64, opt DiffOptions) Comparison {
	c := Comparison{Name: name, OldMedian: median(before), NewMedian: median(after), P: mannWhitneyGreater(after, before)}
	grow := c.NewMedian - c.OldMedian
	if c.OldMedian > 0 {
		c.Change = grow / c.OldMedian
	}
	// A phase that was absent (old median 0) and now takes time has grown without bound.
	relative := c.OldMedian == 0 || c.Change >= opt.MinChange
	c.Regression = c.P < level && relative && grow >= opt.MinSeconds
	return c
}

// mannWhitneyGreater is the one-sided p-value of the Mann-Whitney U test that values of
// x tend to be larger than those of y: exact for samples of up to exactMax values a side
// without ties (CI's usual handful of runs), by the normal approximation with continuity
// and tie corrections otherwise.
func mannWhitneyGreater(x, y []float64) float64 {
	n1, n2 := float64(len(x)), float64(len(y))
	if n1 == 0 || n2 == 0 {
		return 1
	}
	var u float64
	for _, a := range x {
		for _, b := range y {
			switch {
			case a > b:
				u++
			case a == b:
				u += 0.5
			}
		}
	}
	counts := map[float64]float64{}
	for _, v := range append(append([]float64{}, x...), y...) {
		counts[v]++
	}
	var ties float64
	for _, t := range counts {
		ties += t*t*t - t
	}
	if ties == 0 && len(x) <= exactMax && len(y) <= exactMax {
		return exactUpperTail(int(u), len(x), len(y))
	}
	n := n1 + n2
	variance := n1 * n2 / 12 * ((n + 1) - ties/(n*(n-1)))
	if variance <= 0 {
		return 1
	}
	z := (u - n1*n2/2 - 0.5) / math.Sqrt(variance)
	return distuv.UnitNormal.Survival(z)
}

const exactMax = 20

// exactUpperTail is P(U >= u) for samples of m and n values without ties when both come
// from one distribution. f[i][j][k] counts the orderings of i x's and j y's with k pairs
// x > y: the largest value is either an x (above all j y's) or a y.
func exactUpperTail(u, m, n int) float64 {
	f := make([][][]float64, m+1)
	for i := range f {
		f[i] = make([][]float64, n+1)
		for j := range f[i] {
			f[i][j] = make([]float64, i*j+1)
			if i == 0 || j == 0 {
				f[i][j][0] = 1
				continue
			}
			for k := range f[i][j] {
				if k >= j && k-j < len(f[i-1][j]) {
					f[i][j][k] += f[i-1][j][k-j]
				}
				if k < len(f[i][j-1]) {
					f[i][j][k] += f[i][j-1][k]
				}
			}
		}
	}
	var tail, total float64
	for k, c := range f[m][n] {
		total += c
		if k >= u {
			tail += c
		}
	}
	return tail / total
}

func runsOf(traces []*trace.Trace) []run {
	out := make([]run, len(traces))
	for i, t := range traces {
		out[i] = newRun(t, Limits{})
	}
	return out
}

func values(runs []run, f func(run) float64) []float64 {
	out := make([]float64, len(runs))
	for i, r := range runs {
		out[i] = f(r)
	}
	return out
}

func hasPhase(traces []*trace.Trace, p trace.PhaseName) bool {
	for _, t := range traces {
		if _, ok := t.Phase(p); ok {
			return true
		}
	}
	return false
}
