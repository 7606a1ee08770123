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

	// Cold starts of inference servers run from under a second (a warm small model) to
	// tens of minutes (a large image on a slow link).
	startBuckets = []float64{0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800}
	// GPU initialisation runs from milliseconds (a persistent driver) to minutes.
	gpuBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}
)

// desc builds a metric's description with the namespace and workload labels first.
func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(Prefix+name, help, append([]string{"namespace", "workload"}, labels...), nil)
}

var (
	startsDesc = desc("cold_starts_total",
		"Cold starts recorded, by how they ended: ready, exited (before ready), timeout, interrupted (the agent stopped), failed.", "outcome")
	readyDesc = desc("time_to_ready_seconds",
		"Time from a cold start's time zero (its image pull or its create) to ready, for starts that got ready; image says whether the start pulled its image or found it on the node.", "image")
	criticalDesc = desc("phase_critical_path_seconds_total",
		"Seconds of the cold starts' critical path attributed to each phase; the phases of one start add up to its duration.", "phase")
	busyDesc = desc("phase_busy_seconds_total",
		"Seconds each phase was active during the cold starts (phases overlap: the sum exceeds the duration).", "phase")
	pullBytesDesc = desc("pull_bytes_total",
		"Image layer bytes received by the pulls of the cold starts.")
	pullSecondsDesc = desc("pull_duration_seconds",
		"Duration of each cold start's image pull, from the request to the last layer's commit.")
	contentionDesc = desc("pull_contention_seconds_total",
		"Seconds during which a cold start's image pull shared the link: with other image pulls on the node, or with the workload's own model download.", "with")
	downloadDesc = desc("model_download_bytes_total",
		"Bytes the workloads received from peers other than the registry during their cold starts (model downloads).")
	missDesc = desc("page_cache_miss_bytes_total",
		"Bytes of the files the workloads used that were read from storage into the page cache during their cold starts.")
	readDesc = desc("file_read_bytes_total",
		"Bytes the workloads read from files during their cold starts, through read syscalls and page faults on mappings, by kind of file.", "kind")
	gpuDesc = desc("gpu_init_duration_seconds",
		"Duration of the GPU phase of the cold starts that used an accelerator: from the first device open to the last driver call or ioctl.")
	digestDesc = desc("image_first_start_timestamp_seconds",
		"Unix time of the first cold start on this node of the workload's current image digest; one series per workload, replaced when the digest changes (a deploy).", "digest")
)

// key is a (namespace, workload) pair.
type key struct{ namespace, workload string }

// observation is what one trace adds to its workload's series: a few numbers, so that
// the trace itself is not kept.
type observation struct {
	outcome          trace.Outcome
	ready            float64   // seconds, when the outcome is ready
	image            int       // index in images
	critical, busy   []float64 // by trace.Phases
	pulled           bool
	pullBytes        float64
	pullSeconds      float64
	contention       [2]float64 // by withs
	download, missed float64
	read             [3]float64 // by kinds
	gpu              float64
	hasGPU           bool
	digest           string
	startUnix        float64
}

// series holds the cumulative values of one pair.
type series struct {
	key
	// exposed says that a scrape has seen the pair's series at zero. Until then its
	// observations wait in pending: a counter first scraped at 1 would never show its
	// first increase in Prometheus' increase() and rate(), and most workloads start once
	// per node.
	exposed bool
	pending []observation

	starts           [5]float64 // by outcomes
	ready            [2]histogram
	critical, busy   []float64 // by trace.Phases
	pullBytes        float64
	pull             histogram
	contention       [2]float64
	download, missed float64
	read             [3]float64
	gpu              histogram
	digest           string
	firstStart       float64
}

type histogram struct {
	counts []uint64 // per bucket, not cumulative; one more for +Inf
	count  uint64
	sum    float64
}

func (h *histogram) observe(bounds []float64, v float64) {
	if h.counts == nil {
		h.counts = make([]uint64, len(bounds)+1)
	}
	i, _ := slices.BinarySearch(bounds, v) // the first bound >= v: le is inclusive
	h.counts[i]++
	h.count++
	h.sum += v
}

func (h *histogram) metric(d *prometheus.Desc, bounds []float64, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(bounds))
	var cum uint64
	for i, b := range bounds {
		if h.counts != nil {
			cum += h.counts[i]
		}
		buckets[b] = cum
	}
	return prometheus.MustNewConstHistogram(d, h.count, h.sum, buckets, labels...)
}

// starts is the collector of the per-trace metrics.
type starts struct {
	namespace string // for containers without a Kubernetes namespace
	max       int
	pageSize  float64

	mu     sync.Mutex
	series map[key]*series
	order  []*series // in admission order, for a stable exposition
	// admitted counts the pairs with series of their own, namespaces their namespaces.
	admitted   int
	namespaces map[string]bool
}

func newStarts(namespace string, max int) *starts {
	return &starts{namespace: namespace, max: max, pageSize: float64(os.Getpagesize()), series: map[key]*series{}, namespaces: map[string]bool{}}
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

// admit returns the series of a pair, made at zero if new, called with s.mu held. Past
// s.max pairs, a new workload is counted as Other, in its namespace when an admitted pair
// has that namespace and else in Other too: at most max+1 namespaces and 2*max+1 pairs.
func (s *starts) admit(k key) *series {
	if sr := s.series[k]; sr != nil {
		return sr
	}
	if s.admitted >= s.max {
		if !s.namespaces[k.namespace] {
			k.namespace = Other
		}
		k.workload = Other
		if sr := s.series[k]; sr != nil {
			return sr
		}
	} else {
		s.admitted++
		s.namespaces[k.namespace] = true
	}
	sr := &series{key: k, critical: make([]float64, len(trace.Phases)), busy: make([]float64, len(trace.Phases))}
	s.series[k] = sr
	s.order = append(s.order, sr)
	return sr
}

func (s *starts) observe(t *trace.Trace) {
	k := key{namespace: t.Workload.Namespace, workload: WorkloadName(t.Workload.Image)}
	if k.namespace == "" {
		k.namespace = s.namespace
	}
	o := s.measure(t)
	s.mu.Lock()
	defer s.mu.Unlock()
	sr := s.admit(k)
	if sr.exposed {
		sr.apply(o)
	} else {
		sr.pending = append(sr.pending, o)
	}
}

// measure reads what a trace adds to the metrics.
func (s *starts) measure(t *trace.Trace) observation {
	o := observation{outcome: t.Outcome, digest: t.Workload.ImageDigest, startUnix: float64(t.Start.UnixNano()) / 1e9,
		critical: make([]float64, len(trace.Phases)), busy: make([]float64, len(trace.Phases))}
	if t.Outcome == trace.OutcomeReady {
		o.ready = t.Duration.Seconds()
	}
	for _, p := range t.Phases {
		if i := slices.Index(trace.Phases, p.Name); i >= 0 {
			o.critical[i] += p.Critical.Seconds()
			o.busy[i] += p.Busy.Seconds()
		}
	}
	o.image = 1
	if p := t.Pull; p != nil {
		for _, l := range p.Layers {
			o.pullBytes += float64(l.Bytes)
		}
		o.pulled = true
		o.pullSeconds = (p.End - p.Start).Seconds()
		if o.pullBytes > 0 {
			o.image = 0
		}
		var others []trace.Interval
		for _, ov := range p.Overlaps {
			others = append(others, ov.Intervals...)
		}
		o.contention[0] = trace.Total(trace.Union(others)).Seconds()
	}
	pull, okPull := t.Phase(trace.PhasePull)
	fetch, okFetch := t.Phase(trace.PhaseFetch)
	if okPull && okFetch {
		// The overlap of two unions: what each covers, less what both together cover.
		a, b := activity(pull), activity(fetch)
		o.contention[1] = (trace.Total(a) + trace.Total(b) - trace.Total(trace.Union(append(slices.Clone(a), b...)))).Seconds()
	}
	if okFetch {
		o.download = float64(fetch.Bytes)
	}
	for _, f := range t.Files {
		o.missed += float64(f.CacheMisses) * s.pageSize
		if i := slices.Index(kinds, f.Kind); i >= 0 {
			o.read[i] += float64(f.BytesRead + f.MappedBytes)
		}
	}
	if g, ok := t.Phase(trace.PhaseGPU); ok {
		o.hasGPU, o.gpu = true, g.Span().Seconds()
	}
	return o
}

// activity is a phase's activity intervals, or its span when none are recorded.
func activity(p trace.Phase) []trace.Interval {
	if len(p.Activity) > 0 {
		return trace.Union(slices.Clone(p.Activity))
	}
	return []trace.Interval{{Start: p.Start, End: p.End}}
}

func (sr *series) apply(o observation) {
	sr.starts[slices.Index(outcomes, o.outcome)]++
	if o.outcome == trace.OutcomeReady {
		sr.ready[o.image].observe(startBuckets, o.ready)
	}
	for i := range o.critical {
		sr.critical[i] += o.critical[i]
		sr.busy[i] += o.busy[i]
	}
	if o.pulled {
		sr.pullBytes += o.pullBytes
		sr.pull.observe(startBuckets, o.pullSeconds)
	}
	for i := range o.contention {
		sr.contention[i] += o.contention[i]
	}
	sr.download += o.download
	sr.missed += o.missed
	for i := range o.read {
		sr.read[i] += o.read[i]
	}
	if o.hasGPU {
		sr.gpu.observe(gpuBuckets, o.gpu)
	}
	if o.digest != "" && o.digest != sr.digest && sr.workload != Other {
		sr.digest, sr.firstStart = o.digest, o.startUnix
	}
}

func (s *starts) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{startsDesc, readyDesc, criticalDesc, busyDesc, pullBytesDesc, pullSecondsDesc,
		contentionDesc, downloadDesc, missDesc, readDesc, gpuDesc, digestDesc} {
		ch <- d
	}
}

func (s *starts) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sr := range s.order {
		if sr.exposed {
			for _, o := range sr.pending {
				sr.apply(o)
			}
			sr.pending = nil
		}
		sr.collect(ch)
		sr.exposed = true
	}
}

func (sr *series) collect(ch chan<- prometheus.Metric) {
	ns, wl := sr.namespace, sr.workload
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, append([]string{ns, wl}, labels...)...)
	}
	for i, oc := range outcomes {
		counter(startsDesc, sr.starts[i], string(oc))
	}
	for i, im := range images {
		ch <- sr.ready[i].metric(readyDesc, startBuckets, ns, wl, im)
	}
	for i, p := range trace.Phases {
		counter(criticalDesc, sr.critical[i], string(p))
		counter(busyDesc, sr.busy[i], string(p))
	}
	counter(pullBytesDesc, sr.pullBytes)
	ch <- sr.pull.metric(pullSecondsDesc, startBuckets, ns, wl)
	for i, w := range withs {
		counter(contentionDesc, sr.contention[i], w)
	}
	counter(downloadDesc, sr.download)
	counter(missDesc, sr.missed)
	for i, k := range kinds {
		counter(readDesc, sr.read[i], string(k))
	}
	ch <- sr.gpu.metric(gpuDesc, gpuBuckets, ns, wl)
	if sr.digest != "" {
		ch <- prometheus.MustNewConstMetric(digestDesc, prometheus.GaugeValue, sr.firstStart, ns, wl, sr.digest)
	}
}
