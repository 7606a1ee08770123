package advisor

import (
	"fmt"
	"math"
	"slices"
	"strings"

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
	// LargeFactor (default 2) judges a comparison that the test cannot: one in which every
	// new run took at least LargeFactor times as long as every old run (and MinSeconds
	// more), with at least LargeMinRuns runs a side, is a large regression.
	LargeFactor float64
	// Force accepts traces of different workloads within one side.
	Force bool
}

// LargeMinRuns is the fewest runs a side for a large regression: with 3 and 3, all new
// runs above all old ones happens by chance once in 20 (1/C(6,3)) even before the factor
// is asked for; with 2 and 2, once in 6.
const LargeMinRuns = 3

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
	if o.LargeFactor <= 1 {
		o.LargeFactor = 2
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
	// Large: every new run took at least DiffOptions.LargeFactor times as long as every old
	// run, a verdict that does not need the test.
	Large bool `json:"large_regression"`
}

// Verdict is a diff's conclusion.
type Verdict string

const (
	// VerdictRegression: a comparison regressed significantly.
	VerdictRegression Verdict = "regression"
	// VerdictLarge: too few runs for the test, or no significance, but a comparison grew
	// by a large factor in every run (Comparison.Large).
	VerdictLarge Verdict = "large regression"
	// VerdictInconclusive: with so few runs, no difference can be significant
	// (DiffReport.MinP is not below DiffReport.Level), and none is large.
	VerdictInconclusive Verdict = "inconclusive"
	// VerdictNone: the test could have found a regression and found none.
	VerdictNone Verdict = "no regression"
)

// DiffReport compares two sets of traces phase by phase (critical-path time) and in
// time to ready.
type DiffReport struct {
	Old   int     `json:"old_runs"`
	New   int     `json:"new_runs"`
	Alpha float64 `json:"alpha"`
	// Level is the p-value below which one comparison is significant (Alpha over the
	// number of comparisons); MinP the smallest p-value the test can give with Old and New
	// runs, reached when every new run is slower than every old one.
	Level float64 `json:"level"`
	MinP  float64 `json:"min_p"`
	// Verdict concludes, and Reason says why when the verdict is not the test's own.
	Verdict     Verdict      `json:"verdict"`
	Reason      string       `json:"reason,omitempty"`
	TimeToReady Comparison   `json:"time_to_ready"`
	Phases      []Comparison `json:"phases"`
}

// Regressed reports whether anything regressed, significantly or largely: the CI gate.
func (d *DiffReport) Regressed() bool {
	return d.Verdict == VerdictRegression || d.Verdict == VerdictLarge
}

// conclude sets the verdict from the comparisons: a significant regression first, then a
// large one, then whether the test could have found anything at all.
func (d *DiffReport) conclude(opt DiffOptions) {
	all := append([]Comparison{d.TimeToReady}, d.Phases...)
	var large []string
	d.Verdict = VerdictNone
	for _, c := range all {
		if c.Regression {
			d.Verdict = VerdictRegression
		}
		if c.Large {
			large = append(large, c.Name)
		}
	}
	few := ""
	if d.MinP >= d.Level {
		few = fmt.Sprintf("with %d old and %d new runs the smallest p-value the test can give is %.3g, not below the level %.3g at which each of the %d comparisons is tested (alpha %.3g, Bonferroni): no difference can be significant; give at least %d runs a side",
			d.Old, d.New, d.MinP, d.Level, len(all), d.Alpha, runsForLevel(d.Level))
	}
	switch {
	case d.Verdict == VerdictRegression:
	case len(large) > 0:
		d.Verdict = VerdictLarge
		d.Reason = fmt.Sprintf("every new run took at least %.3gx as long as every old run in %s", opt.LargeFactor, strings.Join(large, ", "))
		if few != "" {
			d.Reason += "; the test itself cannot decide: " + few
		}
	case few != "":
		d.Verdict, d.Reason = VerdictInconclusive, few
	}
}

// minP is the smallest one-sided p-value of the test with m new and n old values: all the
// new ones above all the old ones.
func minP(m, n int) float64 {
	x, y := make([]float64, m), make([]float64, n)
	for i := range y {
		y[i] = float64(i)
	}
	for i := range x {
		x[i] = float64(n + i)
	}
	return mannWhitneyGreater(x, y)
}

// runsForLevel is the fewest runs a side with which the test can go below level (at most
// 100, for an absurd alpha).
func runsForLevel(level float64) int {
	n := 2
	for n < 100 && minP(n, n) >= level {
		n++
	}
	return n
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
	d := &DiffReport{Old: len(before), New: len(after), Alpha: opt.Alpha, Level: level, MinP: minP(len(after), len(before))}
	ready := func(r run) float64 { return r.ready() }
	d.TimeToReady = compare("time to ready", values(oldRuns, ready), values(newRuns, ready), level, opt)
	for _, p := range phases {
		crit := func(r run) float64 { return r.critical[p] }
		d.Phases = append(d.Phases, compare(string(p), values(oldRuns, crit), values(newRuns, crit), level, opt))
	}
	d.conclude(opt)
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
	// Large: the fastest new run against the slowest old one.
	if len(before) >= LargeMinRuns && len(after) >= LargeMinRuns {
		fastNew, slowOld := slices.Min(after), slices.Max(before)
		c.Large = fastNew >= opt.LargeFactor*slowOld && fastNew-slowOld >= opt.MinSeconds
	}
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
