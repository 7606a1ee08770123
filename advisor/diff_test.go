package advisor

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/coldtrace/coldtrace/trace"
)

// noisyRuns generates n runs with ±4% noise per phase; slower scales one phase.
func noisyRuns(t *testing.T, rng *rand.Rand, n int, slower trace.PhaseName, factor float64) []*trace.Trace {
	base := []step{{trace.PhasePull, 20, 0}, {trace.PhaseUnpack, 4, 0}, {trace.PhaseCreate, 0.5, 0}, {trace.PhaseInit, 10, 0},
		{trace.PhaseFetch, 15, 0}, {trace.PhaseLoad, 20, 0}, {trace.PhaseGPU, 5, 0}, {trace.PhaseCompute, 3, 0}}
	var out []*trace.Trace
	for range n {
		var steps []step
		for _, s := range base {
			s.secs *= 1 + 0.04*(2*rng.Float64()-1)
			if s.phase == slower {
				s.secs *= factor
			}
			steps = append(steps, s)
		}
		out = append(out, genTrace(t, "d", steps...))
	}
	return out
}

// TestDiffFlagsOnlyThePlantedRegression plants a 30% regression of the load phase in
// the new traces, 5 runs a side with all eight phases: load and nothing else is flagged.
func TestDiffFlagsOnlyThePlantedRegression(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		old := noisyRuns(t, rng, 5, "", 1)
		new := noisyRuns(t, rng, 5, trace.PhaseLoad, 1.3)
		d, err := Diff(old, new, DiffOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range d.Phases {
			if want := c.Name == string(trace.PhaseLoad); c.Regression != want {
				t.Fatalf("seed %d: %s regression=%v (change %.2f, p %.4f), want %v", seed, c.Name, c.Regression, c.Change, c.P, want)
			}
		}
		if !d.Regressed() {
			t.Fatalf("seed %d: the regression does not fail the gate", seed)
		}
		// Same distribution on both sides: nothing may be flagged.
		same, err := Diff(old, noisyRuns(t, rng, 5, "", 1), DiffOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if same.Regressed() {
			t.Fatalf("seed %d: regression flagged between identical distributions: %+v", seed, same)
		}
	}
}

func TestDiffSidesMayDifferButNotWithin(t *testing.T) {
	a := genTrace(t, "a", step{trace.PhaseInit, 1, 0})
	b := genTrace(t, "b", step{trace.PhaseInit, 1, 0})
	b.Workload.ImageDigest = testLayer // another image version
	if _, err := Diff([]*trace.Trace{a}, []*trace.Trace{b}, DiffOptions{}); err != nil {
		t.Fatalf("two versions refused: %v", err)
	}
	_, err := Diff([]*trace.Trace{a, b}, []*trace.Trace{b}, DiffOptions{})
	if err == nil || !strings.Contains(err.Error(), "old traces") {
		t.Fatalf("mixed old side: %v", err)
	}
}

func TestMannWhitney(t *testing.T) {
	x := []float64{6, 7, 8, 9, 10}
	y := []float64{1, 2, 3, 4, 5}
	// Complete separation of 5 and 5: one ordering in C(10, 5) = 252.
	if p := mannWhitneyGreater(x, y); !near(p, 1.0/252, 1e-12) {
		t.Errorf("separated: p = %v", p)
	}
	if p := mannWhitneyGreater(y, x); p != 1 {
		t.Errorf("reversed: p = %v", p)
	}
	// U = 24 of 25: the best and the next-best orderings, 2 of 252.
	if p := mannWhitneyGreater([]float64{4.5, 7, 8, 9, 10}, y); !near(p, 2.0/252, 1e-12) {
		t.Errorf("one swap: p = %v", p)
	}
	if p := mannWhitneyGreater([]float64{1, 1}, []float64{1, 1}); p != 1 {
		t.Errorf("all tied: p = %v", p)
	}
	// Large samples use the normal approximation, close to the exact tail.
	big := make([]float64, 30)
	small := make([]float64, 30)
	for i := range big {
		big[i], small[i] = float64(i)+10.5, float64(i)
	}
	if p := mannWhitneyGreater(big, small); p > 1e-3 {
		t.Errorf("large shifted samples: p = %v", p)
	}
}

// runsOfReady builds one trace per time to ready, a pull then an init phase of 1:4.
func runsOfReady(t *testing.T, secs ...float64) []*trace.Trace {
	var out []*trace.Trace
	for _, s := range secs {
		out = append(out, genTrace(t, "r", step{trace.PhasePull, s / 5, 0}, step{trace.PhaseInit, 4 * s / 5, 0}))
	}
	return out
}

// TestDiffFewRuns: with 3 runs a side no p-value can pass the level, so the diff is
// inconclusive and says why, unless the effect is large: the 16x (time to ready
// 0.36 s -> 5.70 s) is a large regression. With 2 runs a side, not even that.
func TestDiffFewRuns(t *testing.T) {
	warm := []float64{0.35, 0.36, 0.38}
	cases := []struct {
		name     string
		old, new []float64
		want     Verdict
		large    bool // time to ready, pull and init all large
	}{
		{"16x", warm, []float64{5.61, 5.70, 5.93}, VerdictLarge, true},
		{"every run 30% slower", warm, []float64{0.47, 0.48, 0.50}, VerdictInconclusive, false},
		{"overlapping", warm, []float64{0.34, 0.37, 0.39}, VerdictInconclusive, false},
		// One new run only 1.5x the slowest old: not every run is twice as slow.
		{"one run not twice", warm, []float64{0.57, 5.70, 5.93}, VerdictInconclusive, false},
		{"2 runs a side, 16x", warm[:2], []float64{5.61, 5.70}, VerdictInconclusive, false},
	}
	for _, c := range cases {
		d, err := Diff(runsOfReady(t, c.old...), runsOfReady(t, c.new...), DiffOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Verdict != c.want || d.Regressed() != (c.want == VerdictLarge) {
			t.Errorf("%s: verdict %q (regressed %v), want %q: %s", c.name, d.Verdict, d.Regressed(), c.want, d.Reason)
		}
		// 3 comparisons (pull, init, time to ready) at 0.05/3; C(6,3) = 20 orderings, and
		// 4 a side would do: C(8,4) = 70.
		if len(c.old) == 3 && (!near(d.MinP, 0.05, 1e-12) || !near(d.Level, 0.05/3, 1e-12)) {
			t.Errorf("%s: min p %v, level %v; want 0.05 and %v", c.name, d.MinP, d.Level, 0.05/3)
		}
		if d.Verdict != VerdictNone && !strings.Contains(d.Reason, "no difference can be significant; give at least 4 runs a side") {
			t.Errorf("%s: the reason does not say that the runs are too few: %q", c.name, d.Reason)
		}
		for _, cmp := range append(d.Phases, d.TimeToReady) {
			if cmp.Large != c.large || cmp.Regression {
				t.Errorf("%s: %s large %v, regression %v; want large %v", c.name, cmp.Name, cmp.Large, cmp.Regression, c.large)
			}
		}
		var text strings.Builder
		if err := d.Format(&text); err != nil {
			t.Fatal(err)
		}
		if want := "\n" + string(c.want) + ": "; !strings.Contains(text.String(), want) || strings.Contains(text.String(), "no significant regression") {
			t.Errorf("%s: the text does not conclude %q:\n%s", c.name, want, text.String())
		}
	}
}

// TestDiffEnoughRuns: with 5 runs a side the test decides, and a large effect is a
// significant regression, not a large one.
func TestDiffEnoughRuns(t *testing.T) {
	old := runsOfReady(t, 0.35, 0.36, 0.38, 0.36, 0.37)
	d, err := Diff(old, runsOfReady(t, 5.61, 5.70, 5.93, 5.8, 5.65), DiffOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Verdict != VerdictRegression || d.Reason != "" || d.MinP >= d.Level {
		t.Errorf("16x with 5 runs a side: verdict %q (%s), min p %v, level %v", d.Verdict, d.Reason, d.MinP, d.Level)
	}
	same, err := Diff(old, runsOfReady(t, 0.36, 0.35, 0.37, 0.38, 0.36), DiffOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if same.Verdict != VerdictNone || same.Reason != "" {
		t.Errorf("no change with 5 runs a side: verdict %q (%s)", same.Verdict, same.Reason)
	}
}
