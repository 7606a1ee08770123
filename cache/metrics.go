package cache

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Actions, the values of the action label.
const (
	ActionPrepull = "prepull" // images pulled ahead of their containers
	ActionStage   = "stage"   // model artifacts fetched into the store
	ActionWarm    = "warm"    // hot ranges brought into the page cache
)

// Metrics are the cache agent's Prometheus metrics. Labels stay bounded: actions, results
// and reasons are fixed sets, tenants are the node's namespaces that have manifests.
type Metrics struct {
	bytes     *prometheus.CounterVec
	items     *prometheus.CounterVec
	fallbacks *prometheus.CounterVec
	refusals  *prometheus.CounterVec
	seconds   *prometheus.HistogramVec
	resident  *prometheus.GaugeVec
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coldtrace_cache_bytes_total",
			Help: "Bytes the cache agent moved: pre-pulled from registries, staged from origins, warmed into the page cache.",
		}, []string{"action", "tenant"}),
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coldtrace_cache_items_total",
			Help: "Images, artifacts and hot files handled, by result: done (moved now), present (a hit: already there), refused, failed.",
		}, []string{"action", "tenant", "result"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coldtrace_cache_fallbacks_total",
			Help: "Cache entries found missing or corrupt and fetched again from the origin.",
		}, []string{"tenant", "reason"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coldtrace_cache_refusals_total",
			Help: "Manifests and entries refused: unreadable manifests, paths outside the roots, other tenants' data, size or digest mismatches.",
		}, []string{"tenant", "reason"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "coldtrace_cache_action_duration_seconds",
			Help:    "Time per image pre-pull, artifact staging and file warming.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"action"}),
		resident: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coldtrace_cache_hotset_resident_ratio",
			Help: "Share of a manifest's hot set in the page cache after its last warm, checked with mincore.",
		}, []string{"tenant", "manifest"}),
	}
	reg.MustRegister(m.bytes, m.items, m.fallbacks, m.refusals, m.seconds, m.resident)
	return m
}

func (m *Metrics) refused(tenant, reason string) {
	if m != nil {
		m.refusals.WithLabelValues(tenant, reason).Inc()
	}
}

func (m *Metrics) fallback(tenant, reason string) {
	if m != nil {
		m.fallbacks.WithLabelValues(tenant, reason).Inc()
	}
}

// observe counts one finished item.
func (m *Metrics) observe(tenant string, it Item) {
	if m == nil {
		return
	}
	m.items.WithLabelValues(it.Action, tenant, it.Result).Inc()
	m.bytes.WithLabelValues(it.Action, tenant).Add(float64(it.Bytes))
	m.seconds.WithLabelValues(it.Action).Observe(it.Took.Seconds())
	if it.Result == ResultRefused {
		m.refused(tenant, it.Reason)
	}
}

func (m *Metrics) residentRatio(tenant, manifest string, r float64) {
	if m != nil {
		m.resident.WithLabelValues(tenant, manifest).Set(r)
	}
}

// forget drops the series of a manifest that is gone, so that its last ratio does not read
// as current.
func (m *Metrics) forget(tenant, manifest string) {
	if m != nil && manifest != "" {
		m.resident.DeleteLabelValues(tenant, manifest)
	}
}
