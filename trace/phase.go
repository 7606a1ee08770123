package trace

import (
	"cmp"
	"slices"
	"time"
)

// PhaseName is one of the phases of docs/architecture.md.
type PhaseName string

const (
	PhasePull    PhaseName = "pull"
	PhaseUnpack  PhaseName = "unpack"
	PhaseCreate  PhaseName = "create"
	PhaseInit    PhaseName = "init"
	PhaseFetch   PhaseName = "fetch"
	PhaseLoad    PhaseName = "load"
	PhaseGPU     PhaseName = "gpu"
	PhaseCompute PhaseName = "compute"
)

// Phases lists every phase in the order of a typical cold start.
var Phases = []PhaseName{PhasePull, PhaseUnpack, PhaseCreate, PhaseInit, PhaseFetch, PhaseLoad, PhaseGPU, PhaseCompute}

// Known reports whether p is a phase of this format version.
func (p PhaseName) Known() bool {
	for _, q := range Phases {
		if p == q {
			return true
		}
	}
	return false
}

// Phase is one phase's own view: its span from first to last activity, the time it was
// actually busy, what it moved, and the part of the critical path attributed to it.
type Phase struct {
	Name  PhaseName `json:"name"`
	Start Duration  `json:"start_ns"`
	End   Duration  `json:"end_ns"`
	// Busy is the union of the phase's activity intervals; at most End-Start.
	Busy Duration `json:"busy_ns"`
	// Critical is the time of the critical path attributed to this phase. The Critical
	// values of all phases add up to the trace's Duration.
	Critical Duration `json:"critical_ns"`
	Bytes    int64    `json:"bytes,omitempty"`
	// Activity is the merged list of intervals in which the phase was active.
	Activity []Interval `json:"activity,omitempty"`
}

// Span is End-Start.
func (p Phase) Span() time.Duration { return p.End - p.Start }

// Interval is a half-open interval [Start, End) of trace time.
type Interval struct {
	Start Duration `json:"s"`
	End   Duration `json:"e"`
}

// Segment is a piece of the critical path: every instant of [0, Duration) belongs to
// exactly one segment, and segments are sorted and contiguous.
type Segment struct {
	Phase PhaseName `json:"phase"`
	Start Duration  `json:"start_ns"`
	End   Duration  `json:"end_ns"`
}

// Phase returns the named phase, or false when the trace has none of that name.
func (t *Trace) Phase(name PhaseName) (Phase, bool) {
	for _, p := range t.Phases {
		if p.Name == name {
			return p, true
		}
	}
	return Phase{}, false
}

// Union sorts intervals (in place) and merges those that overlap or touch: two things busy
// at once cover the same seconds, not twice as many.
func Union(ivs []Interval) []Interval {
	slices.SortFunc(ivs, func(a, b Interval) int { return cmp.Compare(a.Start, b.Start) })
	var out []Interval
	for _, iv := range ivs {
		if n := len(out); n > 0 && iv.Start <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, iv.End)
			continue
		}
		out = append(out, iv)
	}
	return out
}

// Total is the summed length of intervals: for disjoint ones (Union's), the time they cover.
func Total(ivs []Interval) Duration {
	var d Duration
	for _, iv := range ivs {
		d += iv.End - iv.Start
	}
	return d
}
