package collector

import (
	"sort"

	"github.com/coldtrace/coldtrace/trace"
)

// activity gathers each phase's raw intervals of activity from the assembled trace and
// the collector's event lists.
func (c *Collector) activity(t *trace.Trace, extra map[trace.PhaseName][]trace.Interval) map[trace.PhaseName][]trace.Interval {
	acts := map[trace.PhaseName][]trace.Interval{}
	for ph, ivs := range extra {
		acts[ph] = append(acts[ph], ivs...)
	}
	for _, cn := range t.Conns {
		// Bytes the workload asked for: downloads it started, not requests it serves.
		if cn.BytesRecv == 0 || cn.Dir != "connect" {
			continue
		}
		ph := trace.PhaseFetch
		if cn.Role == "registry" {
			ph = trace.PhasePull
		}
		acts[ph] = append(acts[ph], trace.Interval{Start: cn.Open, End: max(cn.LastRecv, cn.Open)})
	}
	for _, f := range c.files {
		if f.Kind != trace.KindWeights {
			continue
		}
		for _, r := range f.reads {
			acts[trace.PhaseLoad] = append(acts[trace.PhaseLoad], trace.Interval{Start: r.First, End: r.Last})
		}
		for _, r := range f.faults {
			acts[trace.PhaseLoad] = append(acts[trace.PhaseLoad], trace.Interval{Start: r.First, End: r.First})
		}
		for _, m := range f.misses {
			at := c.rel(m.at)
			acts[trace.PhaseLoad] = append(acts[trace.PhaseLoad], trace.Interval{Start: at, End: at})
		}
	}
	acts[trace.PhaseGPU] = append(acts[trace.PhaseGPU], c.gpuActs...)
	for _, o := range t.GPU.Opens {
		acts[trace.PhaseGPU] = append(acts[trace.PhaseGPU], trace.Interval{Start: o.At, End: o.At})
	}
	for _, call := range t.GPU.Calls {
		acts[trace.PhaseGPU] = append(acts[trace.PhaseGPU], trace.Interval{Start: call.Start, End: call.End})
	}
	return acts
}

// merge clips intervals to [0, end], sorts them and joins those closer than mergeGap.
func merge(ivs []trace.Interval, end trace.Duration) []trace.Interval {
	var out []trace.Interval
	sorted := append([]trace.Interval(nil), ivs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Start < sorted[j].Start })
	for _, iv := range sorted {
		iv.Start, iv.End = max(iv.Start, 0), min(iv.End, end)
		if iv.End < iv.Start || iv.Start > end {
			continue
		}
		if n := len(out); n > 0 && iv.Start <= out[n-1].End+mergeGap {
			out[n-1].End = max(out[n-1].End, iv.End)
			continue
		}
		out = append(out, iv)
	}
	return out
}

// segment builds each phase's own view from its activity and the critical path, in which
// every instant of [0, end) belongs to exactly one phase. Where phases overlap, the instant
// goes to the phase whose current stretch of activity ends last: that is the one the start
// is still waiting for. Instants with no activity are create before the first exec, init
// before the first access to model weights, and compute after it.
func segment(t *trace.Trace, acts map[trace.PhaseName][]trace.Interval, firstExec trace.Duration) ([]trace.Phase, []trace.Segment) {
	end := t.Duration
	merged := map[trace.PhaseName][]trace.Interval{}
	for ph, ivs := range acts {
		if m := merge(ivs, end); len(m) > 0 {
			merged[ph] = m
		}
	}
	firstWeights := end
	if load := merged[trace.PhaseLoad]; len(load) > 0 {
		firstWeights = load[0].Start
	}

	cuts := []trace.Duration{0, end, min(firstExec, end), firstWeights}
	for _, ivs := range merged {
		for _, iv := range ivs {
			cuts = append(cuts, iv.Start, iv.End)
		}
	}
	sort.Slice(cuts, func(i, j int) bool { return cuts[i] < cuts[j] })

	var segs []trace.Segment
	for i := 0; i+1 < len(cuts); i++ {
		a, b := cuts[i], cuts[i+1]
		if a == b || a >= end {
			continue
		}
		ph := owner(merged, a, b)
		if ph == "" {
			switch {
			case a < firstExec:
				ph = trace.PhaseCreate
			case a < firstWeights:
				ph = trace.PhaseInit
			default:
				ph = trace.PhaseCompute
			}
		}
		if n := len(segs); n > 0 && segs[n-1].Phase == ph {
			segs[n-1].End = b
		} else {
			segs = append(segs, trace.Segment{Phase: ph, Start: a, End: b})
		}
	}

	critical := map[trace.PhaseName]trace.Duration{}
	residual := map[trace.PhaseName][]trace.Interval{}
	for _, s := range segs {
		critical[s.Phase] += s.End - s.Start
		if _, active := merged[s.Phase]; !active {
			residual[s.Phase] = append(residual[s.Phase], trace.Interval{Start: s.Start, End: s.End})
		}
	}
	for ph, ivs := range residual {
		merged[ph] = ivs
	}
	if end > 0 && firstExec < firstWeights {
		// init is a span by definition, even where other phases took its instants.
		if _, ok := merged[trace.PhaseInit]; !ok {
			merged[trace.PhaseInit] = nil
		}
	}

	var phases []trace.Phase
	for _, name := range trace.Phases {
		ivs, ok := merged[name]
		if !ok {
			continue
		}
		p := trace.Phase{Name: name, Critical: critical[name], Activity: ivs}
		if name == trace.PhaseInit {
			p.Start, p.End = min(firstExec, end), firstWeights
		} else if len(ivs) > 0 {
			p.Start, p.End = ivs[0].Start, ivs[len(ivs)-1].End
		}
		p.Busy = trace.Total(ivs)
		p.Bytes = phaseBytes(t, name)
		phases = append(phases, p)
	}
	return phases, segs
}

// owner picks the phase that [a, b) belongs to on the critical path, or "".
func owner(merged map[trace.PhaseName][]trace.Interval, a, b trace.Duration) trace.PhaseName {
	var best trace.PhaseName
	bestEnd := trace.Duration(-1)
	for _, name := range trace.Phases { // fixed order: ties go to the earlier phase
		ivs := merged[name]
		i := sort.Search(len(ivs), func(i int) bool { return ivs[i].End >= b })
		if i < len(ivs) && ivs[i].Start <= a && ivs[i].End > bestEnd {
			best, bestEnd = name, ivs[i].End
		}
	}
	return best
}

func phaseBytes(t *trace.Trace, name trace.PhaseName) int64 {
	var n int64
	switch name {
	case trace.PhasePull, trace.PhaseFetch:
		if name == trace.PhasePull && t.Pull != nil {
			// The puller's own count: the puller (containerd or its client) is not traced.
			for _, l := range t.Pull.Layers {
				n += l.Bytes
			}
			return n
		}
		role := "peer"
		if name == trace.PhasePull {
			role = "registry"
		}
		for _, c := range t.Conns {
			if c.Role == role && c.Dir == "connect" {
				n += c.BytesRecv
			}
		}
	case trace.PhaseLoad:
		for _, f := range t.Files {
			if f.Kind == trace.KindWeights {
				n += f.BytesRead + f.MappedBytes
			}
		}
	}
	return n
}
