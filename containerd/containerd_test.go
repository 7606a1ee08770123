package containerd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coldtrace/coldtrace/internal/ctrtest"
)

// env is a private containerd, a registry and a client for one test.
type env struct {
	ctrd *ctrtest.Containerd
	reg  *ctrtest.Registry
	c    *Client
}

func setup(t *testing.T, rate int64) *env {
	t.Helper()
	ctrd := ctrtest.StartContainerd(t)
	c, err := New(ctrd.Address, "default")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &env{ctrd: ctrd, reg: ctrtest.StartRegistry(t, ctrtest.RegistryOptions{Rate: rate}), c: c}
}

func layer(t *testing.T, files ...ctrtest.File) v1.Layer {
	t.Helper()
	l, err := ctrtest.Layer(files...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func push(t *testing.T, reg *ctrtest.Registry, repoTag string, layers ...v1.Layer) (string, v1.Image) {
	t.Helper()
	img, err := ctrtest.BuildImage(layers, []string{"/bin/sh"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return reg.Push(t, repoTag, img), img
}

func digestOf(t *testing.T, l v1.Layer) (string, int64) {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	size, err := l.Size()
	if err != nil {
		t.Fatal(err)
	}
	return d.String(), size
}

// checkDownload checks a pull's times against the registry's clock, which bounds them
// however busy the machine is: each layer's Start is before the registry had its request,
// its Fetched after the registry sent its last byte and before its unpack; and the
// download took at least what the registry's rate allows for the bytes it sent (the
// bucket starts empty). How much longer it took is the machine's business, not the pull's.
func checkDownload(t *testing.T, reg *ctrtest.Registry, p *Pulled, rate int64) {
	t.Helper()
	var fetched time.Time
	for i, lp := range p.Layers {
		requested, last := reg.Sent(lp.Digest)
		if requested.IsZero() || lp.Start.After(requested) || lp.Fetched.Before(last) ||
			lp.UnpackStart.Before(lp.Fetched) || lp.UnpackEnd.Before(lp.UnpackStart) {
			t.Errorf("layer %d: requested at %v, fetched at %v, unpacked at %v..%v; the registry had the request at %v and sent its last byte at %v",
				i, lp.Start, lp.Fetched, lp.UnpackStart, lp.UnpackEnd, requested, last)
		}
		if lp.Fetched.After(fetched) {
			fetched = lp.Fetched
		}
	}
	took := fetched.Sub(p.Start)
	want := time.Duration(float64(reg.Total()) / float64(rate) * float64(time.Second))
	t.Logf("pulled %d bytes in %v (%.2f MiB/s, limit %.2f MiB/s), unpacked in %v",
		reg.Total(), took, float64(reg.Total())/took.Seconds()/(1<<20), float64(rate)/(1<<20), p.End.Sub(fetched))
	if took < want {
		t.Errorf("download took %v, less than the registry's rate allows: %v", took, want)
	}
}

// TestPullRunResolve pulls a small image through the rate-limited registry, runs busybox
// in it, and checks the pull's bytes and duration, the cgroup and the layer of files.
func TestPullRunResolve(t *testing.T) {
	const rate = 8 << 20
	e := setup(t, rate)
	ctx := context.Background()

	weights, _ := ctrtest.Safetensors(6<<20, 4)
	layers := []v1.Layer{
		ctrtest.BusyboxLayer(t),
		layer(t, ctrtest.File{Path: "/somefile", Data: []byte("hello from layer 1\n")},
			ctrtest.File{Path: "/etc/shadowed", Data: []byte("layer 1")},
			ctrtest.File{Path: "/etc/gone", Data: []byte("deleted by layer 2")},
			ctrtest.File{Path: "/opt/old/a", Data: []byte("hidden by layer 2's opaque directory")}),
		layer(t, ctrtest.File{Path: "/etc/shadowed", Data: []byte("layer 2")},
			ctrtest.File{Path: "/etc/.wh.gone"},
			ctrtest.File{Path: "/opt/old/.wh..wh..opq"},
			ctrtest.File{Path: "/opt/old/b", Data: []byte("b")},
			ctrtest.File{Path: "/models/w.safetensors", Data: weights}),
	}
	ref, img := push(t, e.reg, "test/small:v1", layers...)

	p, err := e.c.Pull(ctx, ref, PullOptions{PlainHTTP: true, Fresh: true})
	if err != nil {
		t.Fatal(err)
	}

	// Bytes: what the client received per layer is what the registry served, and the
	// layer's compressed size; in all, the layers and the config.
	var layerBytes int64
	for i, l := range layers {
		digest, size := digestOf(t, l)
		lp := p.Layers[i]
		if lp.Digest != digest || lp.Size != size || lp.Bytes != size || e.reg.Served(digest) != size {
			t.Errorf("layer %d: pulled %s %d bytes of %d, registry served %d; want %s %d", i, lp.Digest, lp.Bytes, lp.Size, e.reg.Served(digest), digest, size)
		}
		layerBytes += size
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if want := layerBytes + int64(len(cfg)); e.reg.Total() != want {
		t.Errorf("registry served %d bytes, want layers %d + config %d", e.reg.Total(), layerBytes, len(cfg))
	}

	checkDownload(t, e.reg, p, rate)

	// Run busybox; it writes a file into the writable layer.
	out := filepath.Join(t.TempDir(), "stdout")
	id := uniqueID("small")
	ct, err := e.c.Create(ctx, id, ref, CreateOptions{
		Args:   []string{"sh", "-c", "cat /somefile; echo rw > /written; sleep 1"},
		Stdout: out,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ct.Delete(context.Background()) })

	mnt, _, err := Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(mnt, "default", id); ct.Cgroup.Path != want {
		t.Errorf("cgroup %s, want %s", ct.Cgroup.Path, want)
	}
	st, err := exec.Command("stat", "-c", "%i", ct.Cgroup.Path).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(st)); got != fmt.Sprint(ct.Cgroup.ID) {
		t.Errorf("cgroup id %d, stat says inode %s", ct.Cgroup.ID, got)
	}

	if err := ct.Start(ctx); err != nil {
		t.Fatal(err)
	}
	code, err := ct.Wait(ctx)
	if err != nil || code != 0 {
		t.Fatalf("workload exited %d, %v", code, err)
	}
	if b, _ := os.ReadFile(out); string(b) != "hello from layer 1\n" {
		t.Errorf("stdout %q", b)
	}

	for _, tc := range []struct {
		path  string
		where string
		index int
		data  string // content at the real path, when checked
	}{
		{"/bin/busybox", WhereImage, 0, ""},
		{"/somefile", WhereImage, 1, "hello from layer 1\n"},
		{"/etc/shadowed", WhereImage, 2, "layer 2"},
		{"/opt/old/b", WhereImage, 2, "b"},
		{"/models/w.safetensors", WhereImage, 2, string(weights)},
		{"/written", WhereRW, -1, "rw\n"},
		{"/proc/self/status", WhereVolume, -1, ""},
	} {
		ref, real, err := ct.Rootfs.LayerOf(tc.path)
		if err != nil {
			t.Errorf("LayerOf(%s): %v", tc.path, err)
			continue
		}
		if ref.Where != tc.where || ref.Index != tc.index {
			t.Errorf("LayerOf(%s) = %+v, want %s layer %d", tc.path, ref, tc.where, tc.index)
		}
		if tc.where == WhereImage {
			if digest, _ := digestOf(t, layers[tc.index]); ref.Digest != digest || ref.DiffID != p.Layers[tc.index].DiffID {
				t.Errorf("LayerOf(%s) = %+v, want digest %s diff id %s", tc.path, ref, digest, p.Layers[tc.index].DiffID)
			}
		}
		if tc.data != "" {
			if b, err := os.ReadFile(real); err != nil || string(b) != tc.data {
				t.Errorf("LayerOf(%s): real path %s holds %.20q, %v", tc.path, real, b, err)
			}
		}
	}
	for _, gone := range []string{"/etc/gone", "/opt/old/a", "/nonexistent", "/somefile/below"} {
		if ref, real, err := ct.Rootfs.LayerOf(gone); !errors.Is(err, ErrNotInRootfs) {
			t.Errorf("LayerOf(%s) = %+v %s %v, want ErrNotInRootfs", gone, ref, real, err)
		}
	}
}

func TestPullMissingImage(t *testing.T) {
	e := setup(t, 0)
	ref := e.reg.Host + "/test/absent:v1"
	_, err := e.c.Pull(context.Background(), ref, PullOptions{PlainHTTP: true})
	if err == nil || !strings.Contains(err.Error(), "image not found in the registry") || !strings.Contains(err.Error(), ref) {
		t.Fatalf("pull of a missing image: %v", err)
	}
	t.Log(err)
}

func TestPullRegistryDies(t *testing.T) {
	e := setup(t, 0)
	data, _ := ctrtest.Safetensors(4<<20, 2)
	ref, _ := push(t, e.reg, "test/dies:v1", layer(t, ctrtest.File{Path: "/w.safetensors", Data: data}))
	e.reg.FailAfter(1 << 20)
	start := time.Now()
	_, err := e.c.Pull(context.Background(), ref, PullOptions{PlainHTTP: true})
	if err == nil || !strings.Contains(err.Error(), "EOF") || !strings.Contains(err.Error(), "received ") {
		t.Fatalf("pull from a registry that died: %v", err)
	}
	if e.reg.Total() != 1<<20 {
		t.Errorf("registry served %d bytes before it died, want %d", e.reg.Total(), 1<<20)
	}
	t.Logf("after %v: %v", time.Since(start), err)
}

// TestPullFresh pulls an image again: without Fresh nothing is downloaded, with Fresh
// everything is, as on a new node.
func TestPullFresh(t *testing.T) {
	e := setup(t, 0)
	ctx := context.Background()
	data, _ := ctrtest.Safetensors(1<<20, 2)
	l := layer(t, ctrtest.File{Path: "/w.safetensors", Data: data})
	ref, _ := push(t, e.reg, "test/fresh:v1", ctrtest.BusyboxLayer(t), l)
	digest, size := digestOf(t, l)

	var mu sync.Mutex
	progress := map[string]int64{}
	opts := PullOptions{PlainHTTP: true, Progress: func(d string, got, _ int64) {
		mu.Lock()
		defer mu.Unlock()
		progress[d] = got
	}}
	first, err := e.c.Pull(ctx, ref, opts)
	if err != nil {
		t.Fatal(err)
	}
	if progress[digest] != size {
		t.Errorf("progress reported %d bytes of %s, want %d", progress[digest], digest, size)
	}
	tp := first.Trace(first.Start)
	if tp.Start != 0 || tp.End <= 0 || tp.Registry != e.reg.Host || tp.Layers[1].Fetched <= 0 || tp.Layers[1].UnpackEnd < tp.Layers[1].Fetched {
		t.Errorf("trace of the pull: %+v", tp)
	}

	served := e.reg.Total()
	again, err := e.c.Pull(ctx, ref, PullOptions{PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	if e.reg.Total() != served || again.Bytes != 0 || again.Layers[1].Bytes != 0 {
		t.Errorf("a second pull downloaded %d bytes (registry: %d)", again.Bytes, e.reg.Total()-served)
	}

	fresh, err := e.c.Pull(ctx, ref, PullOptions{PlainHTTP: true, Fresh: true})
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Layers[1].Bytes != size || e.reg.Served(digest) != 2*size {
		t.Errorf("a fresh pull downloaded %d bytes of layer 1, registry served %d in all; want %d and %d", fresh.Layers[1].Bytes, e.reg.Served(digest), size, 2*size)
	}
}

// uniqueID names a container for one test run: containerd 1.6 keeps runc's state under a
// fixed /run/containerd/runc/<namespace>/<id>, shared by every daemon on the host, so a
// fixed id collides with another run or with what a killed run left behind.
func uniqueID(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), time.Now().UnixNano())
}

// TestNameIngests names another pull's blob while that pull still downloads it (by the
// repository and digest its manifest's labels give), once it created its image (by its
// tag), and never as the recording's own image.
func TestNameIngests(t *testing.T) {
	e := setup(t, 1<<20)
	ctx := context.Background()
	data, _ := ctrtest.Safetensors(3<<20, 2)
	l := layer(t, ctrtest.File{Path: "/w.safetensors", Data: data})
	ref, img := push(t, e.reg, "test/other:v1", l)
	blob, _ := digestOf(t, l)
	top, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	name := func(own, blob string) string {
		in := []Ingest{{Namespace: "default", Digest: blob}}
		e.c.NameIngests(ctx, in, own)
		return in[0].Image
	}

	done := make(chan error, 1)
	go func() {
		_, err := e.c.Pull(ctx, ref, PullOptions{PlainHTTP: true})
		done <- err
	}()
	// The layer's ingest is active: the pull has its manifest, not yet its image.
	for active := false; !active; time.Sleep(20 * time.Millisecond) {
		sts, err := e.c.c.ContentStore().ListStatuses(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range sts {
			active = active || ingestDigest(st).String() == blob
		}
	}
	// The label names the registry by its host, without the port.
	host, _, _ := strings.Cut(e.reg.Host, ":")
	for _, d := range []string{blob, top.String()} { // the layer, and the manifest itself
		if got, want := name("", d), host+"/test/other@"+top.String(); got != want {
			t.Errorf("during the pull %s is named %q, want %q", d, got, want)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := name("", blob); got != ref {
		t.Errorf("after the pull the blob is named %q, want %q", got, ref)
	}
	if got := name(ref, blob); got != "" {
		t.Errorf("the recording's own image names the blob %q", got)
	}
}

// TestRelativeSocket: a socket path relative to the working directory is a path, as for
// ctr, not "invalid (non-empty) authority".
func TestRelativeSocket(t *testing.T) {
	ctrd := ctrtest.StartContainerd(t)
	dir, sock := filepath.Split(ctrd.Address)
	t.Chdir(filepath.Dir(filepath.Clean(dir)))
	rel := filepath.Join(filepath.Base(dir), sock)
	c, err := New(rel, "default")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.c.Version(context.Background()); err != nil {
		t.Errorf("containerd at %s (relative): %v", rel, err)
	}
}
