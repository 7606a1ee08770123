package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/coldtrace/coldtrace/watcher"
)

var (
	probeDesc = prometheus.NewDesc(Prefix+"probe_attached",
		"1 when the kernel probe (eBPF program) is attached now, 0 when it could not be; one series per program of the agent.", []string{"probe"}, nil)
	lostDesc = prometheus.NewDesc(Prefix+"lost_events_total",
		"Kernel events dropped because the ring buffer was full (raise --ring-buffer); the traces recorded meanwhile say so.", nil, nil)
	recordingsDesc = prometheus.NewDesc(Prefix+"recordings",
		"Recordings now: active (a container being recorded), held (a cgroup tracked from its creation whose container the agent does not know yet).", []string{"state"}, nil)
	heldEventsDesc = prometheus.NewDesc(Prefix+"held_events",
		"Kernel events kept for held cgroups until their container is known.", nil, nil)
	writtenDesc = prometheus.NewDesc(Prefix+"traces_written_total", "Traces written to the data directory.", nil, nil)
	failedDesc  = prometheus.NewDesc(Prefix+"trace_write_failures_total", "Traces that could not be written.", nil, nil)
)

// watcherCollector reads a watcher's health at each scrape, so that what changes at run
// time (probes attached on demand) is current.
type watcherCollector struct{ w *watcher.Watcher }

func newWatcherCollector(w *watcher.Watcher) prometheus.Collector { return watcherCollector{w} }

func (c watcherCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{probeDesc, lostDesc, recordingsDesc, heldEventsDesc, writtenDesc, failedDesc} {
		ch <- d
	}
}

func (c watcherCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.w.Stats()
	for _, p := range st.Probes {
		v := 0.0
		if p.Attached {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(probeDesc, prometheus.GaugeValue, v, p.Name)
	}
	// Unreadable only once the probes are closed, as the agent stops: a failed metric
	// would fail the whole scrape.
	if st.LostErr == nil {
		ch <- prometheus.MustNewConstMetric(lostDesc, prometheus.CounterValue, float64(st.LostEvents))
	}
	ch <- prometheus.MustNewConstMetric(recordingsDesc, prometheus.GaugeValue, float64(st.Recording), "active")
	ch <- prometheus.MustNewConstMetric(recordingsDesc, prometheus.GaugeValue, float64(st.Held), "held")
	ch <- prometheus.MustNewConstMetric(heldEventsDesc, prometheus.GaugeValue, float64(st.HeldEvents))
	ch <- prometheus.MustNewConstMetric(writtenDesc, prometheus.CounterValue, float64(st.Written))
	ch <- prometheus.MustNewConstMetric(failedDesc, prometheus.CounterValue, float64(st.WriteFailures))
}
