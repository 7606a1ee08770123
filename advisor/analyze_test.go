package advisor

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/coldtrace/coldtrace/trace"
)

// jitter scales a run's phases by a few percent, so that runs differ as real ones do.
func jitter(i int) float64 { return 1 + 0.02*float64(i%5-2) }

func TestPullDominatedRanksPrePullFirst(t *testing.T) {
	var traces []*trace.Trace
	for i := range 5 {
		j := jitter(i)
		tr := genTrace(t, "p", step{trace.PhasePull, 60 * j, 6 << 30}, step{trace.PhaseUnpack, 5 * j, 6 << 30},
			step{trace.PhaseCreate, 1, 0}, step{trace.PhaseInit, 4, 0}, step{trace.PhaseLoad, 5, 1 << 30}, step{trace.PhaseCompute, 5, 0})
		tr.Pull = &trace.Pull{Ref: testImage, Layers: []trace.Layer{{Digest: testLayer, Size: 6 << 30}}}
		traces = append(traces, tr)
	}
	a := mustAnalyze(t, traces, Options{Seed: 1})
	top := a.Recommendations[0]
	if top.ID != "prepull-image" {
		t.Fatalf("first recommendation is %s, want prepull-image:%s", top.ID, ids(a.Recommendations))
	}
	// The pull and unpack are 65 s of an 80 s critical path in the median run.
	if !near(top.Saved.Value, 65, 0.5) || top.Saved.Lo > top.Saved.Value || top.Saved.Hi < top.Saved.Value {
		t.Errorf("saving %+v, want about 65 s", top.Saved)
	}
	if len(top.Evidence) == 0 || top.Action == "" {
		t.Errorf("no evidence or action: %+v", top)
	}
	// Nothing of the image was read: lazy pulling pays too.
	if !hasRec(a, "lazy-pull") || !hasRec(a, "readiness-timeout") {
		t.Errorf("missing lazy-pull or readiness-timeout:%s", ids(a.Recommendations))
	}
	if last := a.Recommendations[len(a.Recommendations)-1]; last.ID != "readiness-timeout" {
		t.Errorf("readiness-timeout should come last:%s", ids(a.Recommendations))
	}
	pre := scenario(a, ScenarioPrePull)
	if !near(pre.Predicted.Value, 15, 0.5) {
		t.Errorf("predicted with a pre-pulled image: %+v", pre)
	}
}

func TestLoadDominatedRanksWarmingFirst(t *testing.T) {
	var traces []*trace.Trace
	for i := range 5 {
		j := jitter(i)
		tr := genTrace(t, "l", step{trace.PhasePull, 2, 1 << 20}, step{trace.PhaseInit, 3, 0}, step{trace.PhaseLoad, 40 * j, 40e9}, step{trace.PhaseGPU, 2, 0})
		// 40 GB missed at the default 1 GB/s SSD: the whole load phase is disk time.
		tr.Files = append(tr.Files, trace.File{Path: "/models/m.safetensors", Size: 40e9, Kind: trace.KindWeights, CacheMisses: 40e9 / pageSize,
			Ranges: []trace.Range{{Off: 0, Len: 40e9, First: sec(5), Via: trace.AccessMmap}}})
		traces = append(traces, tr)
	}
	a := mustAnalyze(t, traces, Options{Seed: 1})
	top := a.Recommendations[0]
	if top.ID != "warm-page-cache" && top.ID != "stage-models" {
		t.Fatalf("first recommendation is %s:%s", top.ID, ids(a.Recommendations))
	}
	if !near(top.Saved.Value, 40, 1) {
		t.Errorf("saving %+v, want about 40 s", top.Saved)
	}
	g := gap(a, trace.PhaseLoad)
	if g.Limit != "disk+page-cache" || !near(g.Efficiency, 1, 0.05) {
		t.Errorf("load's speed-of-light gap: %+v", g)
	}
}

func TestFetchDominatedRanksStagingFirst(t *testing.T) {
	var traces []*trace.Trace
	for i := range 3 {
		// 10 GB downloaded in about 100 s; read locally at 1 GB/s it takes 10 s.
		tr := genTrace(t, "f", step{trace.PhaseInit, 2, 0}, step{trace.PhaseFetch, 100 * jitter(i), 10e9}, step{trace.PhaseLoad, 5, 0})
		traces = append(traces, tr)
	}
	a := mustAnalyze(t, traces, Options{})
	top := a.Recommendations[0]
	if top.ID != "stage-models" || !near(top.Saved.Value, 88, 0.5) { // median run: 98 s fetch, 10 s local read
		t.Fatalf("first recommendation %s saving %+v:%s", top.ID, top.Saved, ids(a.Recommendations))
	}
	g := gap(a, trace.PhaseFetch)
	// About 100 MB/s (96 to 100 s) on a 10 Gb/s NIC: the path delivered that, not the NIC's 1.25 GB/s,
	// so the link is measured at the median run's rate, and the runs' spread bounds it.
	l := a.Limits
	if l.LinkFrom != SourceMeasured || !near(l.Link, 10e9/98, 1e3) || !near(l.LinkRange[0], 10e9/100, 1e3) ||
		!near(l.LinkRange[1], 10e9/96, 1e3) || l.NIC != 10e9/8 {
		t.Errorf("limits %+v, want the link measured at 10 GB / 98 s, from 10 GB / 100 s to 10 GB / 96 s, NIC 1.25 GB/s", l)
	}
	if g.Limit != "link" || !near(g.Efficiency, 1, 1e-9) {
		t.Errorf("fetch gap %+v", g)
	}
}

func TestLinkFlagOverridesHost(t *testing.T) {
	tr := genTrace(t, "f", step{trace.PhaseFetch, 10, 1e9})
	a := mustAnalyze(t, []*trace.Trace{tr}, Options{Limits: Limits{Link: 1e8}})
	if a.Limits.Link != 1e8 || !near(gap(a, trace.PhaseFetch).Efficiency, 1, 1e-9) {
		t.Errorf("limits %+v, gap %+v", a.Limits, gap(a, trace.PhaseFetch))
	}
}

func TestContention(t *testing.T) {
	tr := genTrace(t, "c", step{trace.PhaseInit, 1, 0})
	// Pull [0, 30 s) and fetch [10, 40 s) at equal rates: they shared the link for 20 s.
	tr.Phases = []trace.Phase{
		{Name: trace.PhasePull, Start: 0, End: sec(30), Busy: sec(30), Critical: sec(30), Bytes: 3e9},
		{Name: trace.PhaseFetch, Start: sec(10), End: sec(40), Busy: sec(30), Critical: sec(10), Bytes: 3e9},
	}
	tr.Critical = []trace.Segment{{Phase: trace.PhasePull, Start: 0, End: sec(30)}, {Phase: trace.PhaseFetch, Start: sec(30), End: sec(40)}}
	tr.Duration = sec(40)
	tr.Ready.At = tr.Duration
	if err := tr.Validate(); err != nil {
		t.Fatal(err)
	}
	a := mustAnalyze(t, []*trace.Trace{tr}, Options{})
	if len(a.Contention) != 1 || !near(a.Contention[0].Overlap.Value, 20, 1e-9) || !near(a.Contention[0].Gain.Value, 10, 1e-9) {
		t.Fatalf("contention %+v", a.Contention)
	}
	if !hasRec(a, "avoid-link-contention") {
		t.Errorf("no contention recommendation:%s", ids(a.Recommendations))
	}
}

func TestGPUScenariosNeedEvidence(t *testing.T) {
	tr := genTrace(t, "g", step{trace.PhaseInit, 1, 0}, step{trace.PhaseGPU, 5, 0})
	a := mustAnalyze(t, []*trace.Trace{tr}, Options{})
	if s := scenario(a, ScenarioPersistence).Saved.Value; s != 0 || hasRec(a, "gpu-persistence") {
		t.Errorf("GPU savings without any driver call timings: %v", s)
	}
	tr.Host.Persistence = "disabled"
	tr.GPU.Calls = []trace.Call{
		{Name: "cuInit", Start: sec(1), End: sec(3)},
		{Name: "cuDevicePrimaryCtxRetain", Start: sec(3), End: sec(5)},
	}
	a = mustAnalyze(t, []*trace.Trace{tr}, Options{})
	if s := scenario(a, ScenarioPersistence).Saved.Value; !near(s, 2*PersistenceShare, 1e-9) {
		t.Errorf("persistence saving %v", s)
	}
	if s := scenario(a, ScenarioLazyCUDA).Saved.Value; !near(s, 2*LazyCUDAShare, 1e-9) {
		t.Errorf("lazy loading saving %v", s)
	}
	if !hasRec(a, "gpu-persistence") || !hasRec(a, "cuda-lazy-loading") {
		t.Errorf("missing GPU recommendations:%s", ids(a.Recommendations))
	}
	tr.Host.Persistence = "enabled"
	if s := scenario(mustAnalyze(t, []*trace.Trace{tr}, Options{}), ScenarioPersistence).Saved.Value; s != 0 {
		t.Errorf("persistence saving with persistence on: %v", s)
	}
	// A CUDA 12 runtime may predate lazy loading by default; CUDA 13's has it.
	tr.Files = append(tr.Files, trace.File{Path: "/usr/local/cuda/lib64/libcudart.so.12", Kind: trace.KindLibrary})
	if s := scenario(mustAnalyze(t, []*trace.Trace{tr}, Options{}), ScenarioLazyCUDA).Saved.Value; s == 0 {
		t.Error("no lazy loading saving with a CUDA 12 runtime")
	}
	tr.Files[len(tr.Files)-1].Path = "/opt/venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcudart.so.13"
	if a := mustAnalyze(t, []*trace.Trace{tr}, Options{}); scenario(a, ScenarioLazyCUDA).Saved.Value != 0 || hasRec(a, "cuda-lazy-loading") {
		t.Error("lazy loading recommended with a CUDA 13 runtime, where it is the default")
	}
}

func TestAnalyzeIsReproducible(t *testing.T) {
	var traces []*trace.Trace
	for i := range 7 {
		traces = append(traces, genTrace(t, "r", step{trace.PhaseInit, 1 + float64(i), 0}, step{trace.PhaseLoad, 3, 0}))
	}
	a1 := mustAnalyze(t, traces, Options{Seed: 42})
	a2 := mustAnalyze(t, traces, Options{Seed: 42})
	if !reflect.DeepEqual(a1, a2) {
		t.Fatal("same seed, different advice")
	}
	s := a1.Phases[0].Critical
	if s.Median.Value != 4 || s.Median.Lo > 4 || s.Median.Hi < 4 || s.P99.Value != 7 || s.N != 7 {
		t.Errorf("init critical summary %+v", s)
	}
}

func hasRec(a *Advice, id string) bool {
	_, ok := rec(a, id)
	return ok
}

func scenario(a *Advice, name string) Scenario {
	for _, s := range a.WhatIf {
		if s.Name == name {
			return s
		}
	}
	return Scenario{}
}

func gap(a *Advice, p trace.PhaseName) Gap {
	for _, g := range a.SpeedOfLight {
		if g.Phase == p {
			return g
		}
	}
	return Gap{}
}

func TestFormat(t *testing.T) {
	var traces []*trace.Trace
	for i := range 3 {
		traces = append(traces, genTrace(t, "t", step{trace.PhasePull, 30 * jitter(i), 3e9}, step{trace.PhaseLoad, 10, 1e9}))
	}
	a := mustAnalyze(t, traces, Options{})
	var text, js bytes.Buffer
	if err := a.Format(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"time to ready: median 39.40 s", "pull", "speed of light", "what if", " 1. Pre-pull the image: saves 29.40 s", "action:"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}
	if err := a.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Advice
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Recommendations[0].ID != "prepull-image" {
		t.Errorf("JSON does not round-trip: %v", err)
	}
}

func TestLazyPullOnlyWhenMostBytesAreUnread(t *testing.T) {
	mk := func(read int64) *Advice {
		tr := genTrace(t, "lp", step{trace.PhasePull, 30, 1e9}, step{trace.PhaseInit, 5, 0})
		tr.Pull = &trace.Pull{Ref: testImage, Layers: []trace.Layer{{Index: 1, Digest: testLayer, Size: 1e9}}}
		tr.Files = append(tr.Files, trace.File{Path: "/opt/app.bin", Size: read, Kind: trace.KindOther,
			Layer:  &trace.LayerRef{Index: 1, Digest: testLayer, Where: "image"},
			Ranges: []trace.Range{{Off: 0, Len: read, First: sec(31), Via: trace.AccessRead}}})
		return mustAnalyze(t, []*trace.Trace{tr}, Options{})
	}
	if a := mk(8e8); hasRec(a, "lazy-pull") {
		t.Errorf("lazy pull recommended with 80%% of the image read")
	}
	a := mk(1e8)
	var rec Recommendation
	for _, r := range a.Recommendations {
		if r.ID == "lazy-pull" {
			rec = r
		}
	}
	// 10% read: a lazy pull would fetch only that, saving 90% of the 30 s pull.
	if !near(rec.Saved.Value, 27, 1e-6) || len(rec.Evidence) != 2 || !strings.Contains(rec.Evidence[1], "layer 1") {
		t.Errorf("lazy-pull recommendation %+v", rec)
	}
}

// The median of an even number of runs is the midpoint of the middle two, so that a
// scenario's median prediction and median saving add up to the median start: on two
// PyTorch start-ups recorded on an H200 host (7.98 s cold, 4.76 s warm), the lower middle
// value showed "predicted 1.28 s, saves 0.00 s" for the page cache.
func TestMedianOfEvenRuns(t *testing.T) {
	for _, c := range []struct {
		x    []float64
		p    float64
		want float64
	}{
		{[]float64{7.98, 4.76}, 0.5, 6.37},
		{[]float64{3, 1, 2}, 0.5, 2},
		{[]float64{4, 1, 3, 2}, 0.5, 2.5},
		{[]float64{4, 1, 3, 2}, 0.9, 4},
		{nil, 0.5, 0},
	} {
		if got := quantile(c.p, c.x); !near(got, c.want, 1e-9) {
			t.Errorf("quantile(%v, %v) = %v, want %v", c.p, c.x, got, c.want)
		}
	}
}
