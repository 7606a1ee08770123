package advisor

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/coldtrace/coldtrace/trace"
)

const otherImage = "registry.local/other:7"

// genPullTrace is a start whose pull of testImage takes pullSecs for pullBytes (all on
// the critical path), then 1 s of init, while the given other pulls downloaded.
func genPullTrace(t testing.TB, id string, pullSecs float64, pullBytes int64, others ...trace.PullOverlap) *trace.Trace {
	t.Helper()
	tr := genTrace(t, id, step{trace.PhasePull, pullSecs, pullBytes}, step{trace.PhaseInit, 1, 0})
	tr.Pull = &trace.Pull{
		Ref: testImage, Registry: "registry.local", End: sec(pullSecs),
		Layers:   []trace.Layer{{Digest: testLayer, Size: pullBytes, Bytes: pullBytes, Fetched: sec(pullSecs)}},
		Overlaps: others,
	}
	for _, o := range others {
		tr.Pull.Contended = append(tr.Pull.Contended, o.Ref)
	}
	if err := tr.Validate(); err != nil {
		t.Fatal(err)
	}
	return tr
}

// other is another pull of ref that received n bytes in the intervals, given in seconds.
func other(ref, ns string, n int64, ivs ...[2]float64) trace.PullOverlap {
	o := trace.PullOverlap{Ref: ref, Namespace: ns, Blobs: []string{testLayer}, Bytes: n}
	for _, iv := range ivs {
		o.Intervals = append(o.Intervals, trace.Interval{Start: sec(iv[0]), End: sec(iv[1])})
	}
	return o
}

func rec(a *Advice, id string) (Recommendation, bool) {
	for _, r := range a.Recommendations {
		if r.ID == id {
			return r, true
		}
	}
	return Recommendation{}, false
}

// TestPullContentionFromRate plants two other pulls whose intervals overlap each other:
// [10, 20) s with 2 GB and [15, 25) s with 1 GB, during a 30 s pull of 3 GB (100 MB/s).
// The overlap is their union, 15 s; the pull's own bytes then are 100 MB/s × 15 s =
// 1.5 GB, so its share is 1.5 ÷ 4.5 = 1/3 and the gain (1 − 1/3) × 15 = 10 s. Together
// they received 300 MB/s, 24% of the 10 Gbit/s link.
func TestPullContentionFromRate(t *testing.T) {
	tr := genPullTrace(t, "r", 30, 3e9,
		other(otherImage, "default", 2e9, [2]float64{10, 20}),
		other("", "k8s.io", 1e9, [2]float64{15, 25}))
	a := mustAnalyze(t, []*trace.Trace{tr}, Options{})
	if len(a.PullContention) != 1 {
		t.Fatalf("pull contention %+v", a.PullContention)
	}
	c := a.PullContention[0]
	if c.Runs != 1 || !near(c.Overlap.Value, 15, 1e-6) || !near(c.Share, 1.0/3, 1e-6) || !near(c.Gain.Value, 10, 1e-6) ||
		!near(c.OwnBytes, 1.5e9, 1) || !near(c.OtherBytes, 3e9, 1) || c.OwnBytesFrom != OwnBytesRate || !near(c.LinkUse, 0.24, 1e-6) {
		t.Fatalf("pull contention %+v, want 15 s overlap, share 1/3, gain 10 s, 1.5 GB own and 3 GB other bytes by rate, 24%% of the link", c)
	}
	if len(c.Others) != 2 || c.Others[0].Ref != otherImage || !near(c.Others[0].Overlap, 10, 1e-6) || c.Others[0].Bytes != 2e9 ||
		c.Others[1].Ref != "" || c.Others[1].Namespace != "k8s.io" || c.Others[1].Bytes != 1e9 {
		t.Errorf("others %+v", c.Others)
	}
	r, ok := rec(a, "avoid-pull-contention")
	if !ok || !near(r.Saved.Value, 10, 1e-6) {
		t.Fatalf("recommendation %+v:%s", r, ids(a.Recommendations))
	}
	ev := strings.Join(r.Evidence, "\n")
	for _, want := range []string{otherImage, "namespace k8s.io", "15.0 s", "1.5 GB", "3.0 GB", "33%", "24% of the link's 1.2 GB/s"} {
		if !strings.Contains(ev, want) {
			t.Errorf("evidence lacks %q:\n%s", want, ev)
		}
	}
	for _, want := range []string{"coldtrace warm", "serializeImagePulls", "maxParallelImagePulls"} {
		if !strings.Contains(r.Action, want) {
			t.Errorf("action lacks %q: %s", want, r.Action)
		}
	}
	// Ranked by the seconds saved among the others: after pre-pulling and lazy pulling
	// (30 s each), before the readiness timeout, which is always last.
	if got := ids(a.Recommendations); got != " prepull-image(30.00) lazy-pull(30.00) avoid-pull-contention(10.00) readiness-timeout(0.00)" {
		t.Errorf("ranking:%s", got)
	}

	var text bytes.Buffer
	if err := a.Format(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pull contention: other pulls downloaded during the pull in 1 of 1 runs", "had 33% of the link", "alone it gains 10.00 s",
		otherImage + " (namespace default): 2.0 GB over 10.00 s", "Keep other image pulls off the node"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	if err := a.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back struct {
		PullContention []struct {
			Gain   struct{ Value float64 } `json:"gain_s"`
			Share  float64                 `json:"share"`
			From   string                  `json:"own_bytes_from"`
			Others []struct {
				Ref   string  `json:"ref"`
				Bytes float64 `json:"bytes"`
			} `json:"others"`
		} `json:"pull_contention"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if p := back.PullContention; len(p) != 1 || !near(p[0].Gain.Value, 10, 1e-6) || !near(p[0].Share, 1.0/3, 1e-6) || p[0].From != "rate" ||
		len(p[0].Others) != 2 || p[0].Others[0].Ref != otherImage {
		t.Errorf("JSON pull_contention %+v", p)
	}
}

// TestPullContentionFromSamples gives the pull a traced registry connection whose
// samples say it received 0.45 GB in [5, 8) s (interpolated between the samples at 0 and
// 10 s) and 0.5 GB in [10, 20) s, while another pull received 3.8 GB: a share of
// 0.95 ÷ 4.75 = 0.2 and a gain of 0.8 × 13 s = 10.4 s. The pull's average rate would
// give 1.19 GB and 9.9 s instead.
func TestPullContentionFromSamples(t *testing.T) {
	tr := genPullTrace(t, "s", 30, 2.75e9, other(otherImage, "default", 3.8e9, [2]float64{5, 8}, [2]float64{10, 20}))
	tr.Conns = []trace.Conn{{
		PID: 1, Local: "10.0.0.2:40000", Remote: "10.0.0.1:443", Dir: "connect", Role: "registry", Open: 0, Close: sec(30),
		BytesRecv: 2.75e9, FirstRecv: 0, LastRecv: sec(30),
		Samples: []trace.Sample{{At: 0, Recv: 0}, {At: sec(10), Recv: 1.5e9}, {At: sec(20), Recv: 2e9}, {At: sec(30), Recv: 2.75e9}},
	}}
	a := mustAnalyze(t, []*trace.Trace{tr}, Options{})
	if len(a.PullContention) != 1 {
		t.Fatalf("pull contention %+v", a.PullContention)
	}
	c := a.PullContention[0]
	if c.OwnBytesFrom != OwnBytesSamples || !near(c.OwnBytes, 0.95e9, 1) || !near(c.Overlap.Value, 13, 1e-6) ||
		!near(c.Share, 0.2, 1e-6) || !near(c.Gain.Value, 10.4, 1e-6) {
		t.Fatalf("pull contention %+v, want 0.95 GB own bytes from samples, share 0.2, gain 10.4 s", c)
	}
	if r, ok := rec(a, "avoid-pull-contention"); !ok || !strings.Contains(strings.Join(r.Evidence, "\n"), "counted on its registry connections") {
		t.Errorf("recommendation %+v", r)
	}
}

// TestPullContentionCappedByCriticalTime: the pull had half the link for all its 30 s
// (15 s to gain) but only 5 s of it were on the critical path, the rest hidden behind the
// model download.
func TestPullContentionCappedByCriticalTime(t *testing.T) {
	tr := genPullTrace(t, "cap", 30, 3e9, other(otherImage, "default", 3e9, [2]float64{0, 30}))
	tr.Phases = []trace.Phase{
		{Name: trace.PhasePull, Start: 0, End: sec(30), Busy: sec(30), Critical: sec(5), Bytes: 3e9},
		{Name: trace.PhaseFetch, Start: 0, End: sec(40), Busy: sec(40), Critical: sec(35), Bytes: 4e9},
	}
	tr.Critical = []trace.Segment{{Phase: trace.PhasePull, Start: 0, End: sec(5)}, {Phase: trace.PhaseFetch, Start: sec(5), End: sec(40)}}
	tr.Duration, tr.Ready.At = sec(40), sec(40)
	if err := tr.Validate(); err != nil {
		t.Fatal(err)
	}
	a := mustAnalyze(t, []*trace.Trace{tr}, Options{})
	if c := a.PullContention; len(c) != 1 || !near(c[0].Share, 0.5, 1e-6) || !near(c[0].Gain.Value, 5, 1e-6) {
		t.Fatalf("pull contention %+v, want share 0.5 and the gain capped at 5 s", c)
	}
}

// TestPullContentionAcrossRuns: five runs of a 30 s, 3 GB pull with other pulls for 0,
// 5, 10, 15 and 20 s, each taking half the link: gains 0, 2.5, 5, 7.5 and 10 s, median 5.
// With one contended run of five the median is 0: reported, not recommended.
func TestPullContentionAcrossRuns(t *testing.T) {
	var traces []*trace.Trace
	for i, d := range []float64{0, 5, 10, 15, 20} {
		var ov []trace.PullOverlap
		if d > 0 {
			ov = append(ov, other(otherImage, "default", int64(1e8*d), [2]float64{5, 5 + d}))
		}
		traces = append(traces, genPullTrace(t, string(rune('a'+i)), 30, 3e9, ov...))
	}
	a := mustAnalyze(t, traces, Options{Seed: 1})
	if len(a.PullContention) != 1 {
		t.Fatalf("pull contention %+v", a.PullContention)
	}
	c := a.PullContention[0]
	if c.Runs != 4 || !near(c.Overlap.Value, 10, 1e-6) || !near(c.Gain.Value, 5, 1e-6) || !near(c.Share, 0.5, 1e-6) {
		t.Fatalf("pull contention %+v, want 4 runs, median overlap 10 s, gain 5 s, share 0.5", c)
	}
	if !(c.Gain.Lo < c.Gain.Value && c.Gain.Value < c.Gain.Hi) || c.Gain.Lo < 0 || c.Gain.Hi > 10 {
		t.Errorf("gain interval %+v", c.Gain)
	}
	if len(c.Others) != 1 || c.Others[0].Runs != 4 {
		t.Errorf("others %+v", c.Others)
	}
	if again := mustAnalyze(t, traces, Options{Seed: 1}); again.PullContention[0].Gain != c.Gain {
		t.Errorf("the same seed gave %+v, then %+v", c.Gain, again.PullContention[0].Gain)
	}
	if r, ok := rec(a, "avoid-pull-contention"); !ok || !near(r.Saved.Value, 5, 1e-6) {
		t.Errorf("recommendation %+v:%s", r, ids(a.Recommendations))
	}

	a = mustAnalyze(t, append(traces[:1:1], genPullTrace(t, "f", 30, 3e9), genPullTrace(t, "g", 30, 3e9), genPullTrace(t, "h", 30, 3e9), traces[4]), Options{})
	if c := a.PullContention; len(c) != 1 || c[0].Runs != 1 || c[0].Gain.Value != 0 || !near(c[0].Gain.Hi, 10, 1e-6) {
		t.Fatalf("one contended run of five: %+v", c)
	}
	if hasRec(a, "avoid-pull-contention") {
		t.Errorf("recommended with a median gain of 0:%s", ids(a.Recommendations))
	}
}

// TestNoPullContention: a pull without overlaps, and a start without a pull, give no
// entry, no recommendation and no JSON field.
func TestNoPullContention(t *testing.T) {
	for _, tr := range []*trace.Trace{genPullTrace(t, "alone", 30, 3e9), genTrace(t, "nopull", step{trace.PhaseInit, 1, 0})} {
		a := mustAnalyze(t, []*trace.Trace{tr}, Options{})
		if a.PullContention != nil || hasRec(a, "avoid-pull-contention") {
			t.Errorf("%s: pull contention %+v:%s", tr.ID, a.PullContention, ids(a.Recommendations))
		}
		var js, text bytes.Buffer
		if err := a.WriteJSON(&js); err != nil {
			t.Fatal(err)
		}
		if err := a.Format(&text); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(js.String(), "pull_contention") || strings.Contains(text.String(), "pull contention") {
			t.Errorf("%s: pull contention in the output:\n%s\n%s", tr.ID, js.String(), text.String())
		}
	}
}
