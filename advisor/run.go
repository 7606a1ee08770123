package advisor

import (
	"fmt"
	"time"

	"github.com/coldtrace/coldtrace/trace"
)

// run is one trace with the figures that every part of the advisor reads from it.
type run struct {
	t   *trace.Trace
	lim Limits
	// total is the length of the critical path in seconds; critical holds each phase's
	// share of it.
	total    float64
	critical map[trace.PhaseName]float64
}

func newRun(t *trace.Trace, lim Limits) run {
	r := run{t: t, lim: lim.resolve(t.Host), total: secs(t.Duration), critical: map[trace.PhaseName]float64{}}
	if len(t.Critical) > 0 {
		for _, s := range t.Critical {
			r.critical[s.Phase] += secs(s.End - s.Start)
		}
	} else {
		for _, p := range t.Phases {
			r.critical[p.Name] = secs(p.Critical)
		}
	}
	return r
}

// ready is the time to ready in seconds, or the recording's length when it never was.
func (r run) ready() float64 {
	if r.t.Ready != nil {
		return secs(r.t.Ready.At)
	}
	return r.total
}

// busy returns a phase's busy time in seconds (its span when busy is not recorded) and
// its bytes.
func (r run) busy(name trace.PhaseName) (seconds float64, bytes int64) {
	p, ok := r.t.Phase(name)
	if !ok {
		return 0, 0
	}
	b := p.Busy
	if b == 0 {
		b = p.Span()
	}
	return secs(b), p.Bytes
}

func secs(d time.Duration) float64 { return d.Seconds() }

// CheckWorkloads refuses traces of different workloads (by trace.Workload.Key), whose
// statistics would mean nothing together, unless force is set.
func CheckWorkloads(traces []*trace.Trace, force bool) error {
	if len(traces) == 0 {
		return fmt.Errorf("no traces")
	}
	first := traces[0].Workload.Key()
	for _, t := range traces[1:] {
		if k := t.Workload.Key(); k != first && !force {
			return fmt.Errorf("traces of different workloads: %q (trace %s) and %q (trace %s); give traces of one workload, or force", first, traces[0].ID, k, t.ID)
		}
	}
	return nil
}
