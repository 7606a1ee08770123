package advisor

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/coldtrace/coldtrace/trace"
)

// Recommendation is one thing to do, with what it saves and why we think so.
type Recommendation struct {
	ID    string `json:"id"`
	Title string `json:"title"`
	// Saved is the median across runs of the critical-path seconds it saves, with a
	// bootstrap interval.
	Saved    Estimate `json:"saved_s"`
	Evidence []string `json:"evidence"`
	Action   string   `json:"action"`
}

// minSaving drops recommendations that would not be noticed.
const minSaving = 0.01

// Readiness timeouts are the p99 of time to ready (its interval's upper end) with this
// margin, rounded up to whole seconds.
const readinessMargin = 1.25

// lazyPullThreshold is the share of pulled bytes read below which lazy pulling pays.
const lazyPullThreshold = 0.5

func recommend(runs []run, a *Advice, b bootstrap) []Recommendation {
	per := func(f func(r run) float64) []float64 {
		out := make([]float64, len(runs))
		for i, r := range runs {
			out[i] = f(r)
		}
		return out
	}
	saving := func(name string) []float64 { return per(func(r run) float64 { return r.savings()[name] }) }
	crit := func(ps ...trace.PhaseName) float64 {
		return median(per(func(r run) float64 {
			var s float64
			for _, p := range ps {
				s += r.critical[p]
			}
			return s
		}))
	}
	total := median(per(func(r run) float64 { return r.total }))
	share := func(s float64) string {
		return fmt.Sprintf("%.1f s of the %.1f s critical path (%.0f%%)", s, total, 100*s/max(total, 1e-9))
	}
	w := runs[0].t.Workload

	var recs []Recommendation
	add := func(id, title string, saved []float64, action string, evidence ...string) {
		if median(saved) >= minSaving {
			recs = append(recs, Recommendation{ID: id, Title: title, Saved: b.estimate(0.5, saved), Evidence: evidence, Action: action})
		}
	}

	phaseBytes := func(p trace.PhaseName) float64 {
		return median(per(func(r run) float64 { _, b := r.busy(p); return float64(b) }))
	}
	disk := a.Limits.Disk

	add("prepull-image", "Pre-pull the image", saving(ScenarioPrePull),
		fmt.Sprintf("Pre-pull %s on the nodes before the workload is scheduled: write a manifest (coldtrace advise -o manifest.yaml) and run `coldtrace warm manifest.yaml`, or give it to the agent.", workloadName(w)),
		"pull and unpack on the critical path: "+share(crit(trace.PhasePull, trace.PhaseUnpack)),
		fmt.Sprintf("%s pulled at %s", bytesStr(phaseBytes(trace.PhasePull)), rateOf(a, trace.PhasePull)))
	fetched := phaseBytes(trace.PhaseFetch)
	add("stage-models", "Stage the model files on the node", saving(ScenarioStaged),
		"Stage the downloaded model files in the node's artifact store (the manifest's artifacts; `coldtrace warm`) and load them from the local path instead of the network.",
		"model download on the critical path: "+share(crit(trace.PhaseFetch)),
		fmt.Sprintf("%s downloaded at %s; read locally at %s/s it would take %.1f s", bytesStr(fetched), rateOf(a, trace.PhaseFetch), bytesStr(disk), fetched/disk))
	weights := median(per(func(r run) float64 { wb, _ := r.missBytes(); return float64(wb) }))
	other := median(per(func(r run) float64 { _, o := r.missBytes(); return float64(o) }))
	add("warm-page-cache", "Warm the page cache with the hot set", saving(ScenarioPageCache),
		"Bring the manifest's hot set into the page cache before the start (`coldtrace warm manifest.yaml`), in first-access order.",
		"loading and init on the critical path: "+share(crit(trace.PhaseLoad, trace.PhaseInit)),
		fmt.Sprintf("%s of weights and %s of other files read from disk (page-cache misses, medians) at %s/s", bytesStr(weights), bytesStr(other), bytesStr(disk)))
	for _, c := range a.Contention {
		add("avoid-link-contention", "Stop the pull and the model download sharing the link", per(func(r run) float64 { _, _, g := r.contention(); return g }),
			"Do not pull and download at once: pre-pull the image, or give the model download priority (limit the pull's bandwidth while it runs).",
			fmt.Sprintf("pull and model download overlapped for %.1f s; the download had %.0f%% of the link", c.Overlap.Value, 100*c.FetchShare))
	}
	for _, c := range a.PullContention {
		add("avoid-pull-contention", "Keep other image pulls off the node while this image pulls", per(func(r run) float64 { po, _ := r.pullContention(); return po.gain }),
			fmt.Sprintf("Pre-pull %s before the workload is scheduled (coldtrace advise -o manifest.yaml, then `coldtrace warm manifest.yaml` on the nodes), or stagger the rollouts that pull onto the same nodes, or limit concurrent image pulls per node (kubelet serializeImagePulls: true, or maxParallelImagePulls) so that each pull has the link to itself.", workloadName(w)),
			pullContentionEvidence(c, len(runs), a.Limits.shared())...)
	}
	add("gpu-persistence", "Run the GPU driver in persistence mode", saving(ScenarioPersistence),
		"Run nvidia-persistenced on the node (or `nvidia-smi -pm 1`) so that cuInit does not initialise the device at every start.",
		fmt.Sprintf("persistence mode %q; cuInit took %.2f s (median); we count %.0f%% of it as device initialisation", runs[0].t.Host.Persistence, median(per(func(r run) float64 { return r.longestCall("cuInit") })), 100*PersistenceShare))
	add("cuda-lazy-loading", "Load CUDA modules lazily", saving(ScenarioLazyCUDA),
		"Set CUDA_MODULE_LOADING=LAZY in the container's environment (CUDA 11.7 and later; the default from 12.2).",
		fmt.Sprintf("context creation took %.2f s (median); lazy loading defers an estimated %.0f%% of it", median(per(func(r run) float64 {
			return math.Max(r.longestCall("cuDevicePrimaryCtxRetain"), r.longestCall("cuCtxCreate"))
		})), 100*LazyCUDAShare))
	if rec, ok := lazyPull(runs, b); ok {
		recs = append(recs, rec)
	}

	slices.SortStableFunc(recs, func(x, y Recommendation) int { return cmp.Compare(y.Saved.Value, x.Saved.Value) })
	timeout := math.Ceil(a.TimeToReady.P99.Hi * readinessMargin)
	recs = append(recs, Recommendation{
		ID:    "readiness-timeout",
		Title: "Size the start-up probe to the measured cold start",
		Evidence: []string{fmt.Sprintf("time to ready: median %.1f s, p99 %.1f s (95%% interval up to %.1f s) over %d runs",
			a.TimeToReady.Median.Value, a.TimeToReady.P99.Value, a.TimeToReady.P99.Hi, len(runs))},
		Action: fmt.Sprintf("Allow %.0f s before the first health check fails the container (startupProbe failureThreshold × periodSeconds ≥ %.0f): p99 with a %.0f%% margin. Revisit after applying the recommendations above.", timeout, timeout, 100*(readinessMargin-1)),
	})
	return recs
}

// pullContentionEvidence says which images pulled alongside, for how long, and how the
// bytes of the overlap split.
func pullContentionEvidence(c PullContention, runs int, link float64) []string {
	how := "estimated from the pull's average rate"
	if c.OwnBytesFrom == OwnBytesSamples {
		how = "counted on its registry connections"
	}
	ev := []string{
		fmt.Sprintf("other pulls downloaded during this image's download in %d of %d runs; overlap %.1f s (median over all runs)", c.Runs, runs, c.Overlap.Value),
		fmt.Sprintf("in the overlap this pull received %s (%s), the others %s: it had %.0f%% of the link (medians over contended runs)", bytesStr(c.OwnBytes), how, bytesStr(c.OtherBytes), 100*c.Share),
		// The gain assumes the shared link (or registry) was the bottleneck; how close
		// the pulls came to the link says how far to trust that.
		fmt.Sprintf("together they used %.0f%% of the link's %s/s then (median)", 100*c.LinkUse, bytesStr(link)),
	}
	for _, o := range c.Others[:min(3, len(c.Others))] {
		ev = append(ev, fmt.Sprintf("%s (namespace %s): %s over %.1f s, in %d runs (medians)", o.name(), o.Namespace, bytesStr(o.Bytes), o.Overlap, o.Runs))
	}
	return ev
}

// lazyPull warns when most pulled bytes are never read: a lazily pulled image would
// fetch only what is read, so the pull's critical time shrinks to the share read.
func lazyPull(runs []run, b bootstrap) (Recommendation, bool) {
	var fracs, saved []float64
	for _, r := range runs {
		layers := r.layerReads()
		if len(layers) == 0 {
			return Recommendation{}, false
		}
		var pulled, read int64
		for _, l := range layers {
			pulled, read = pulled+l.size, read+l.read
		}
		f := min(1, float64(read)/float64(max(pulled, 1)))
		fracs = append(fracs, f)
		saved = append(saved, (r.critical[trace.PhasePull]+r.critical[trace.PhaseUnpack])*(1-f))
	}
	if median(fracs) >= lazyPullThreshold {
		return Recommendation{}, false
	}
	evidence := []string{fmt.Sprintf("%.0f%% of the pulled bytes were read during the start (median over %d runs)", 100*median(fracs), len(runs))}
	layers := runs[0].layerReads()
	slices.SortStableFunc(layers, func(x, y layerRead) int { return cmp.Compare(y.size, x.size) })
	for _, l := range layers[:min(3, len(layers))] {
		evidence = append(evidence, fmt.Sprintf("layer %d (%.19s…): %s read of %s pulled", l.index, l.digest, bytesStr(float64(l.read)), bytesStr(float64(l.size))))
	}
	return Recommendation{
		ID:       "lazy-pull",
		Title:    "Most pulled bytes are never read: pull lazily",
		Saved:    b.estimate(0.5, saved),
		Evidence: evidence,
		Action:   "Convert the image for a lazy-pull snapshotter (eStargz, SOCI, Nydus or Overlaybd) and give it the hot set as its prefetch list: `coldtrace advise TRACE... --export estargz|soci|nydus|overlaybd --export-out FILE`.",
	}, true
}

// layerRead is one pulled layer: its size (compressed, as pulled) and the bytes read
// from its files during the start (uncompressed; so the share read is, if anything,
// overstated).
type layerRead struct {
	index      int
	digest     string
	size, read int64
}

func (r run) layerReads() []layerRead {
	if r.t.Pull == nil {
		return nil
	}
	var out []layerRead
	at := map[string]int{}
	for _, l := range r.t.Pull.Layers {
		at[l.Digest] = len(out)
		out = append(out, layerRead{index: l.Index, digest: l.Digest, size: l.Size})
	}
	for _, f := range r.t.Files {
		if f.Layer == nil || f.Layer.Where != "image" {
			continue
		}
		i, ok := at[f.Layer.Digest]
		if !ok {
			continue
		}
		for _, rg := range f.Ranges {
			out[i].read += rg.Len
		}
	}
	return out
}

func rateOf(a *Advice, p trace.PhaseName) string {
	for _, g := range a.SpeedOfLight {
		if g.Phase == p {
			return fmt.Sprintf("%s/s (%.0f%% of the %s's %s/s)", bytesStr(g.Throughput), 100*g.Efficiency, g.Limit, bytesStr(g.Bytes/max(g.Ideal, 1e-9)))
		}
	}
	return "an unknown rate"
}

// bytesStr prints a byte count with a decimal unit, as link and disk speeds are quoted.
func bytesStr(n float64) string {
	units := []string{"B", "kB", "MB", "GB", "TB"}
	i := 0
	for n >= 1000 && i < len(units)-1 {
		n /= 1000
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", n)
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}
