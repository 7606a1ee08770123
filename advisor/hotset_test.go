package advisor

import (
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/coldtrace/coldtrace/manifest"
	"github.com/coldtrace/coldtrace/trace"
)

// fiveRuns: a.safetensors read in every run, b.so in 3 of 5, c.py in 1, with first
// accesses that vary so that only the median orders them: c (0.1 s), b (1.2 s), a (2 s).
func fiveRuns(t *testing.T) []*trace.Trace {
	aFirst := []float64{2, 2.1, 1.9, 5, 0.1}
	bFirst := []float64{1, 1.2, 3}
	var traces []*trace.Trace
	for i := range 5 {
		tr := genTrace(t, "run"+string(rune('0'+i)), step{trace.PhaseInit, 1, 0}, step{trace.PhaseLoad, 9, 0})
		tr.Workload = trace.Workload{Command: []string{"/usr/bin/python3", "serve.py"}}
		// Run i also reads one page of its own, so the union differs from any one run.
		readFile(tr, "/models/a.safetensors", 1<<20, aFirst[i], [2]int64{0, 10000}, [2]int64{int64(i+4) * 40960, 1})
		if i < 3 {
			readFile(tr, "/usr/lib/b.so", 1<<16, bFirst[i], [2]int64{4096, 100}, [2]int64{8192, 1})
		}
		if i == 4 {
			readFile(tr, "/srv/c.py", 500, 0.1, [2]int64{0, 500})
		}
		// Left out of any manifest: device nodes, pseudo-files, a container's writable
		// layer, a path that is not UTF-8.
		tr.Files = append(tr.Files,
			trace.File{Path: "/dev/nvidia0", Kind: trace.KindDevice, Ranges: []trace.Range{{Off: 0, Len: 8, Via: trace.AccessRead}}},
			trace.File{Path: "/proc/self/maps", Kind: trace.KindOther, Ranges: []trace.Range{{Off: 0, Len: 8, Via: trace.AccessRead}}},
			trace.File{Path: "/tmp/x", Kind: trace.KindOther, Layer: &trace.LayerRef{Where: "rw"}, Ranges: []trace.Range{{Off: 0, Len: 8, Via: trace.AccessRead}}},
			trace.File{Path: "/srv/bad\xff", Kind: trace.KindOther, Ranges: []trace.Range{{Off: 0, Len: 8, Via: trace.AccessRead}}})
		traces = append(traces, tr)
	}
	return traces
}

func TestManifestHoldsExactlyTheHotRanges(t *testing.T) {
	m, err := BuildManifest(fiveRuns(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		path   string
		ranges []manifest.Range
		conf   float64
		first  int64
	}
	var got []entry
	for _, e := range m.Spec.HotSet {
		got = append(got, entry{e.Path, e.Ranges, e.Confidence, e.FirstAccessNs})
	}
	want := []entry{
		{"/srv/c.py", []manifest.Range{{Off: 0, Len: 4096}}, 0.2, 1e8},
		{"/usr/lib/b.so", []manifest.Range{{Off: 4096, Len: 8192}}, 0.6, 12e8},
		{"/models/a.safetensors", []manifest.Range{{Off: 0, Len: 12288}, {Off: 163840, Len: 4096}, {Off: 204800, Len: 4096}, {Off: 245760, Len: 4096}, {Off: 286720, Len: 4096}, {Off: 327680, Len: 4096}}, 1, 2e9},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("hot set:\n got %+v\nwant %+v", got, want)
	}
	for i, e := range m.Spec.HotSet {
		if e.Order != i {
			t.Errorf("entry %d has order %d", i, e.Order)
		}
	}
	if m.Spec.Runs != 5 || m.Spec.Workload.Command[0] != "/usr/bin/python3" || m.Metadata.Name != "python3" || len(m.Spec.Images) != 0 {
		t.Errorf("spec: %+v, name %q", m.Spec, m.Metadata.Name)
	}
}

func TestManifestLayerPathsAndImage(t *testing.T) {
	tr := genTrace(t, "c1", step{trace.PhasePull, 10, 1 << 30}, step{trace.PhaseLoad, 1, 0})
	tr.Pull = &trace.Pull{Ref: testImage, Layers: []trace.Layer{{Index: 0, Digest: testLayer, Size: 1 << 30}}}
	tr.Files = append(tr.Files, trace.File{Path: "/usr/lib/libc.so.6", Size: 9000, Kind: trace.KindLibrary,
		Layer:  &trace.LayerRef{Index: 0, Digest: testLayer, Where: "image"},
		Ranges: []trace.Range{{Off: 5000, Len: 10, First: sec(10.5), Via: trace.AccessMmap}}})
	m, err := BuildManifest([]*trace.Trace{tr}, Options{Tenant: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	e := m.Spec.HotSet[0]
	if e.Layer != testLayer || *e.LayerIndex != 0 || e.Path != "usr/lib/libc.so.6" || e.Ranges[0] != (manifest.Range{Off: 4096, Len: 4096}) {
		t.Errorf("entry %+v", e)
	}
	if m.Spec.Images[0] != (manifest.Image{Ref: testImage, Digest: testDigest, Size: 1 << 30}) || m.Metadata.Name != "llm" || m.Spec.Tenant != "team-a" {
		t.Errorf("spec %+v name %q", m.Spec, m.Metadata.Name)
	}
}

func TestManifestArtifacts(t *testing.T) {
	const url = "http://hub.example/m/model.safetensors"
	d1, d2 := "sha256:"+strings.Repeat("1", 64), "sha256:"+strings.Repeat("2", 64)
	run := func(name, digest string) *trace.Trace {
		tr := genTrace(t, name, step{trace.PhaseInit, 1, 0}, step{trace.PhaseFetch, 20, 5 << 30}, step{trace.PhaseLoad, 5, 0})
		tr.Workload = trace.Workload{Command: []string{"serve"}}
		tr.Files = append(tr.Files,
			trace.File{Path: "/cache/model.safetensors", Kind: trace.KindWeights, Size: 5 << 30, WrittenBytes: 5 << 30, Digest: digest, Origin: url},
			trace.File{Path: "/cache/config.json", Kind: trace.KindOther, Size: 4096, WrittenBytes: 4096, Origin: "10.0.0.7:80"},
			// Written from nothing the trace saw arrive: a cache, not a download.
			trace.File{Path: "/tmp/log", Kind: trace.KindOther, Size: 2 << 20, WrittenBytes: 2 << 20})
		if digest == "" { // the recorder did not see the file at the end: no size either
			tr.Files[len(tr.Files)-3].Size = 0
		}
		// A library read while the download runs is no download, and stays in the hot set.
		readFile(tr, "/usr/lib/libtorch.so", 1<<20, 5, [2]int64{0, 4096})
		tr.Files[len(tr.Files)-1].Kind = trace.KindLibrary
		return tr
	}
	for _, c := range []struct {
		name    string
		digests []string
		want    string
	}{
		{"agree", []string{d1, d1}, d1},
		{"disagree", []string{d1, d2}, ""},
		{"one run without", []string{d1, ""}, ""},
	} {
		m, err := BuildManifest([]*trace.Trace{run("a", c.digests[0]), run("b", c.digests[1])}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		want := []manifest.Artifact{
			{Path: "/cache/model.safetensors", Origin: url, Size: 5 << 30, Digest: c.want},
		}
		if !reflect.DeepEqual(m.Spec.Artifacts, want) {
			t.Errorf("%s: artifacts %+v, want %+v", c.name, m.Spec.Artifacts, want)
		}
		if len(m.Spec.HotSet) != 1 || m.Spec.HotSet[0].Path != "/usr/lib/libtorch.so" {
			t.Errorf("%s: hot set %+v, want the library alone", c.name, m.Spec.HotSet)
		}
	}
}

func TestManifestBudget(t *testing.T) {
	traces := fiveRuns(t)
	m, err := BuildManifest(traces, Options{Budget: 5 * 4096})
	if err != nil {
		t.Fatal(err)
	}
	var bytes int64
	for _, e := range m.Spec.HotSet {
		bytes += e.Bytes()
	}
	// a (8 pages) does not fit; b (2 pages, 0.6) and c (1 page, 0.2) do.
	if bytes > 5*4096 || len(m.Spec.HotSet) != 2 || m.Spec.HotSet[1].Path != "/usr/lib/b.so" || m.Spec.HotSet[1].Order != 1 {
		t.Errorf("budget selection: %d bytes, %+v", bytes, m.Spec.HotSet)
	}
}

// TestChooseMatchesBruteForce checks the exact knapsack against every subset on small
// random cases, and the greedy one against a factor of two.
func TestChooseMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for c := range 300 {
		n := 1 + rng.IntN(12)
		w := make([]int64, n)
		v := make([]float64, n)
		var total int64
		for i := range n {
			w[i] = int64(1+rng.IntN(20)) * pageSize
			v[i] = rng.Float64() * 10
			total += w[i]
		}
		budget := int64(rng.IntN(int(total/pageSize)+1)) * pageSize
		best := 0.0
		for mask := 0; mask < 1<<n; mask++ {
			var ws int64
			var vs float64
			for i := range n {
				if mask&(1<<i) != 0 {
					ws += w[i]
					vs += v[i]
				}
			}
			if ws <= budget && vs > best {
				best = vs
			}
		}
		if budget == 0 {
			continue // 0 means no budget
		}
		sum := func(idx []int) (ws int64, vs float64) {
			for _, i := range idx {
				ws += w[i]
				vs += v[i]
			}
			return
		}
		ws, vs := sum(choose(w, v, budget))
		if ws > budget || !near(vs, best, 1e-9) {
			t.Fatalf("case %d: choose gives %v within %d, brute force %v (w=%v v=%v)", c, vs, budget, best, w, v)
		}
		gw, gv := sum(chooseGreedy(w, v, budget))
		if gw > budget || gv < best/2-1e-9 {
			t.Fatalf("case %d: greedy gives %v, optimum %v", c, gv, best)
		}
	}
}

func TestMixedWorkloadsRefused(t *testing.T) {
	a := genTrace(t, "a", step{trace.PhaseInit, 1, 0})
	b := genTrace(t, "b", step{trace.PhaseInit, 1, 0})
	b.Workload.ImageDigest = testLayer
	_, err := Analyze([]*trace.Trace{a, b}, Options{})
	if err == nil || !strings.Contains(err.Error(), "different workloads") {
		t.Fatalf("Analyze of mixed workloads: %v", err)
	}
	if _, err := BuildManifest([]*trace.Trace{a, b}, Options{}); err == nil {
		t.Fatal("BuildManifest accepted mixed workloads")
	}
	if _, err := Analyze([]*trace.Trace{a, b}, Options{Force: true}); err != nil {
		t.Fatalf("with Force: %v", err)
	}
}

func TestManifestEntryCap(t *testing.T) {
	tr := genTrace(t, "big", step{trace.PhaseLoad, 10, 0})
	for i := range manifest.DefaultMaxEntries + 10 {
		// The last ten files are read in two pages, the others in one.
		n := int64(pageSize)
		if i >= manifest.DefaultMaxEntries {
			n = 2 * pageSize
		}
		readFile(tr, "/data/f"+strconv.Itoa(i), 1<<20, float64(i)*1e-6, [2]int64{0, n})
	}
	m, err := BuildManifest([]*trace.Trace{tr}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs := m.Spec.HotSet
	if len(hs) != manifest.DefaultMaxEntries {
		t.Fatalf("%d entries", len(hs))
	}
	// The cap drops ten of the one-page entries (the last in first-access order among
	// equals) and keeps the order.
	if hs[99989].Path != "/data/f99989" || hs[99990].Path != "/data/f100000" || hs[99990].Order != 99990 {
		t.Errorf("around the cut: %s, %s (order %d)", hs[99989].Path, hs[99990].Path, hs[99990].Order)
	}
}
