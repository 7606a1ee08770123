package cache

import (
	"context"
	"crypto/sha256"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/manifest"
)

// loopback lets the store fetch from the tests' origins, which it refuses by default.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// modelManifest lists one downloaded model file as an artifact, and its first 64 KiB as hot.
func modelManifest(tenant string, o *origin.HTTP) *manifest.Manifest {
	m := manifest.New("model-" + tenant)
	m.Spec.Tenant, m.Spec.Runs = tenant, 1
	m.Spec.Artifacts = []manifest.Artifact{{Path: "/models/model.bin", Origin: o.URL(), Size: o.Size(), Digest: o.Digest()}}
	m.Spec.HotSet = []manifest.HotEntry{{Path: "/models/model.bin", Size: o.Size(), Ranges: []manifest.Range{{Off: 0, Len: 64 << 10}}, Confidence: 1}}
	return m
}

func only(t *testing.T, s *Summary, action string) Item {
	t.Helper()
	var found []Item
	for _, it := range s.Items {
		if it.Action == action {
			found = append(found, it)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s items: %+v", action, found)
	}
	return found[0]
}

// TestApplyArtifacts stages and warms a model artifact for a tenant through a real
// containerd and store, and checks tenant isolation, the fallback to the origin when the
// cached copy is corrupt, a cache that serves with the origin down, and the metrics.
func TestApplyArtifacts(t *testing.T) {
	ctrd := ctrtest.StartContainerd(t)
	reg := prometheus.NewRegistry()
	metrics := NewMetrics(reg)
	root := filepath.Join(t.TempDir(), "store")
	a, err := New(Config{Containerd: ctrd.Address, Namespace: "k8s.io", StoreRoot: root, OriginAllow: loopback}, metrics, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	o := origin.StartHTTP(t, "/m/model.bin", origin.Random(1<<20), 0)
	apply := func(tenant string, m *manifest.Manifest) *Summary {
		t.Helper()
		s, err := a.Apply(ctx, tenant, m)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	s := apply("team-a", modelManifest("team-a", o))
	if st, w := only(t, s, ActionStage), only(t, s, ActionWarm); st.Result != ResultDone || w.Resident != 1 || !s.OK() {
		t.Fatalf("first apply: %+v", s.Items)
	}
	blob := filepath.Join(root, "tenants", "team-a", "sha256", strings.TrimPrefix(o.Digest(), "sha256:"))
	if got, _ := os.ReadFile(blob); sha256.Sum256(got) != sha256.Sum256(o.Body()) {
		t.Fatal("the staged blob differs from the origin's body")
	}

	// Tenant b may not warm a's staged file by its host path, nor any other host file.
	mb := manifest.New("peek")
	mb.Spec.Runs = 1
	for _, p := range []string{blob, "/etc/shadow"} {
		mb.Spec.HotSet = append(mb.Spec.HotSet, manifest.HotEntry{Path: p, Ranges: []manifest.Range{{Off: 0, Len: 4096}}, Confidence: 1, Order: len(mb.Spec.HotSet)})
	}
	s = apply("team-b", mb)
	for _, it := range s.Items {
		if it.Result != ResultRefused || it.Reason != ReasonPath {
			t.Errorf("team-b warming %s: %s (%s), want refused", it.Name, it.Result, it.Detail)
		}
	}
	// An image without a sha256 digest, or with a reference that does not parse, is refused
	// before any pull.
	mi := manifest.New("images")
	mi.Spec.Runs = 1
	for _, ref := range []string{"127.0.0.1:1/a/b:v1", "127.0.0.1:1/a/b@sha512:" + strings.Repeat("c", 128), "Bad Ref"} {
		mi.Spec.Images = append(mi.Spec.Images, manifest.Image{Ref: ref})
	}
	s = apply("team-c", mi)
	for _, it := range s.Items {
		if it.Action != ActionPrepull || it.Result != ResultRefused || it.Reason != ReasonEntry {
			t.Errorf("team-c pre-pulling %s: %s %s (%s), want refused as an entry", it.Name, it.Action, it.Result, it.Detail)
		}
	}
	if len(s.Items) != len(mi.Spec.Images) {
		t.Errorf("team-c: %d items, want %d", len(s.Items), len(mi.Spec.Images))
	}
	// With the origin down, b cannot get a's copy of the same artifact.
	down := origin.StartHTTP(t, "/m/model.bin", o.Body(), 0)
	down.Close()
	mdown := modelManifest("team-b", down)
	if st := only(t, apply("team-b", mdown), ActionStage); st.Result != ResultFailed || !strings.Contains(st.Detail, down.URL()) {
		t.Errorf("team-b staging with the origin down: %s (%s)", st.Result, st.Detail)
	}

	// a's copy rots: the next apply notices, fetches it again, and counts a fallback.
	corrupt(t, blob)
	if st := only(t, apply("team-a", modelManifest("team-a", o)), ActionStage); st.Result != ResultDone || !strings.Contains(st.Detail, "corrupt") {
		t.Errorf("after corruption: %s (%s)", st.Result, st.Detail)
	}
	if n := testutil.ToFloat64(metrics.fallbacks.WithLabelValues("team-a", "corrupt")); n != 1 {
		t.Errorf("fallbacks{corrupt} = %v, want 1", n)
	}
	// The origin goes away; the cache still serves a.
	ma := modelManifest("team-a", o)
	o.Close()
	if st := only(t, apply("team-a", ma), ActionStage); st.Result != ResultPresent {
		t.Errorf("origin down, cache present: %s (%s)", st.Result, st.Detail)
	}
	if n := testutil.ToFloat64(metrics.bytes.WithLabelValues(ActionStage, "team-a")); n != 2<<20 {
		t.Errorf("staged bytes %v, want %d (the file twice)", n, 2<<20)
	}
	// An artifact whose digest is not its content's is never published.
	wrong := origin.StartHTTP(t, "/m/other.bin", origin.Random(1<<20), 0)
	mw := modelManifest("team-a", wrong)
	mw.Spec.Artifacts[0].Digest = "sha256:" + strings.Repeat("b", 64)
	mw.Spec.Artifacts[0].Path = "/models/other.bin"
	mw.Spec.HotSet = nil
	if st := only(t, apply("team-a", mw), ActionStage); st.Result != ResultFailed {
		t.Errorf("wrong digest: %s (%s)", st.Result, st.Detail)
	}
	for _, d := range []string{mw.Spec.Artifacts[0].Digest, wrong.Digest()} {
		if _, err := os.Stat(filepath.Join(root, "tenants", "team-a", "sha256", strings.TrimPrefix(d, "sha256:"))); err == nil {
			t.Errorf("the file with the wrong digest was published as %s", d)
		}
	}
	for _, c := range []struct {
		action, result string
		want           float64
	}{{ActionStage, ResultDone, 2}, {ActionStage, ResultPresent, 1}, {ActionStage, ResultFailed, 1}} {
		if n := testutil.ToFloat64(metrics.items.WithLabelValues(c.action, "team-a", c.result)); n != c.want {
			t.Errorf("items{%s,team-a,%s} = %v, want %v", c.action, c.result, n, c.want)
		}
	}
	// Three warms of a's artifact: done, or found resident (it was just written).
	if n := testutil.ToFloat64(metrics.items.WithLabelValues(ActionWarm, "team-a", ResultDone)) +
		testutil.ToFloat64(metrics.items.WithLabelValues(ActionWarm, "team-a", ResultPresent)); n != 3 {
		t.Errorf("items{warm,team-a,done|present} = %v, want 3", n)
	}
	// Two host paths, and the hot entry of the artifact b could not stage.
	if n := testutil.ToFloat64(metrics.refusals.WithLabelValues("team-b", ReasonPath)); n != 3 {
		t.Errorf("refusals{team-b,path} = %v, want 3", n)
	}
}

// TestApplyVerify checks that Config.Verify reaches the store: applying a manifest whose
// artifact is present reads the file twice with it (hashed, then warmed) and once without
// (warmed only), as rchar in /proc/self/io counts. The hot set does not list the artifact,
// as the advisor leaves downloads out of it: it is warmed whole all the same.
func TestApplyVerify(t *testing.T) {
	ctrd := ctrtest.StartContainerd(t)
	root := filepath.Join(t.TempDir(), "store")
	o := origin.StartHTTP(t, "/m/model.bin", origin.Random(4<<20), 0)
	m := modelManifest("team-a", o)
	m.Spec.HotSet = nil
	for _, verify := range []bool{false, false, true} {
		a, err := New(Config{Containerd: ctrd.Address, Namespace: "k8s.io", StoreRoot: root, Verify: verify, OriginAllow: loopback}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		before := testenv.Rchar(t, 0)
		s, err := a.Apply(context.Background(), "team-a", m)
		read := testenv.Rchar(t, 0) - before
		a.Close()
		if err != nil || !s.OK() {
			t.Fatalf("apply: %v, %+v", err, s)
		}
		// Written a moment ago, the file is in the page cache: warming finds it there.
		if w := only(t, s, ActionWarm); w.Result != ResultPresent || w.Resident != 1 || w.Bytes != 0 {
			t.Errorf("warm: %+v, want the whole artifact found resident", w)
		}
		present := only(t, s, ActionStage).Result == ResultPresent
		switch {
		case !present:
			// The first apply fetches it.
		case verify && read < o.Size():
			t.Errorf("with Verify, a present file: read %d bytes, want %d (hashed)", read, o.Size())
		case !verify && read > o.Size()/4:
			t.Errorf("without Verify, a present file: read %d bytes, want almost none (stamp hit, pages resident)", read)
		}
	}
	if n := o.BodyBytes(); n != o.Size() {
		t.Errorf("origin sent %d bytes, want %d once", n, o.Size())
	}
}

// corrupt flips a byte of a published (read-only) file in place.
func corrupt(t *testing.T, p string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, 100)
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, 100); err != nil {
		t.Fatal(err)
	}
}

// TestStageYieldsToPulls stages an artifact while someone else (ctr, standing in for the
// kubelet) pulls an image: the download waits for the pull to end, so that the agent's
// work does not take the link from a container that is starting.
func TestStageYieldsToPulls(t *testing.T) {
	ctrd := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{Rate: 8 << 20})
	layer, err := ctrtest.StoredLayer(ctrtest.File{Path: "/data/blob", Data: origin.Random(24 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	img, err := ctrtest.BuildImage([]v1.Layer{layer}, []string{"/data/blob"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "test/big:v1", img)
	a, err := New(Config{Containerd: ctrd.Address, Namespace: "k8s.io", StoreRoot: filepath.Join(t.TempDir(), "store"), OriginAllow: loopback}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	pulled := make(chan time.Time, 1)
	go func() {
		ctrd.Ctr(t, "-n", "k8s.io", "images", "pull", "--plain-http", ref)
		pulled <- time.Now()
	}()
	for reg.Total() < 1<<20 { // the pull is under way
		time.Sleep(20 * time.Millisecond)
	}
	o := origin.StartHTTP(t, "/m/model.bin", origin.Random(32<<20), 0)
	start := time.Now()
	s, err := a.Apply(context.Background(), "team-a", modelManifest("team-a", o))
	if err != nil {
		t.Fatal(err)
	}
	staged := time.Now()
	end := <-pulled
	t.Logf("the pull ran until %v, the stage (started at 0) ended at %v", end.Sub(start), staged.Sub(start))
	if st := only(t, s, ActionStage); st.Result != ResultDone {
		t.Fatalf("stage: %s (%s)", st.Result, st.Detail)
	}
	if staged.Before(end.Add(-500 * time.Millisecond)) {
		t.Errorf("the stage ended %v before the pull did: it did not wait", end.Sub(staged))
	}
}

// TestStageAfterTheImage applies a manifest with an image and a model: the model's
// download starts only once the registry has served the whole image (its blob bytes, as
// the registry counts them when the origin sends its first byte), so that on the node's
// one link a container waiting for the image is not slowed by the model.
func TestStageAfterTheImage(t *testing.T) {
	ctrd := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{Rate: 8 << 20})
	layer, err := ctrtest.StoredLayer(ctrtest.File{Path: "/data/blob", Data: origin.Random(16 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	img, err := ctrtest.BuildImage([]v1.Layer{layer}, []string{"/data/blob"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "test/first:v1", img)
	size, err := layer.Size()
	if err != nil {
		t.Fatal(err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Containerd: ctrd.Address, Namespace: "k8s.io", StoreRoot: filepath.Join(t.TempDir(), "store"), OriginAllow: loopback, PlainHTTP: true}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	o := origin.StartHTTP(t, "/m/model.bin", origin.Random(8<<20), 0)
	m := modelManifest("team-a", o)
	m.Spec.Images = []manifest.Image{{Ref: ref, Digest: digest.String()}}

	servedAtStage := make(chan int64, 1)
	done := make(chan struct{})
	go func() {
		for o.Sent() == 0 {
			select {
			case <-done:
				servedAtStage <- -1
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		servedAtStage <- reg.Total()
	}()
	s, err := a.Apply(context.Background(), "team-a", m)
	close(done)
	if err != nil {
		t.Fatal(err)
	}
	if !s.OK() {
		t.Fatalf("apply: %+v", s.Items)
	}
	if n := <-servedAtStage; n < size {
		t.Errorf("the model's download started when the registry had served %d of the image's %d layer bytes", n, size)
	}
}
