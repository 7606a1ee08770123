// Package advisor turns cold-start traces into advice: statistics of each phase across
// runs, each phase's gap to the host's physical limits, contention on the link (the pull
// against the model download, and against other pulls on the node), a what-if model
// computed from the traces' critical paths, recommendations ranked by the seconds they
// save, prefetch manifests, exports of the hot set to the lazy-pull snapshotters'
// formats, and regression reports between two sets of traces.
package advisor

import (
	"fmt"

	"github.com/coldtrace/coldtrace/trace"
)

// Options steer the advisor. The zero value is usable.
type Options struct {
	// Limits override the host limits found in the traces; zero fields are not overridden.
	Limits Limits
	// Budget bounds the bytes of the manifest's hot set; 0 means no bound.
	Budget int64
	// Name and Tenant go into the manifest; Name defaults to one derived from the workload.
	Name, Tenant string
	// Force accepts traces of different workloads together.
	Force bool
	// Seed seeds the bootstrap; Resamples is its number of resamples (default 2000).
	Seed      uint64
	Resamples int
}

func (o Options) bootstrap() bootstrap {
	n := o.Resamples
	if n <= 0 {
		n = 2000
	}
	return bootstrap{resamples: n, seed: o.Seed}
}

// Advice is the advisor's answer for one set of traces of one workload.
type Advice struct {
	Workload string `json:"workload"`
	Runs     int    `json:"runs"`
	// Limits are those of the first trace's host, after overrides and defaults.
	Limits          Limits           `json:"limits"`
	TimeToReady     Summary          `json:"time_to_ready_s"`
	Phases          []PhaseSummary   `json:"phases"`
	SpeedOfLight    []Gap            `json:"speed_of_light"`
	Contention      []Contention     `json:"contention,omitempty"`
	PullContention  []PullContention `json:"pull_contention,omitempty"`
	WhatIf          []Scenario       `json:"what_if"`
	Recommendations []Recommendation `json:"recommendations"`
	// Warnings say what in the traces makes the advice less certain.
	Warnings []string `json:"warnings,omitempty"`
}

// PhaseSummary is one phase's own span and its share of the critical path across runs.
type PhaseSummary struct {
	Phase    trace.PhaseName `json:"phase"`
	Span     Summary         `json:"span_s"`
	Critical Summary         `json:"critical_s"`
}

// Analyze computes the advice for traces of one workload.
func Analyze(traces []*trace.Trace, opt Options) (*Advice, error) {
	if err := CheckWorkloads(traces, opt.Force); err != nil {
		return nil, err
	}
	b := opt.bootstrap()
	lim := measureLimits(traces, opt.Limits)
	runs := make([]run, len(traces))
	for i, t := range traces {
		runs[i] = newRun(t, lim)
	}
	a := &Advice{
		Workload: workloadName(traces[0].Workload),
		Runs:     len(traces),
		Limits:   runs[0].lim,
		Warnings: warnings(traces),
	}
	var ready []float64
	for _, r := range runs {
		ready = append(ready, r.ready())
	}
	a.TimeToReady = b.summary(ready)
	a.Phases = phaseSummaries(runs, b)
	a.SpeedOfLight = speedOfLight(runs)
	a.Contention = contentions(runs, b)
	a.PullContention = pullContentions(runs, b)
	a.WhatIf = whatIf(runs, b)
	a.Recommendations = recommend(runs, a, b)
	return a, nil
}

// workloadName names a workload for people: the image reference with its digest, or
// the command line.
func workloadName(w trace.Workload) string {
	if w.Image != "" && w.ImageDigest != "" {
		return w.Image + "@" + w.ImageDigest
	}
	return w.Key()
}

func phaseSummaries(runs []run, b bootstrap) []PhaseSummary {
	var out []PhaseSummary
	for _, p := range trace.Phases {
		var span, crit []float64
		seen := false
		for _, r := range runs {
			ph, ok := r.t.Phase(p)
			seen = seen || ok
			span = append(span, secs(ph.Span()))
			crit = append(crit, r.critical[p])
		}
		if seen {
			out = append(out, PhaseSummary{Phase: p, Span: b.summary(span), Critical: b.summary(crit)})
		}
	}
	return out
}

func warnings(traces []*trace.Trace) []string {
	var out []string
	for _, t := range traces {
		if t.Incomplete || t.LostEvents > 0 {
			out = append(out, fmt.Sprintf("trace %s is incomplete (%d lost events): its figures are lower bounds", t.ID, t.LostEvents))
		}
		if t.Outcome != trace.OutcomeReady {
			out = append(out, fmt.Sprintf("trace %s ended %s, not ready: its time to ready is the recording's length", t.ID, t.Outcome))
		}
		if len(t.Critical) == 0 {
			out = append(out, fmt.Sprintf("trace %s has no critical path: using the phases' attributions", t.ID))
		}
	}
	return out
}
