package advisor

import (
	"math/rand/v2"
	"slices"

	"gonum.org/v1/gonum/stat"
)

// Estimate is a statistic of a sample with its bootstrap 95% confidence interval.
type Estimate struct {
	Value float64 `json:"value"`
	Lo    float64 `json:"lo"`
	Hi    float64 `json:"hi"`
}

// Summary is the distribution of one quantity across runs, in seconds.
type Summary struct {
	N      int      `json:"n"`
	Median Estimate `json:"median"`
	P90    Estimate `json:"p90"`
	P99    Estimate `json:"p99"`
}

// bootstrap draws resamples of the data with a generator seeded from seed, so that the
// same traces always give the same intervals.
type bootstrap struct {
	resamples int
	seed      uint64
}

// quantile is the empirical p-quantile of x (not modified), except that the median of an
// even number of values is the midpoint of the two middle ones: with the lower one, the
// medians of a scenario's predicted start and of its saving could come from different runs
// and not add up to the median start.
func quantile(p float64, x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	s := slices.Clone(x)
	slices.Sort(s)
	if n := len(s); p == 0.5 && n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return stat.Quantile(p, stat.Empirical, s, nil)
}

func median(x []float64) float64 { return quantile(0.5, x) }

// estimate computes the p-quantile of x with a percentile bootstrap interval.
func (b bootstrap) estimate(p float64, x []float64) Estimate {
	v := quantile(p, x)
	if len(x) < 2 {
		return Estimate{v, v, v}
	}
	r := rand.New(rand.NewPCG(b.seed, uint64(len(x))))
	stats := make([]float64, b.resamples)
	sample := make([]float64, len(x))
	for i := range stats {
		for j := range sample {
			sample[j] = x[r.IntN(len(x))]
		}
		slices.Sort(sample)
		stats[i] = stat.Quantile(p, stat.Empirical, sample, nil)
	}
	slices.Sort(stats)
	return Estimate{
		Value: v,
		Lo:    stat.Quantile(0.025, stat.Empirical, stats, nil),
		Hi:    stat.Quantile(0.975, stat.Empirical, stats, nil),
	}
}

func (b bootstrap) summary(x []float64) Summary {
	return Summary{N: len(x), Median: b.estimate(0.5, x), P90: b.estimate(0.9, x), P99: b.estimate(0.99, x)}
}
