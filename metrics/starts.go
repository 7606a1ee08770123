package metrics

import (
	"os"
	"slices"
	"sync"

	"github.com/distribution/reference"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/coldtrace/coldtrace/trace"
)

// Other is the workload (and namespace) under which the pairs beyond Options.MaxWorkloads
// are counted, and Unknown the workload of a container whose image is not known.
const (
	Other   = "other"
	Unknown = "unknown"
)

// The values of the image label of coldtrace_time_to_ready_seconds: whether the start
// pulled its image (the trace has a pull that received bytes) or found it on the node.
const (
	ImagePulled  = "pulled"
	ImagePresent = "present"
)

// The values of the with label of coldtrace_pull_contention_seconds_total: what shared
// the link with the pull.
const (
	WithPull     = "pull"     // other image pulls on the node
	WithDownload = "download" // the workload's own model download (the fetch phase)
)

var (
	outcomes = []trace.Outcome{trace.OutcomeReady, trace.OutcomeExited, trace.OutcomeTimeout, trace.OutcomeInterrupted, trace.OutcomeFailed}
	images   = []string{ImagePulled, ImagePresent}
	withs    = []string{WithPull, WithDownload}
	// The file kinds whose reads are counted; device nodes are read through ioctls, which
	// the GPU metrics cover.
	kinds = []trace.FileKind{trace.KindWeights, trace.KindLibrary, trace.KindOther}

	// StartBuckets are the buckets of the time to ready and of the pull's duration: cold
	// starts of inference servers run from under a second (a warm small model) to tens of
	// minutes (a large image on a slow link).
	StartBuckets = []float64{0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800}
	// GPU initialisation runs from milliseconds (a persistent driver) to minutes.
	gpuBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}
)

// key is a (namespace, workload) pair.
type key struct{ namespace, workload string }

// starts turns traces into the per-workload metrics.
type starts struct {
	namespace string // for containers without a Kubernetes namespace
	max       int
	pageSize  float64

	mu sync.Mutex
	// admitted counts the pairs with series of their own, namespaces their namespaces;
	// digests holds each pair's current image digest.
	admitted   int
	namespaces map[string]bool
	pairs      map[key]bool
	digests    map[key]string

	coldStarts, critical, busy, pullBytes, contention, download, missed, read *prometheus.CounterVec
	ready, pull, gpu                                                          *prometheus.HistogramVec
	firstStart                                                                *prometheus.GaugeVec
}

func newStarts(namespace string, max int) *starts {
	wl := []string{"namespace", "workload"}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: Prefix + name, Help: help}, append(wl, labels...))
	}
	histogram := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: Prefix + name, Help: help, Buckets: buckets}, append(wl, labels...))
	}
	return &starts{
		namespace: namespace, max: max, pageSize: float64(os.Getpagesize()),
		namespaces: map[string]bool{}, pairs: map[key]bool{}, digests: map[key]string{},
		coldStarts: counter("cold_starts_total",
			"Cold starts recorded, by how they ended: ready, exited (before ready), timeout, interrupted (the agent stopped), failed.", "outcome"),
		ready: histogram("time_to_ready_seconds",
			"Time from a cold start's time zero (its image pull or its create) to ready, for starts that got ready; image says whether the start pulled its image or found it on the node.", StartBuckets, "image"),
		critical: counter("phase_critical_path_seconds_total",
			"Seconds of the cold starts' critical path attributed to each phase; the phases of one start add up to its duration.", "phase"),
		busy: counter("phase_busy_seconds_total",
			"Seconds each phase was active during the cold starts (phases overlap: the sum exceeds the duration).", "phase"),
		pullBytes: counter("pull_bytes_total",
			"Image layer bytes received by the pulls of the cold starts."),
		pull: histogram("pull_duration_seconds",
			"Duration of each cold start's image pull, from the request to the last layer's commit.", StartBuckets),
		contention: counter("pull_contention_seconds_total",
			"Seconds during which a cold start's image pull shared the link: with other image pulls on the node, or with the workload's own model download.", "with"),
		download: counter("model_download_bytes_total",
			"Bytes the workloads received from peers other than the registry during their cold starts (model downloads)."),
		missed: counter("page_cache_miss_bytes_total",
			"Bytes of the files the workloads used that were read from storage into the page cache during their cold starts."),
		read: counter("file_read_bytes_total",
			"Bytes the workloads read from files during their cold starts, through read syscalls and page faults on mappings, by kind of file.", "kind"),
		gpu: histogram("gpu_init_duration_seconds",
			"Duration of the GPU phase of the cold starts that used an accelerator: from the first device open to the last driver call or ioctl.", gpuBuckets),
		firstStart: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: Prefix + "image_first_start_timestamp_seconds",
			Help: "Unix time of the first cold start on this node of the workload's current image digest; one series per workload, replaced when the digest changes (a deploy)."},
			append(wl, "digest")),
	}
}

// collectors are the metric vectors, to register.
func (s *starts) collectors() []prometheus.Collector {
	return []prometheus.Collector{s.coldStarts, s.ready, s.critical, s.busy, s.pullBytes, s.pull, s.contention, s.download, s.missed, s.read, s.gpu, s.firstStart}
}

// WorkloadName is the workload label of an image reference: its repository, without tag
// or digest, in the short form Docker prints ("nginx", "ghcr.io/org/server").
func WorkloadName(image string) string {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return Unknown
	}
	return reference.FamiliarName(named)
}

// admit returns the labels a pair's series go under, called with s.mu held, and makes
// every series of a new one at zero so that the panels of a workload show its zeros
// too. Past s.max pairs, a new workload is counted as Other, in its namespace when an
// admitted pair has that namespace and else in Other too: at most max+1 namespaces and
// 2*max+1 pairs.
func (s *starts) admit(k key) key {
	if !s.pairs[k] {
		if s.admitted >= s.max {
			if !s.namespaces[k.namespace] {
				k.namespace = Other
			}
			k.workload = Other
		} else {
			s.admitted++
			s.namespaces[k.namespace] = true
		}
	}
	if s.pairs[k] {
		return k
	}
	s.pairs[k] = true
	ns, wl := k.namespace, k.workload
	for _, o := range outcomes {
		s.coldStarts.WithLabelValues(ns, wl, string(o))
	}
	for _, im := range images {
		s.ready.WithLabelValues(ns, wl, im)
	}
	for _, p := range trace.Phases {
		s.critical.WithLabelValues(ns, wl, string(p))
		s.busy.WithLabelValues(ns, wl, string(p))
	}
	for _, w := range withs {
		s.contention.WithLabelValues(ns, wl, w)
	}
	for _, kind := range kinds {
		s.read.WithLabelValues(ns, wl, string(kind))
	}
	for _, v := range []*prometheus.CounterVec{s.pullBytes, s.download, s.missed} {
		v.WithLabelValues(ns, wl)
	}
	s.pull.WithLabelValues(ns, wl)
	s.gpu.WithLabelValues(ns, wl)
	return k
}

// observe counts one trace.
func (s *starts) observe(t *trace.Trace) {
	k := key{namespace: t.Workload.Namespace, workload: WorkloadName(t.Workload.Image)}
	if k.namespace == "" {
		k.namespace = s.namespace
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k = s.admit(k)
	ns, wl := k.namespace, k.workload
	s.coldStarts.WithLabelValues(ns, wl, string(t.Outcome)).Inc()
	for _, p := range t.Phases {
		s.critical.WithLabelValues(ns, wl, string(p.Name)).Add(p.Critical.Seconds())
		s.busy.WithLabelValues(ns, wl, string(p.Name)).Add(p.Busy.Seconds())
	}
	image := ImagePresent
	if p := t.Pull; p != nil {
		var bytes int64
		for _, l := range p.Layers {
			bytes += l.Bytes
		}
		if bytes > 0 {
			image = ImagePulled
		}
		s.pullBytes.WithLabelValues(ns, wl).Add(float64(bytes))
		s.pull.WithLabelValues(ns, wl).Observe((p.End - p.Start).Seconds())
		var others []trace.Interval
		for _, ov := range p.Overlaps {
			others = append(others, ov.Intervals...)
		}
		s.contention.WithLabelValues(ns, wl, WithPull).Add(trace.Total(trace.Union(others)).Seconds())
	}
	if t.Outcome == trace.OutcomeReady {
		s.ready.WithLabelValues(ns, wl, image).Observe(t.Duration.Seconds())
	}
	pull, okPull := t.Phase(trace.PhasePull)
	fetch, okFetch := t.Phase(trace.PhaseFetch)
	if okPull && okFetch {
		// The overlap of two unions: what each covers, less what both together cover.
		a, b := activity(pull), activity(fetch)
		both := trace.Total(a) + trace.Total(b) - trace.Total(trace.Union(append(slices.Clone(a), b...)))
		s.contention.WithLabelValues(ns, wl, WithDownload).Add(both.Seconds())
	}
	if okFetch {
		s.download.WithLabelValues(ns, wl).Add(float64(fetch.Bytes))
	}
	var missed float64
	for _, f := range t.Files {
		missed += float64(f.CacheMisses) * s.pageSize
		if slices.Contains(kinds, f.Kind) {
			s.read.WithLabelValues(ns, wl, string(f.Kind)).Add(float64(f.BytesRead + f.MappedBytes))
		}
	}
	s.missed.WithLabelValues(ns, wl).Add(missed)
	if g, ok := t.Phase(trace.PhaseGPU); ok {
		s.gpu.WithLabelValues(ns, wl).Observe(g.Span().Seconds())
	}
	// Digests of the workloads folded into Other mean nothing together.
	if d := t.Workload.ImageDigest; d != "" && d != s.digests[k] && wl != Other {
		if old := s.digests[k]; old != "" {
			s.firstStart.DeleteLabelValues(ns, wl, old)
		}
		s.digests[k] = d
		s.firstStart.WithLabelValues(ns, wl, d).Set(float64(t.Start.UnixNano()) / 1e9)
	}
}

// activity is a phase's activity intervals, or its span when none are recorded.
func activity(p trace.Phase) []trace.Interval {
	if len(p.Activity) > 0 {
		return trace.Union(slices.Clone(p.Activity))
	}
	return []trace.Interval{{Start: p.Start, End: p.End}}
}
