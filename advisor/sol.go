package advisor

import "github.com/coldtrace/coldtrace/trace"

// Gap is a phase's speed-of-light gap: how long it was busy against how long moving its
// bytes would take at the host's limit (medians across runs).
type Gap struct {
	Phase trace.PhaseName `json:"phase"`
	// Limit names the resource the phase is bound by: "link", "disk", or
	// "disk+page-cache" (missed pages at disk speed, the rest at page-cache speed).
	Limit      string  `json:"limit"`
	Bytes      float64 `json:"bytes"`
	Throughput float64 `json:"throughput_bytes_per_sec"`
	Busy       float64 `json:"busy_s"`
	Ideal      float64 `json:"ideal_s"`
	// Efficiency is Ideal/Busy: 1 means the phase ran at the limit.
	Efficiency float64 `json:"efficiency"`
}

// ideal returns the time phase p of r would take at the host's limits, and the limit's
// name; ok is false for phases that move no bytes.
func (r run) ideal(p trace.PhaseName) (seconds float64, limit string, ok bool) {
	_, bytes := r.busy(p)
	if bytes <= 0 {
		return 0, "", false
	}
	b := float64(bytes)
	switch p {
	case trace.PhasePull, trace.PhaseFetch:
		return b / r.lim.Link, "link", true
	case trace.PhaseUnpack:
		return b / r.lim.Disk, "disk", true
	case trace.PhaseLoad, trace.PhaseInit:
		weights, other := r.missBytes()
		miss := float64(other)
		if p == trace.PhaseLoad {
			miss = float64(weights)
		}
		miss = min(miss, b)
		return miss/r.lim.Disk + (b-miss)/r.lim.PageCache, "disk+page-cache", true
	}
	return 0, "", false
}

func speedOfLight(runs []run) []Gap {
	var out []Gap
	for _, p := range trace.Phases {
		var bytes, busy, ideal, tput []float64
		var limit string
		for _, r := range runs {
			s, l, ok := r.ideal(p)
			bz, by := r.busy(p)
			if !ok || bz == 0 {
				continue
			}
			limit = l
			bytes, busy, ideal = append(bytes, float64(by)), append(busy, bz), append(ideal, s)
			tput = append(tput, float64(by)/bz)
		}
		if len(busy) == 0 {
			continue
		}
		g := Gap{Phase: p, Limit: limit, Bytes: median(bytes), Throughput: median(tput), Busy: median(busy), Ideal: median(ideal)}
		g.Efficiency = min(1, g.Ideal/g.Busy)
		out = append(out, g)
	}
	return out
}
