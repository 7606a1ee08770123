package pagecache

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	ctrd "github.com/coldtrace/coldtrace/containerd"
	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/manifest"
)

func digestOf(t *testing.T, l v1.Layer) string {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// An image pulled into the kubelet's namespace: each hot entry is found in the layer the
// manifest names (the file's bytes are the layer's), warmed exactly (the test's own mincore
// over the file), and entries that changed, escape their layer or name an unknown layer
// are skipped with the reason. Close leaves no view behind.
func TestRunImageLayers(t *testing.T) {
	d := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{})
	lib := bytes.Repeat([]byte("libfoo "), 300<<10/7)
	weights, _ := ctrtest.Safetensors(4<<20, 4)
	mk := func(files ...ctrtest.File) v1.Layer {
		l, err := ctrtest.Layer(files...)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	l0 := mk(ctrtest.File{Path: "/usr/lib/libfoo.so.1", Data: lib},
		ctrtest.File{Path: "/usr/lib/libfoo.so", Link: "libfoo.so.1"},
		ctrtest.File{Path: "/etc/shadowed", Data: []byte("layer 0")})
	l1 := mk(ctrtest.File{Path: "/models/w.safetensors", Data: weights},
		ctrtest.File{Path: "/models/escape", Link: "../../../../../../../etc/passwd"},
		ctrtest.File{Path: "/etc/shadowed", Data: []byte("layer 1")})
	img, err := ctrtest.BuildImage([]v1.Layer{l0, l1}, []string{"/bin/sh"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "test/warm:v1", img)

	const ns = "k8s.io"
	c, err := ctrd.New(d.Address, ns)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	p, err := c.Pull(ctx, ref, ctrd.PullOptions{PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	cl := d.Client(t)
	layers, err := ImageLayers(ctx, cl, p.Ref, ctrd.DefaultSnapshotter)
	if err != nil {
		t.Fatal(err)
	}

	d0, d1 := digestOf(t, l0), digestOf(t, l1)
	for _, f := range []struct {
		layer, path string
		want        []byte
	}{{d0, "usr/lib/libfoo.so.1", lib}, {d1, "models/w.safetensors", weights}, {d0, "etc/shadowed", []byte("layer 0")}, {d1, "etc/shadowed", []byte("layer 1")}} {
		dir, err := layers.Dir(f.layer)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(dir + "/" + f.path)
		if err != nil || !bytes.Equal(got, f.want) {
			t.Fatalf("%s in layer %s (%s): %d bytes, %v; want the layer's %d bytes", f.path, f.layer, dir, len(got), err, len(f.want))
		}
		drop(t, dir+"/"+f.path)
	}

	libRanges := []manifest.Range{{Off: page, Len: 8 * page}}
	wRanges := []manifest.Range{{Off: 0, Len: 16 * page}, {Off: 2 << 20, Len: 1 << 20}}
	hot := []manifest.HotEntry{
		{Layer: d1, Path: "models/w.safetensors", Size: int64(len(weights)), Ranges: wRanges, Order: 1},
		{Layer: d0, Path: "usr/lib/libfoo.so", Size: int64(len(lib)), Ranges: libRanges, Order: 0},
		{Layer: d0, Path: "etc/shadowed", Size: 100, Ranges: []manifest.Range{{Off: 0, Len: page}}, Order: 2},
		{Layer: d1, Path: "models/escape", Ranges: []manifest.Range{{Off: 0, Len: page}}, Order: 3},
		{Layer: d1, Path: "../../../../etc/passwd", Ranges: []manifest.Range{{Off: 0, Len: page}}, Order: 4},
		{Layer: "sha256:" + strings.Repeat("1", 64), Path: "x", Ranges: []manifest.Range{{Off: 0, Len: page}}, Order: 5},
	}
	rep, err := Run(ctx, hot, RunOptions{Workers: 2, LayerDir: layers.Dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Entries {
		t.Logf("order %d %s: %d bytes, resident %.2f, skipped %q", r.Order, r.Path, r.Bytes, r.Fraction(), r.Skipped)
	}
	for slot, e := range map[int]manifest.HotEntry{0: hot[1], 1: hot[0]} {
		r := rep.Entries[slot]
		if r.Skipped != "" || r.Bytes != e.Bytes() || r.Fraction() != 1 {
			t.Errorf("%s: %+v, want %d bytes warmed and all resident", e.Path, r, e.Bytes())
			continue
		}
		// Ground truth: exactly the ranges' pages, by a mincore of the test's own.
		for i, in := range pagesIn(t, r.File) {
			if want := inRanges(int64(i)*page, e.Ranges); in != want {
				t.Errorf("%s page %d: resident %v, want %v", r.File, i, in, want)
			}
		}
	}
	for slot, want := range map[int]string{2: "size 7, the manifest says 100", 3: "outside the root", 4: `".." component`, 5: "in no image"} {
		if !strings.Contains(rep.Entries[slot].Skipped, want) {
			t.Errorf("entry %d skipped %q, want it to say %q", slot, rep.Entries[slot].Skipped, want)
		}
	}

	if err := layers.Close(ctx); err != nil {
		t.Fatal(err)
	}
	err = cl.SnapshotService(ctrd.DefaultSnapshotter).Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if strings.HasPrefix(info.Name, "coldtrace-warm-") {
			t.Errorf("view %s left after Close", info.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A one-layer image: the overlayfs snapshotter's view of it is a bind mount.
	one, err := ctrtest.BuildImage([]v1.Layer{l1}, []string{"/bin/sh"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p1, err := c.Pull(ctx, reg.Push(t, "test/one:v1", one), ctrd.PullOptions{PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	single, err := ImageLayers(ctx, cl, p1.Ref, ctrd.DefaultSnapshotter)
	if err != nil {
		t.Fatal(err)
	}
	defer single.Close(ctx)
	if dir, err := single.Dir(d1); err != nil {
		t.Fatal(err)
	} else if got, err := os.ReadFile(dir + "/etc/shadowed"); err != nil || string(got) != "layer 1" {
		t.Fatalf("one-layer image: etc/shadowed in %s is %q, %v", dir, got, err)
	}

	if _, err := ImageLayers(ctx, cl, "127.0.0.1:1/not/pulled:v1", ctrd.DefaultSnapshotter); err == nil {
		t.Fatal("layers of an image that is not there")
	} else {
		t.Log(err)
	}
}
