package advisor

import (
	"cmp"
	"math"
	"slices"
	"sort"

	"github.com/coldtrace/coldtrace/trace"
)

// PullContention is the other image pulls on the node that downloaded while this image
// did (trace.Pull.Overlaps): they shared the node's link with it. It is a list of its own
// beside Contention, whose entries are always two phases of this start.
type PullContention struct {
	// Runs is how many runs had another pull overlap this one's download.
	Runs int `json:"runs"`
	// Overlap is how long other pulls downloaded while this one did (the union of their
	// intervals), Gain the critical-path time this pull would save with the link to
	// itself; seconds across all runs, zero for a run without overlap.
	Overlap Estimate `json:"overlap_s"`
	Gain    Estimate `json:"gain_s"`
	// Share is this pull's share of the link during the overlap, OwnBytes and OtherBytes
	// what it and the other pulls received then: medians over the contended runs.
	Share      float64 `json:"share"`
	OwnBytes   float64 `json:"own_bytes"`
	OtherBytes float64 `json:"other_bytes"`
	// LinkUse is the median, over the contended runs, of the share of the link that all
	// the pulls together used during the overlap: the gain assumes the link (or the
	// registry) was what they shared, which is the less likely the lower this is.
	LinkUse float64 `json:"link_use"`
	// OwnBytesFrom says how OwnBytes were counted in the first contended run: "samples",
	// the registry connections' byte samples, or "rate", the pull's average rate.
	OwnBytesFrom string `json:"own_bytes_from"`
	// Others are the other pulls, most bytes first.
	Others []OtherPull `json:"others"`
}

// OtherPull is one other pull seen across runs, named by its image (when containerd had
// it) and namespace.
type OtherPull struct {
	Ref       string `json:"ref,omitempty"`
	Namespace string `json:"namespace"`
	Runs      int    `json:"runs"`
	// Overlap and Bytes are the medians, over the runs it appeared in, of how long it
	// downloaded while this pull did and what it received meanwhile.
	Overlap float64 `json:"overlap_s"`
	Bytes   float64 `json:"bytes"`
}

// How a pull's own bytes during an overlap were counted.
const (
	OwnBytesSamples = "samples"
	OwnBytesRate    = "rate"
)

// pullOverlap is one run's contention between its pull and other pulls.
type pullOverlap struct {
	overlap, own, other, share, gain, linkUse float64
	from                                      string
}

// pullContention measures, for one run, how long other pulls downloaded during the pull
// (T) and the pull's share s of the link then: own ÷ (own + other) bytes received in that
// window. The other pulls' bytes are the trace's; the pull's own come from its registry
// connections' samples where the trace has them (the puller was traced), else from its
// average rate (its bytes over its busy time) times T. Alone, the pull would have moved
// its bytes of the window in s·T, so it finishes (1-s)·T earlier, at most its critical
// time.
func (r run) pullContention() (pullOverlap, bool) {
	p := r.t.Pull
	if p == nil || len(p.Overlaps) == 0 {
		return pullOverlap{}, false
	}
	var ivs []trace.Interval
	var po pullOverlap
	for _, o := range p.Overlaps {
		ivs = append(ivs, o.Intervals...)
		po.other += float64(o.Bytes)
	}
	ivs = trace.Union(ivs)
	po.overlap = secs(trace.Total(ivs))
	if po.overlap == 0 {
		return pullOverlap{}, false
	}
	if own, ok := r.registryRecv(ivs); ok {
		po.own, po.from = float64(own), OwnBytesSamples
	} else {
		busy, bytes := r.busy(trace.PhasePull)
		if busy > 0 {
			po.own = float64(bytes) / busy * po.overlap
		}
		po.from = OwnBytesRate
	}
	// Nothing received on either side is no evidence of sharing: claim nothing.
	po.share = 1
	if po.own+po.other > 0 {
		po.share = po.own / (po.own + po.other)
	}
	po.gain = math.Min(r.critical[trace.PhasePull], (1-po.share)*po.overlap)
	po.linkUse = (po.own + po.other) / po.overlap / r.lim.shared()
	return po, true
}

// registryRecv counts the bytes the run's registry connections received within ivs,
// from their cumulative samples, linearly interpolated between samples. It reports false
// when no registry connection has samples.
func (r run) registryRecv(ivs []trace.Interval) (int64, bool) {
	var n int64
	found := false
	for _, c := range r.t.Conns {
		if c.Role != "registry" || c.Dir != "connect" || len(c.Samples) == 0 {
			continue
		}
		found = true
		for _, iv := range ivs {
			n += recvAt(c.Samples, iv.End) - recvAt(c.Samples, iv.Start)
		}
	}
	return n, found
}

// recvAt is the cumulative count received at t: zero before the first sample, the last
// after the last, interpolated in between (so the error is at most one sample's bytes).
func recvAt(s []trace.Sample, t trace.Duration) int64 {
	i := sort.Search(len(s), func(i int) bool { return s[i].At > t })
	switch {
	case i == 0:
		return 0
	case i == len(s):
		return s[i-1].Recv
	}
	a, b := s[i-1], s[i]
	return a.Recv + int64(float64(b.Recv-a.Recv)*float64(t-a.At)/float64(b.At-a.At))
}

// pullContentions summarises the runs' pull contention; nil when no run had any. Overlap
// and gain are over all runs, as the recommendation's saving is, so that contention in a
// minority of runs shows with a median of zero rather than not at all.
func pullContentions(runs []run, b bootstrap) []PullContention {
	var overlaps, gains, shares, own, other, linkUse []float64
	pc := PullContention{}
	type seen struct {
		ref, ns          string
		overlaps, bytess []float64
	}
	var others []*seen
	byKey := map[[2]string]*seen{}
	for _, r := range runs {
		po, ok := r.pullContention()
		overlaps, gains = append(overlaps, po.overlap), append(gains, po.gain)
		if !ok {
			continue
		}
		pc.Runs++
		if pc.OwnBytesFrom == "" {
			pc.OwnBytesFrom = po.from
		}
		shares, own, other = append(shares, po.share), append(own, po.own), append(other, po.other)
		linkUse = append(linkUse, po.linkUse)
		for _, o := range r.t.Pull.Overlaps {
			key := [2]string{o.Namespace, o.Ref}
			s := byKey[key]
			if s == nil {
				s = &seen{ref: o.Ref, ns: o.Namespace}
				byKey[key] = s
				others = append(others, s)
			}
			s.overlaps, s.bytess = append(s.overlaps, secs(trace.Total(o.Intervals))), append(s.bytess, float64(o.Bytes))
		}
	}
	if pc.Runs == 0 {
		return nil
	}
	pc.Overlap, pc.Gain = b.estimate(0.5, overlaps), b.estimate(0.5, gains)
	pc.Share, pc.OwnBytes, pc.OtherBytes, pc.LinkUse = median(shares), median(own), median(other), median(linkUse)
	for _, s := range others {
		pc.Others = append(pc.Others, OtherPull{Ref: s.ref, Namespace: s.ns, Runs: len(s.overlaps), Overlap: median(s.overlaps), Bytes: median(s.bytess)})
	}
	slices.SortStableFunc(pc.Others, func(x, y OtherPull) int { return cmp.Compare(y.Bytes, x.Bytes) })
	return []PullContention{pc}
}

// name names an other pull for people, as the trace's Contended does.
func (o OtherPull) name() string {
	if o.Ref != "" {
		return o.Ref
	}
	return "an unknown image"
}
