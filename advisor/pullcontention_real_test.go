package advisor_test

import (
	"context"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coldtrace/coldtrace/advisor"
	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/recorder"
	"github.com/coldtrace/coldtrace/trace"
)

// TestPullContentionPredictsSoloPull records the pull of an image alone, then together
// with the pull of another image of the same size from the same rate-limited registry
// (one link, shared fairly). The advisor, given the contended trace, predicts the pull
// without the other one: its critical time minus the gain. That must come within 25% of
// the pull measured alone; the share must be about half, and the pulls together must
// have used about all of the registry's rate, which the test gives as the link.
func TestPullContentionPredictsSoloPull(t *testing.T) {
	testenv.RequireBPF(t)
	const rate = 4 << 20
	ctrd := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{Rate: rate})
	base := ctrtest.BusyboxLayer(t)
	refs, pulling := map[string]string{}, map[string]string{}
	for _, n := range []string{"alpha", "beta"} {
		data := make([]byte, 8<<20)
		rand.Read(data)
		payload, err := ctrtest.StoredLayer(ctrtest.File{Path: "/data-" + n, Mode: 0o644, Data: data})
		if err != nil {
			t.Fatal(err)
		}
		img, err := ctrtest.BuildImage([]v1.Layer{base, payload}, []string{"/bin/sh"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		refs[n] = reg.Push(t, "test/"+n+":v1", img)
		top, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		pulling[n] = reg.PullingName("test/"+n+":v1", top.String())
	}
	record := func(n string) (*trace.Trace, error) {
		tr, err := recorder.RecordImage(context.Background(), recorder.ImageOptions{
			Image: refs[n], Address: ctrd.Address, Namespace: "default", PlainHTTP: true, Fresh: true,
			Args: []string{"sh", "-c", "exec nc -l -p 8080"}, Timeout: time.Minute,
		})
		if err == nil && (tr.Outcome != trace.OutcomeReady || tr.Incomplete) {
			t.Fatalf("%s: outcome %s (%s), incomplete %v", n, tr.Outcome, tr.Error, tr.Incomplete)
		}
		return tr, err
	}
	pullCritical := func(tr *trace.Trace) float64 {
		p, ok := tr.Phase(trace.PhasePull)
		if !ok {
			t.Fatalf("trace %s has no pull phase", tr.ID)
		}
		return p.Critical.Seconds()
	}

	solo, err := record("alpha")
	if err != nil {
		t.Fatal(err)
	}
	if len(solo.Pull.Overlaps) != 0 {
		t.Fatalf("the solo pull overlapped %+v", solo.Pull.Overlaps)
	}
	var contended *trace.Trace
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, n := range []string{"alpha", "beta"} {
		wg.Go(func() {
			tr, err := record(n)
			if err != nil {
				errs <- err
			} else if n == "alpha" {
				contended = tr
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	a, err := advisor.Analyze([]*trace.Trace{contended}, advisor.Options{Limits: advisor.Limits{Link: rate}})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.PullContention) != 1 {
		t.Fatalf("pull contention %+v; the trace's overlaps %+v", a.PullContention, contended.Pull.Overlaps)
	}
	c := a.PullContention[0]
	alone, with := pullCritical(solo), pullCritical(contended)
	predicted := with - c.Gain.Value
	t.Logf("pull alone %.2f s, contended %.2f s; overlap %.2f s, share %.2f, link use %.2f, gain %.2f s: predicted alone %.2f s",
		alone, with, c.Overlap.Value, c.Share, c.LinkUse, c.Gain.Value, predicted)
	// By its tag once beta's pull created its image, by digest while it still ran.
	if len(c.Others) != 1 || (c.Others[0].Ref != refs["beta"] && c.Others[0].Ref != pulling["beta"]) {
		t.Errorf("others %+v, want %s or %s", c.Others, refs["beta"], pulling["beta"])
	}
	if c.Share < 0.3 || c.Share > 0.7 {
		t.Errorf("share %.2f; the registry shares its rate fairly between two pulls", c.Share)
	}
	if c.LinkUse < 0.7 || c.LinkUse > 1.2 {
		t.Errorf("link use %.2f; the two pulls together ran at the registry's rate", c.LinkUse)
	}
	if predicted < 0.75*alone || predicted > 1.25*alone {
		t.Errorf("predicted the pull alone at %.2f s, measured %.2f s", predicted, alone)
	}
}
