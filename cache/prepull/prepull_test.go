package prepull

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/platforms"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coldtrace/coldtrace/internal/ctrtest"
)

// The kubelet's namespace: the agent pre-pulls where the kubelet will look.
const ns = "k8s.io"

// image is a one-layer test image of size random bytes, pushed to reg.
type image struct {
	ref, digest, layer string
	size               int64
}

func pushImage(t *testing.T, reg *ctrtest.Registry, repo string, size int64) image {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	l, err := ctrtest.StoredLayer(ctrtest.File{Path: "/blob", Data: data})
	if err != nil {
		t.Fatal(err)
	}
	img, err := ctrtest.BuildImage([]v1.Layer{l}, []string{"/blob"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, repo+":v1", img)
	d, _ := img.Digest()
	ld, _ := l.Digest()
	n, _ := l.Size()
	return image{ref: ref, digest: d.String(), layer: ld.String(), size: n}
}

func unpacked(t *testing.T, c *client.Client, name string) bool {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	rec, err := c.ImageService().Get(ctx, name)
	if err != nil {
		t.Fatalf("image %s: %v", name, err)
	}
	ok, err := client.NewImageWithPlatform(c, rec, platforms.Default()).IsUnpacked(ctx, "overlayfs")
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// sample is the registry's count of two blobs at one instant.
type sample struct {
	at             time.Time
	agent, foreign int64
}

// A foreign pull (ctr, as for a live container) takes the link: while it transfers, the
// agent's large pull pauses. Ground truth is the registry's byte count per blob, sampled
// every 20 ms: the agent's blob barely grows while the foreign one transfers, and the foreign
// blob arrives at close to the link's rate. Afterwards the agent's pull completes, unpacked.
func TestYieldToForeignPull(t *testing.T) {
	const link = 4 << 20
	d := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{Rate: link})
	big := pushImage(t, reg, "test/big", 24<<20)
	small := pushImage(t, reg, "test/small", 8<<20)

	p, err := New(d.Address, ns, Options{PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	type pulled struct {
		r   *Result
		err error
	}
	done := make(chan pulled, 1)
	var reported atomic.Int64 // what the progress callback was told last
	go func() {
		r, err := p.Pull(context.Background(), big.ref, big.digest, func(n int64) { reported.Store(n) })
		done <- pulled{r, err}
	}()

	var (
		mu      sync.Mutex
		samples []sample
		stop    = make(chan struct{})
		sampled = make(chan struct{})
	)
	go func() {
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			s := sample{time.Now(), reg.Served(big.layer), reg.Served(small.layer)}
			mu.Lock()
			samples = append(samples, s)
			mu.Unlock()
			select {
			case <-tick.C:
			case <-stop:
				return
			}
		}
	}()
	for deadline := time.Now().Add(20 * time.Second); reg.Served(big.layer) < 3<<20; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the agent's pull did not start: %d bytes served", reg.Served(big.layer))
		}
	}
	// ctr's own namespace, not the agent's: containerd lists ingests per namespace.
	d.Ctr(t, "-n", "default", "images", "pull", "--plain-http", small.ref)
	close(stop)
	<-sampled

	// The foreign pull's window: from its first byte to its last, by the registry's count.
	var first, last *sample
	for i := range samples {
		s := &samples[i]
		if first == nil && s.foreign > 0 {
			first = s
		}
		if last == nil && s.foreign == small.size {
			last = s
		}
	}
	if first == nil || last == nil {
		t.Fatalf("the foreign pull was not seen: %d of %d bytes", reg.Served(small.layer), small.size)
	}
	window := last.at.Sub(first.at)
	foreignRate := float64(last.foreign-first.foreign) / window.Seconds()
	agentDuring := last.agent - first.agent
	t.Logf("foreign pull: %d bytes in %v, %.2f MiB/s of a %d MiB/s link; agent received %d KiB meanwhile",
		last.foreign-first.foreign, window, foreignRate/(1<<20), link>>20, agentDuring>>10)
	if foreignRate < 0.75*link {
		t.Errorf("the foreign pull got %.2f MiB/s, want at least 75%% of the link's %d MiB/s", foreignRate/(1<<20), link>>20)
	}
	if limit := small.size / 8; agentDuring > limit {
		t.Errorf("the agent received %d KiB during the foreign pull, want at most %d KiB", agentDuring>>10, limit>>10)
	}

	select {
	case got := <-done:
		if got.err != nil {
			t.Fatal(got.err)
		}
		t.Logf("agent: %d bytes in %v, yielded %v", got.r.Bytes, got.r.End.Sub(got.r.Start), got.r.Yielded)
		if n := reported.Load(); n != got.r.Bytes {
			t.Errorf("progress reported %d bytes last, the pull received %d", n, got.r.Bytes)
		}
		if got.r.Present || got.r.Bytes < big.size || got.r.Yielded < window/2 {
			t.Errorf("agent's pull: %+v, want %d bytes or more fetched and a pause of about %v", got.r, big.size, window)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the agent's pull did not complete after the foreign pull")
	}
	// The connection dropped at the pause loses what was in flight; the range request
	// after it fetches only the rest.
	n := reg.Served(big.layer)
	t.Logf("registry served %d bytes of the agent's %d byte layer (%d lost at the pause)", n, big.size, n-big.size)
	if n < big.size || n > big.size+big.size/16 {
		t.Errorf("registry served %d bytes of the agent's layer, want %d and at most 1/16 more", n, big.size)
	}
	if !unpacked(t, d.Client(t), big.ref[:strings.LastIndex(big.ref, ":")]+"@"+big.digest) {
		t.Error("the agent's image is not unpacked")
	}
}

// Pre-pulling an image that is there (under any name) transfers nothing; images are
// pulled one at a time by default and under the bandwidth limit; a dead registry is a
// clear error.
func TestPresentLimitsAndErrors(t *testing.T) {
	d := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{})
	a := pushImage(t, reg, "test/a", 3<<20)
	b := pushImage(t, reg, "test/b", 3<<20)
	c := pushImage(t, reg, "test/c", 1<<20)

	const rate = 4 << 20
	p, err := New(d.Address, ns, Options{PlainHTTP: true, Rate: rate})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	// Two pulls asked for at once: the slot makes them take turns.
	res, errs := make([]*Result, 2), make([]error, 2)
	var wg sync.WaitGroup
	for i, ref := range [][2]string{{a.ref, a.digest}, {b.ref + "@" + b.digest, ""}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = p.Pull(ctx, ref[0], ref[1], nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
		el := res[i].End.Sub(res[i].Start)
		t.Logf("%s: %d bytes in %v (%.2f MiB/s, limit %d MiB/s)", res[i].Name, res[i].Bytes, el, float64(res[i].Bytes)/el.Seconds()/(1<<20), rate>>20)
		// The limiter's burst is 100 ms of the rate.
		if min := time.Duration(float64(res[i].Bytes-rate/10) / rate * float64(time.Second)); el < min {
			t.Errorf("%s: %d bytes in %v, faster than the limit allows (%v)", res[i].Name, res[i].Bytes, el, min)
		}
	}
	if res[0].End.After(res[1].Start) && res[1].End.After(res[0].Start) {
		t.Errorf("with one image at a time, the pulls overlapped: %v-%v and %v-%v", res[0].Start, res[0].End, res[1].Start, res[1].End)
	}
	if got, want := reg.Total(), a.size+b.size; got < want {
		t.Errorf("registry served %d blob bytes, want at least the layers' %d", got, want)
	}

	// Present: pulled by the agent, or by ctr under its tag.
	d.Ctr(t, "-n", ns, "images", "pull", "--plain-http", c.ref)
	before := reg.Total()
	for _, im := range []image{a, c} {
		r, err := p.Pull(ctx, im.ref, im.digest, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Present || r.Bytes != 0 {
			t.Errorf("%s again: %+v, want present and nothing fetched", im.ref, r)
		}
		// The warmer looks the image's layers up by this name: it must be the record's,
		// also for an image ctr pulled under its tag.
		if _, err := d.Client(t).ImageService().Get(namespaces.WithNamespace(ctx, ns), r.Name); err != nil {
			t.Errorf("%s again: name %s is no image record: %v", im.ref, r.Name, err)
		}
	}
	if after := reg.Total(); after != before {
		t.Errorf("pre-pulling present images made the registry serve %d bytes", after-before)
	}

	// Another namespace has none of them.
	q, err := New(d.Address, "other", Options{PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	// containerd shares blobs between namespaces, so nothing need be fetched; the image is
	// unpacked there all the same.
	if r, err := q.Pull(ctx, c.ref, c.digest, nil); err != nil || r.Present {
		t.Errorf("pull into another namespace: %+v, %v; want it pulled", r, err)
	}
	otx := namespaces.WithNamespace(ctx, "other")
	if imgs, err := d.Client(t).ImageService().List(otx, "target.digest=="+c.digest); err != nil || len(imgs) != 1 {
		t.Errorf("namespace other: images %v, %v; want the one pulled", imgs, err)
	}

	reg.Stop()
	fresh := pushImageTo(t, "test/d")
	_, err = p.Pull(ctx, fresh, "sha256:"+strings.Repeat("a", 64), nil)
	if err == nil {
		t.Fatal("pull from a dead registry succeeded")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("dead registry: %v, want it to say connection refused", err)
	}
}

// pushImageTo names an image on a registry that has gone away.
func pushImageTo(t *testing.T, repo string) string {
	t.Helper()
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{})
	reg.Stop()
	return reg.Host + "/" + repo + ":v1"
}

func TestCanonical(t *testing.T) {
	dg := "sha256:" + strings.Repeat("b", 64)
	for _, c := range []struct{ ref, digest, want, err string }{
		{"reg.example/a/b:v1", dg, "reg.example/a/b@" + dg, ""},
		{"reg.example/a/b:v1@" + dg, "", "reg.example/a/b@" + dg, ""},
		{"reg.example/a/b@" + dg, dg, "reg.example/a/b@" + dg, ""},
		{"busybox", dg, "docker.io/library/busybox@" + dg, ""},
		{"reg.example/a/b:v1", "", "", "no digest"},
		{"reg.example/a/b@" + dg, "sha256:" + strings.Repeat("c", 64), "", "digest is not"},
		{"reg.example/a/b", "sha256:xyz", "", "digest"},
		{"Bad Ref", dg, "", "invalid reference"},
		{"reg.example/a/b@sha512:" + strings.Repeat("d", 128), "", "", "not sha256"},
	} {
		got, err := canonical(c.ref, c.digest)
		switch {
		case c.err == "" && (err != nil || got.String() != c.want):
			t.Errorf("canonical(%q, %q) = %v, %v; want %s", c.ref, c.digest, got, err, c.want)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("canonical(%q, %q): %v, want an error saying %q", c.ref, c.digest, err, c.err)
		case c.err != "" && !errors.Is(err, ErrInvalid):
			t.Errorf("canonical(%q, %q): %v, want it to wrap ErrInvalid", c.ref, c.digest, err)
		}
		if cerr := CheckRef(c.ref, c.digest); (cerr == nil) != (err == nil) {
			t.Errorf("CheckRef(%q, %q) = %v, canonical's error %v", c.ref, c.digest, cerr, err)
		}
	}
}
