package advisor

import (
	"math"
	"regexp"
	"strconv"

	"github.com/coldtrace/coldtrace/trace"
)

// The what-if scenarios. Each removes or shortens parts of a trace's critical path; the
// savings are computed per trace and summarised across runs.
const (
	ScenarioPrePull     = "pre-pulled image"
	ScenarioStaged      = "model files staged locally"
	ScenarioPageCache   = "hot set in the page cache"
	ScenarioPersistence = "GPU persistence mode"
	ScenarioLazyCUDA    = "lazy CUDA module loading"
	ScenarioCombined    = "all combined"
)

var scenarioOrder = []string{ScenarioPrePull, ScenarioStaged, ScenarioPageCache, ScenarioPersistence, ScenarioLazyCUDA, ScenarioCombined}

// The GPU factors, applied only where the trace has the evidence (uprobe timings of the
// calls). With persistence mode off, cuInit pays for bringing the device out of its
// uninitialised state, which nvidia-persistenced keeps done: we take PersistenceShare of
// cuInit's duration as saved. With eager loading, context creation loads every module of
// every CUDA library mapped; lazy loading defers most of them: we take LazyCUDAShare of
// the context-creation calls' duration as saved.
const (
	PersistenceShare = 0.9
	LazyCUDAShare    = 0.5
)

// Scenario is a predicted cold start under one change.
type Scenario struct {
	Name string `json:"name"`
	// Predicted is the predicted critical-path length, Saved what it takes away (seconds).
	Predicted Estimate `json:"predicted_s"`
	Saved     Estimate `json:"saved_s"`
}

// savings returns the seconds each scenario takes off r's critical path.
//
// A pre-pull takes the pull and unpack off it and gives the model download the link to
// itself (the contention gain), but leaves the image's files cold: in the traced start the
// unpack had just written them, so its reads hit the page cache, while on a node that
// pulled the image earlier (and then ran other work, or rebooted) they come from disk. The
// page-cache scenario is what warming the hot set saves on such a node: those reads and
// the trace's own misses. All combined is `coldtrace warm`: image present, model staged,
// the hot set and the staged model in the page cache, so the staged model reads at
// page-cache speed.
func (r run) savings() map[string]float64 {
	_, _, gain := r.contention()
	cold := r.coldImageCost()
	s := map[string]float64{
		ScenarioPrePull:     r.critical[trace.PhasePull] + r.critical[trace.PhaseUnpack] + gain - cold,
		ScenarioStaged:      r.stagedSaving(r.lim.Disk),
		ScenarioPageCache:   r.pageCacheSaving() + cold,
		ScenarioPersistence: r.persistenceSaving(),
		ScenarioLazyCUDA:    r.lazyCUDASaving(),
	}
	gpu := math.Min(s[ScenarioPersistence]+s[ScenarioLazyCUDA], r.critical[trace.PhaseGPU])
	// The scenarios shorten different phases' parts of the critical path, so they add up;
	// staging takes the whole download off, the contention gain with it.
	s[ScenarioCombined] = math.Min(r.total, r.critical[trace.PhasePull]+r.critical[trace.PhaseUnpack]+
		r.stagedSaving(r.lim.PageCache)+r.pageCacheSaving()+gpu)
	return s
}

// stagedSaving replaces the fetch phase's network time by reading the same bytes locally
// at rate: its critical share shrinks in the ratio of the two times.
func (r run) stagedSaving(rate float64) float64 {
	crit := r.critical[trace.PhaseFetch]
	busy, bytes := r.busy(trace.PhaseFetch)
	if crit == 0 || busy == 0 {
		return 0
	}
	local := float64(bytes) / rate
	return crit * (1 - math.Min(1, local/busy))
}

// coldImageCost is the time to read from disk the bytes of the image's files that the
// start read from the page cache (read or mapped, less the pages it missed anyway), and
// the latency of each such file that missed nothing, at most the critical time of init
// and load, which those reads lengthen.
func (r run) coldImageCost() float64 {
	var hit, files int64
	for _, f := range r.t.Files {
		if f.Layer == nil || f.Kind == trace.KindDevice {
			continue
		}
		var touched int64
		for _, rg := range f.Ranges {
			touched += rg.Len
		}
		hit += max(0, touched-f.CacheMisses*pageSize)
		if touched > 0 && f.CacheMisses == 0 {
			files++
		}
	}
	cost := float64(hit)/r.lim.Disk + float64(files)*r.lim.DiskLatency
	return math.Min(cost, r.critical[trace.PhaseInit]+r.critical[trace.PhaseLoad])
}

// pageCacheSaving removes the time spent reading missed pages from disk: misses on
// weight files come off the load phase, misses on other files off init, each at most
// that phase's critical share.
func (r run) pageCacheSaving() float64 {
	weights, other := r.missBytes()
	return math.Min(r.critical[trace.PhaseLoad], float64(weights)/r.lim.Disk) +
		math.Min(r.critical[trace.PhaseInit], float64(other)/r.lim.Disk)
}

// missBytes counts the bytes read from storage into the page cache, for weight files
// and for the others (device nodes excluded).
func (r run) missBytes() (weights, other int64) {
	for _, f := range r.t.Files {
		switch f.Kind {
		case trace.KindDevice:
		case trace.KindWeights:
			weights += f.CacheMisses * pageSize
		default:
			other += f.CacheMisses * pageSize
		}
	}
	return weights, other
}

func (r run) persistenceSaving() float64 {
	if r.t.Host.Persistence == "enabled" {
		return 0
	}
	return math.Min(r.critical[trace.PhaseGPU], PersistenceShare*r.longestCall("cuInit"))
}

func (r run) lazyCUDASaving() float64 {
	if r.lazyByDefault() {
		return 0
	}
	ctx := math.Max(r.longestCall("cuDevicePrimaryCtxRetain"), r.longestCall("cuCtxCreate"))
	return math.Min(r.critical[trace.PhaseGPU], LazyCUDAShare*ctx)
}

// longestCall is the longest duration of the named driver call in seconds: processes
// initialise in parallel, so the longest is the one that delays readiness.
func (r run) longestCall(name string) float64 {
	var d float64
	for _, c := range r.t.GPU.Calls {
		if c.Name == name && c.End > c.Start {
			d = math.Max(d, secs(c.End-c.Start))
		}
	}
	return d
}

// whatIf summarises the scenarios across runs. Each prediction's interval is the
// bootstrap interval of its median widened by the uncertainty of the disk: the medians of
// the same predictions with the slow ends of Limits.DiskRange and LatencyRange, and with
// their fast ends.
func whatIf(runs []run, b bootstrap) []Scenario {
	saved := map[string][]float64{}
	predicted := map[string][]float64{}
	ends := map[string][2][]float64{}
	for _, r := range runs {
		for name, s := range r.savings() {
			saved[name] = append(saved[name], s)
			predicted[name] = append(predicted[name], r.total-s)
		}
		for i, disk := range r.lim.DiskRange {
			at := r
			at.lim.Disk, at.lim.DiskLatency = disk, r.lim.LatencyRange[1-i]
			for name, s := range at.savings() {
				e := ends[name]
				e[i] = append(e[i], r.total-s)
				ends[name] = e
			}
		}
	}
	var out []Scenario
	for _, name := range scenarioOrder {
		sc := Scenario{Name: name, Predicted: b.estimate(0.5, predicted[name]), Saved: b.estimate(0.5, saved[name])}
		total := sc.Predicted.Value + sc.Saved.Value
		for _, e := range ends[name] {
			p := median(e)
			sc.Predicted.Lo, sc.Predicted.Hi = min(sc.Predicted.Lo, p), max(sc.Predicted.Hi, p)
			sc.Saved.Lo, sc.Saved.Hi = min(sc.Saved.Lo, total-p), max(sc.Saved.Hi, total-p)
		}
		out = append(out, sc)
	}
	return out
}

// cudartRE matches the CUDA runtime library and captures its major version.
var cudartRE = regexp.MustCompile(`(?:^|/)libcudart\.so\.(\d+)`)

// lazyByDefault reports whether the workload mapped a CUDA runtime of major version 13 or
// later, which loads modules lazily unless told otherwise (12.2 made it the default; a
// 12.x runtime's minor version is not in its file name, so 12 counts as unknown). Seen on
// an H200 host: PyTorch 2.11 with libcudart.so.13, where the setting would change nothing.
func (r run) lazyByDefault() bool {
	for _, f := range r.t.Files {
		if m := cudartRE.FindStringSubmatch(f.Path); m != nil {
			if v, err := strconv.Atoi(m[1]); err == nil && v >= 13 {
				return true
			}
		}
	}
	return false
}
