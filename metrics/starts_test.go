package metrics

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/coldtrace/coldtrace/trace"
)

const s = time.Second

// coldStart is a trace of a ready start that pulled 3 MB in 4 s while another pull ran
// for 1 s, downloaded 2 MB from 3 s to 6 s, and read weights, a library and a file that
// missed the page cache.
func coldStart(image, namespace string) *trace.Trace {
	return &trace.Trace{
		Workload: trace.Workload{Image: image, ImageDigest: "sha256:" + strings.Repeat("a", 64), Namespace: namespace},
		Start:    time.Unix(1000, 0), Duration: 8 * s, Outcome: trace.OutcomeReady,
		Pull: &trace.Pull{Start: 0, End: 4 * s, Layers: []trace.Layer{{Bytes: 1e6}, {Bytes: 2e6}},
			Overlaps: []trace.PullOverlap{{Intervals: []trace.Interval{{Start: 1 * s, End: 2 * s}}}, {Intervals: []trace.Interval{{Start: 1500 * time.Millisecond, End: 2 * s}}}}},
		Phases: []trace.Phase{
			{Name: trace.PhasePull, Start: 0, End: 4 * s, Busy: 4 * s, Critical: 4 * s, Activity: []trace.Interval{{Start: 0, End: 4 * s}}},
			{Name: trace.PhaseFetch, Start: 3 * s, End: 6 * s, Busy: 3 * s, Critical: 2 * s, Bytes: 2e6, Activity: []trace.Interval{{Start: 3 * s, End: 6 * s}}},
			{Name: trace.PhaseGPU, Start: 6 * s, End: 7500 * time.Millisecond, Busy: s, Critical: 2 * s},
		},
		Files: []trace.File{
			{Kind: trace.KindWeights, BytesRead: 100, MappedBytes: 4000, CacheMisses: 2},
			{Kind: trace.KindLibrary, BytesRead: 50},
			{Kind: trace.KindDevice, BytesRead: 7},
		},
	}
}

// TestStartsFirstScrapeAtZero: a workload's series are scraped at zero once before its
// first trace counts, so that Prometheus' increase() sees the first start.
func TestStartsFirstScrapeAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, Options{Version: "v1", Namespace: "k8s.io", DataDir: t.TempDir()})
	m.Observe(coldStart("registry.example/team/llm:v1", "team-a"))
	count := func() float64 {
		return testutil.ToFloat64(collectorOf(t, reg, "coldtrace_cold_starts_total", `namespace="team-a",outcome="ready",workload="registry.example/team/llm"`))
	}
	if n := count(); n != 0 {
		t.Errorf("first scrape: %v cold starts, want the series at 0", n)
	}
	if n := count(); n != 1 {
		t.Errorf("second scrape: %v cold starts, want 1", n)
	}
	m.Observe(coldStart("registry.example/team/llm@sha256:"+strings.Repeat("b", 64), "team-a"))
	if n := count(); n != 2 {
		t.Errorf("after a second start: %v, want 2 at once", n)
	}
}

// collectorOf gathers reg and returns the one series of name whose labels, sorted and
// joined, are labels, as a gauge to read.
func collectorOf(t *testing.T, reg *prometheus.Registry, name, labels string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			if strings.Join(ls, ",") == labels {
				g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
				g.Set(m.GetCounter().GetValue() + m.GetGauge().GetValue())
				return g
			}
		}
	}
	t.Fatalf("no %s{%s}", name, labels)
	return nil
}

// TestStartsValues checks every per-trace metric against the trace above.
func TestStartsValues(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, Options{Version: "v1", Namespace: "k8s.io", DataDir: t.TempDir()})
	m.Observe(coldStart("registry.example/team/llm:v1", ""))
	reg.Gather() // the series at zero
	wl := `namespace="k8s.io",workload="registry.example/team/llm"`
	got := gatherText(t, reg)
	for _, line := range []string{
		`coldtrace_file_read_bytes_total{kind="library",` + wl + `} 50`,
		`coldtrace_file_read_bytes_total{kind="other",` + wl + `} 0`,
		`coldtrace_file_read_bytes_total{kind="weights",` + wl + `} 4100`,
		`coldtrace_pull_contention_seconds_total{namespace="k8s.io",with="download",workload="registry.example/team/llm"} 1`,
		`coldtrace_pull_contention_seconds_total{namespace="k8s.io",with="pull",workload="registry.example/team/llm"} 1`,
		`coldtrace_pull_bytes_total{` + wl + `} 3e+06`,
		`coldtrace_model_download_bytes_total{` + wl + `} 2e+06`,
		`coldtrace_page_cache_miss_bytes_total{` + wl + `} 8192`,
		`coldtrace_image_first_start_timestamp_seconds{digest="sha256:` + strings.Repeat("a", 64) + `",` + wl + `} 1000`,
		`coldtrace_phase_critical_path_seconds_total{namespace="k8s.io",phase="fetch",workload="registry.example/team/llm"} 2`,
		`coldtrace_phase_busy_seconds_total{namespace="k8s.io",phase="fetch",workload="registry.example/team/llm"} 3`,
		`coldtrace_phase_critical_path_seconds_total{namespace="k8s.io",phase="load",workload="registry.example/team/llm"} 0`,
		`coldtrace_time_to_ready_seconds_bucket{image="pulled",` + wl + `,le="5"} 0`,
		`coldtrace_time_to_ready_seconds_bucket{image="pulled",` + wl + `,le="10"} 1`,
		`coldtrace_time_to_ready_seconds_count{image="present",` + wl + `} 0`,
		`coldtrace_pull_duration_seconds_bucket{` + wl + `,le="2.5"} 0`,
		`coldtrace_pull_duration_seconds_bucket{` + wl + `,le="5"} 1`,
		`coldtrace_gpu_init_duration_seconds_bucket{` + wl + `,le="1"} 0`,
		`coldtrace_gpu_init_duration_seconds_bucket{` + wl + `,le="2.5"} 1`,
		`coldtrace_cold_starts_total{namespace="k8s.io",outcome="exited",workload="registry.example/team/llm"} 0`,
		`coldtrace_build_info{goversion=`,
	} {
		if !strings.Contains(got, line) {
			t.Errorf("missing %s", line)
		}
	}
	if t.Failed() {
		t.Log(got)
	}
}

// gatherText is reg's exposition in the text format.
func gatherText(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// TestStartsCap: past MaxWorkloads pairs, new workloads count as "other", in their
// namespace when it is known and in "other" when not.
func TestStartsCap(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, Options{Version: "v1", Namespace: "default", MaxWorkloads: 2, DataDir: t.TempDir()})
	for _, c := range []struct{ image, ns string }{
		{"a:v1", "team-a"}, {"b:v1", "team-b"}, {"c:v1", "team-a"}, {"d@sha256:" + strings.Repeat("d", 64), "team-a"}, {"e:v1", "team-c"}, {"a:v2", "team-a"},
	} {
		m.Observe(coldStart(c.image, c.ns))
	}
	reg.Gather()
	got := gatherText(t, reg)
	for line, want := range map[string]bool{
		`coldtrace_cold_starts_total{namespace="team-a",outcome="ready",workload="a"} 2`:     true,
		`coldtrace_cold_starts_total{namespace="team-b",outcome="ready",workload="b"} 1`:     true,
		`coldtrace_cold_starts_total{namespace="team-a",outcome="ready",workload="other"} 2`: true,
		`coldtrace_cold_starts_total{namespace="other",outcome="ready",workload="other"} 1`:  true,
		`workload="c"`:       false,
		`workload="e"`:       false,
		`namespace="team-c"`: false,
		// Digests of folded workloads mean nothing together: "other" has none.
		`coldtrace_image_first_start_timestamp_seconds{digest="sha256:` + strings.Repeat("a", 64) + `",namespace="team-a",workload="other"}`: false,
	} {
		if strings.Contains(got, line) != want {
			t.Errorf("%s: present %v, want %v", line, !want, want)
		}
	}
}

func TestWorkloadName(t *testing.T) {
	for image, want := range map[string]string{
		"nginx":                            "nginx",
		"docker.io/library/nginx:1.27":     "nginx",
		"ghcr.io/org/server:v2":            "ghcr.io/org/server",
		"127.0.0.1:5000/test/coldstart:v1": "127.0.0.1:5000/test/coldstart",
		"registry.example/llm@sha256:" + strings.Repeat("0", 64): "registry.example/llm",
		"":           Unknown,
		"Not A Ref!": Unknown,
	} {
		if got := WorkloadName(image); got != want {
			t.Errorf("WorkloadName(%q) = %q, want %q", image, got, want)
		}
	}
}

// TestLint runs promlint over every metric of the package, each with a series.
func TestLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, Options{Version: "v1", Namespace: "default", DataDir: t.TempDir()})
	m.Observe(coldStart("a:v1", "team-a"))
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// TestZeroFirst: through ZeroFirst, a new counter or histogram series is gathered once at
// zero, then as it is; a gauge as it is at once.
func TestZeroFirst(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total", Help: "c"}, []string{"l"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h_seconds", Help: "h", Buckets: []float64{1}})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "g"})
	z := ZeroFirst(reg)
	z.MustRegister(c, h, g)
	c.WithLabelValues("a").Add(3)
	h.Observe(0.5)
	g.Set(7)
	want := func(lines ...string) {
		t.Helper()
		got := gatherText(t, reg)
		for _, l := range lines {
			if !strings.Contains(got, l+"\n") {
				t.Errorf("want %s in\n%s", l, got)
			}
		}
	}
	want(`c_total{l="a"} 0`, `h_seconds_bucket{le="1"} 0`, `h_seconds_count 0`, `g 7`)
	c.WithLabelValues("b").Inc()
	want(`c_total{l="a"} 3`, `c_total{l="b"} 0`, `h_seconds_bucket{le="1"} 1`, `h_seconds_count 1`)
	want(`c_total{l="b"} 1`)
	if !z.Unregister(c) || z.Unregister(c) {
		t.Error("Unregister: want true once")
	}
}

// TestSeriesPerWorkload holds docs/metrics.md's count: 94 series per (namespace, workload)
// pair, all made at its first trace.
func TestSeriesPerWorkload(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := newStarts("default", DefaultMaxWorkloads)
	reg.MustRegister(s.collectors()...)
	for i, image := range []string{"a:v1", "b:v1"} {
		s.observe(coldStart(image, "team-a"))
		n := 0 // series as Prometheus stores them: a histogram's buckets, sum and count each
		for _, l := range strings.Split(gatherText(t, reg), "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				n++
			}
		}
		if n != 94*(i+1) {
			t.Errorf("%d workloads: %d series, want %d", i+1, n, 94*(i+1))
		}
	}
}
