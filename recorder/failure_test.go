package recorder

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

// TestRecordImagePullFails records pulls that fail: an image the registry lacks, and a
// registry that dies in the middle of a layer. Each is a trace that says why, with the
// pull as far as it got.
func TestRecordImagePullFails(t *testing.T) {
	testenv.RequireBPF(t)
	ctrd := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{Rate: 8 << 20})
	check := func(name string, tr *trace.Trace, err error, msg string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: no trace: %v", name, err)
		}
		tr.Format, tr.Version = trace.Format, trace.Version
		if verr := tr.Validate(); verr != nil {
			t.Errorf("%s: %v", name, verr)
		}
		if tr.Outcome != trace.OutcomeFailed || !tr.Incomplete || !strings.Contains(tr.Error, msg) || tr.Pull == nil {
			t.Fatalf("%s: outcome %s (%q), incomplete %v, pull %+v; want failed with %q", name, tr.Outcome, tr.Error, tr.Incomplete, tr.Pull, msg)
		}
		if _, ok := tr.Phase(trace.PhasePull); !ok {
			t.Errorf("%s: no pull phase", name)
		}
		t.Logf("%s: %s after %v", name, tr.Error, tr.Duration)
	}

	absent := reg.Host + "/test/absent:v1"
	opts := ImageOptions{Image: absent, Address: ctrd.Address, Namespace: "default", PlainHTTP: true}
	tr, err := RecordImage(context.Background(), opts)
	check("absent", tr, err, "image not found in the registry")
	if !strings.Contains(tr.Error, absent) || tr.Workload.Image != absent || len(tr.Pull.Layers) != 0 {
		t.Errorf("absent: error %q, workload %+v, layers %+v", tr.Error, tr.Workload, tr.Pull.Layers)
	}

	data := make([]byte, 4<<20)
	rand.Read(data)
	payload, err := ctrtest.StoredLayer(ctrtest.File{Path: "/data", Mode: 0o644, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	img, err := ctrtest.BuildImage([]v1.Layer{payload}, []string{"/bin/sh"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	opts.Image = reg.Push(t, "test/dies:v1", img)
	digest, _ := payload.Digest()
	reg.FailAfter(1 << 20)
	tr, err = RecordImage(context.Background(), opts)
	check("registry dies", tr, err, digest.String())
	if len(tr.Pull.Layers) != 1 {
		t.Fatalf("registry dies: layers %+v, want the manifest's one", tr.Pull.Layers)
	}
	l := tr.Pull.Layers[0]
	served := reg.Served(digest.String())
	if l.Digest != digest.String() || l.Bytes <= 0 || l.Bytes > served || l.Fetched != 0 {
		t.Errorf("registry dies: layer %+v, the registry served %d bytes of it", l, served)
	}
	t.Logf("registry dies: received %d of the %d bytes the registry sent", l.Bytes, served)
}
