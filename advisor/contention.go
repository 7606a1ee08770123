package advisor

import (
	"math"

	"github.com/coldtrace/coldtrace/trace"
)

// Contention is two network phases that shared the link at the same time: the image
// pull and the model download. Removing the pull (or giving the download priority)
// gives the download the whole link for the overlap.
type Contention struct {
	Phases []trace.PhaseName `json:"phases"`
	// Overlap is how long both were active, Gain the estimated critical-path time saved
	// by removing the pull from the overlap (seconds, across runs).
	Overlap Estimate `json:"overlap_s"`
	Gain    Estimate `json:"gain_s"`
	// FetchShare is the median share of the link the download had during the overlap.
	FetchShare float64 `json:"fetch_share"`
}

// contention returns the overlap of pull and fetch in seconds and the estimated gain.
// Over an overlap T, the download got a share s of the link (estimated from the two
// phases' own throughputs); alone it would have moved the same bytes in s·T, so it
// finishes (1-s)·T earlier, at most its critical share.
func (r run) contention() (overlap, share, gain float64) {
	pull, ok1 := r.t.Phase(trace.PhasePull)
	fetch, ok2 := r.t.Phase(trace.PhaseFetch)
	if !ok1 || !ok2 {
		return 0, 0, 0
	}
	overlap = secs(intersect(activity(pull), activity(fetch)))
	if overlap == 0 {
		return 0, 0, 0
	}
	share = 0.5
	pullBusy, pullBytes := r.busy(trace.PhasePull)
	fetchBusy, fetchBytes := r.busy(trace.PhaseFetch)
	if pullBusy > 0 && fetchBusy > 0 && pullBytes+fetchBytes > 0 {
		pr, fr := float64(pullBytes)/pullBusy, float64(fetchBytes)/fetchBusy
		share = fr / (pr + fr)
	}
	return overlap, share, math.Min(r.critical[trace.PhaseFetch], (1-share)*overlap)
}

// activity is a phase's activity intervals, or its span when none are recorded.
func activity(p trace.Phase) []trace.Interval {
	if len(p.Activity) > 0 {
		return p.Activity
	}
	return []trace.Interval{{Start: p.Start, End: p.End}}
}

// intersect is the total length of the intersection of two sorted, disjoint interval lists.
func intersect(a, b []trace.Interval) trace.Duration {
	var sum trace.Duration
	for i, j := 0, 0; i < len(a) && j < len(b); {
		lo, hi := max(a[i].Start, b[j].Start), min(a[i].End, b[j].End)
		if hi > lo {
			sum += hi - lo
		}
		if a[i].End < b[j].End {
			i++
		} else {
			j++
		}
	}
	return sum
}

func contentions(runs []run, b bootstrap) []Contention {
	var overlaps, shares, gains []float64
	for _, r := range runs {
		o, s, g := r.contention()
		overlaps, shares, gains = append(overlaps, o), append(shares, s), append(gains, g)
	}
	if median(overlaps) == 0 {
		return nil
	}
	return []Contention{{
		Phases:     []trace.PhaseName{trace.PhasePull, trace.PhaseFetch},
		Overlap:    b.estimate(0.5, overlaps),
		Gain:       b.estimate(0.5, gains),
		FetchShare: median(shares),
	}}
}
