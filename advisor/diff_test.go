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
