package metrics

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// newBuild is coldtrace_build_info: 1, labelled with the version and the Go that built it.
func newBuild(version string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        Prefix + "build_info",
		Help:        "Always 1; the labels say which coldtrace build runs: version and Go version.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}
