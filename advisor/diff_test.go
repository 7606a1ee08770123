package advisor

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/coldtrace/coldtrace/trace"
)

// noisyRuns generates n runs with ±4% noise per phase; slower scales one phase.
func noisyRuns(t *testing.T, rng *rand.Rand, n int, slower trace.PhaseName, factor float64) []*trace.Trace {
	base := []step{{trace.PhasePull, 20, 0}, {trace.PhaseInit, 10, 0}, {trace.PhaseLoad, 20, 0}, {trace.PhaseGPU, 5, 0}, {trace.PhaseCompute, 3, 0}}
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

func TestDiffFlagsOnlyThePlantedRegression(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		old := noisyRuns(t, rng, 8, "", 1)
		new := noisyRuns(t, rng, 8, trace.PhaseLoad, 1.3)
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
		same, err := Diff(old, noisyRuns(t, rng, 8, "", 1), DiffOptions{})
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
	// Exact one-sided p for complete separation of 5 and 5 is 1/252 ≈ 0.004; the
	// continuity-corrected approximation is a little more cautious.
	if p := mannWhitneyGreater(x, y); p < 0.004 || p > 0.01 {
		t.Errorf("separated: p = %v", p)
	}
	if p := mannWhitneyGreater(y, x); p < 0.99 {
		t.Errorf("reversed: p = %v", p)
	}
	if p := mannWhitneyGreater([]float64{1, 1}, []float64{1, 1}); p != 1 {
		t.Errorf("all tied: p = %v", p)
	}
}
