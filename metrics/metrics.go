// Package metrics is the agent's Prometheus metrics: one collector per file, in the style
// of node_exporter. starts.go turns each written trace into per-workload cold-start
// metrics, watcher.go reads the agent's health from the watcher at each scrape, store.go
// sizes the trace store, build.go says which build runs. docs/metrics.md lists every
// metric, its labels and their bounds.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/coldtrace/coldtrace/trace"
	"github.com/coldtrace/coldtrace/watcher"
)

// Prefix begins every metric name of the agent.
const Prefix = "coldtrace_"

// DefaultMaxWorkloads is Options.MaxWorkloads' default.
const DefaultMaxWorkloads = 50

// Options configure the agent's metrics.
type Options struct {
	// Version is the build's version, for coldtrace_build_info.
	Version string
	// Namespace stands for the namespace of a container that has no Kubernetes namespace
	// (one started with ctr or nerdctl): the containerd namespace the agent watches.
	Namespace string
	// MaxWorkloads caps the distinct (namespace, workload) pairs with series of their own;
	// later ones are counted under Other. Zero or less means DefaultMaxWorkloads.
	MaxWorkloads int
	// DataDir is the agent's data directory, whose traces/ store.go sizes.
	DataDir string
}

// Metrics are the agent's metrics, registered with one registry.
type Metrics struct {
	reg    prometheus.Registerer
	starts *starts
}

// New registers the cold-start, trace-store and build metrics with reg. Observe is the
// watcher's sink for the per-trace metrics; Watch adds the health of a running watcher.
func New(reg prometheus.Registerer, opts Options) *Metrics {
	if opts.MaxWorkloads <= 0 {
		opts.MaxWorkloads = DefaultMaxWorkloads
	}
	m := &Metrics{reg: reg, starts: newStarts(opts.Namespace, opts.MaxWorkloads)}
	ZeroFirst(reg).MustRegister(m.starts.collectors()...)
	reg.MustRegister(newStore(opts.DataDir), newBuild(opts.Version))
	return m
}

// Observe counts one written trace: the watcher's Options.Sinks take it. It only adds a
// few numbers under a lock, so it never holds the recording up.
func (m *Metrics) Observe(t *trace.Trace) { m.starts.observe(t) }

// Watch registers the health metrics of a running watcher, read at each scrape.
func (m *Metrics) Watch(w *watcher.Watcher) { m.reg.MustRegister(newWatcherCollector(w)) }
