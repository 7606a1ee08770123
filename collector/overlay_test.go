package collector

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/bpf"
	"github.com/coldtrace/coldtrace/trace"
)

// TestResolveLayers opens a file as a container sees it (the overlay's inode) while its
// faults and page-cache misses arrive under the real file of the layer: the trace shows one
// file, with its layer and all of its ranges.
func TestResolveLayers(t *testing.T) {
	real := filepath.Join(t.TempDir(), "model.safetensors")
	if err := os.WriteFile(real, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		t.Fatal(err)
	}
	dev, ino := kernelDev(st.Dev), st.Ino
	layer := trace.LayerRef{Index: 2, DiffID: "sha256:d", Digest: "sha256:c", Where: "image"}
	layerOf := func(p string) (trace.LayerRef, string, error) {
		switch p {
		case "/models/model.safetensors":
			return layer, real, nil
		case "/etc/hosts":
			return trace.LayerRef{Index: -1, Where: "volume"}, "", nil
		case "/models", "/etc": // the parent directories, in the image
			return layer, filepath.Dir(real), nil
		}
		return trace.LayerRef{}, "", errors.New("not in the container's file system")
	}

	c := New(t0, Options{})
	ms := time.Millisecond
	miss := bpf.EventCacheMiss{H: hdr(bpf.EvCacheMiss, 10, 3*ms), Dev: dev, Ino: ino, Index: 2, Pages: 2}
	handle(t, c,
		openEv(10, ms, atFDCWD, 3, "/models/model.safetensors", 77, sIFREG, 64<<10),
		readEv(10, 2*ms, 3, 77, 0, 4096),
		faultEv(10, 3*ms, dev, ino, 8192, 8192), bpf.Encode(&miss),
		openEv(10, 4*ms, atFDCWD, 4, "/etc/hosts", 78, sIFREG, 100),
		openEv(10, 4*ms, atFDCWD, 5, "/tmp/gone", 79, sIFREG, 100),
	)
	c.ResolveLayers(layerOf)
	tr := c.Trace(Meta{End: t0 + uint64(10*ms), Outcome: trace.OutcomeExited})

	if len(tr.Files) != 3 {
		t.Fatalf("%d files, want 3 (the real inode folded into the overlay's): %+v", len(tr.Files), tr.Files)
	}
	f := tr.Files[0]
	if f.Path != "/models/model.safetensors" || f.Ino != 77 || f.Layer == nil || *f.Layer != layer {
		t.Errorf("weights: %s inode %d layer %+v, want layer %+v", f.Path, f.Ino, f.Layer, layer)
	}
	want := []trace.Range{{Off: 0, Len: 4096, First: 2 * ms, Last: 2*ms + 1000, Via: trace.AccessRead},
		{Off: 8192, Len: 8192, First: 3 * ms, Last: 3 * ms, Via: trace.AccessMmap}}
	if len(f.Ranges) != 2 || f.Ranges[0] != want[0] || f.Ranges[1] != want[1] {
		t.Errorf("ranges %+v, want %+v", f.Ranges, want)
	}
	if f.MappedBytes != 8192 || f.BytesRead != 4096 || f.CacheMisses != 2 || f.CacheMissAt != 3*ms {
		t.Errorf("mapped %d, read %d, misses %d at %v", f.MappedBytes, f.BytesRead, f.CacheMisses, f.CacheMissAt)
	}
	if l := tr.Files[1].Layer; tr.Files[1].Path != "/etc/hosts" || l == nil || l.Where != "volume" {
		t.Errorf("%s: layer %+v, want a volume", tr.Files[1].Path, l)
	}
	if l := tr.Files[2].Layer; l != nil {
		t.Errorf("%s: layer %+v, want none", tr.Files[2].Path, l)
	}
}

// TestResolveLayersInterpreter starts a dynamic executable in a container whose loader
// path is an absolute link, as /lib64/ld-linux-x86-64.so.2 is in Debian images: the kernel
// maps the loader without an open, and its faults, under the real inode, are named after
// the loader that the executable asks for, in its layer.
func TestResolveLayersInterpreter(t *testing.T) {
	interp := interpreter("/bin/true")
	if interp == "" {
		t.Fatal("/bin/true names no ELF interpreter")
	}
	root := t.TempDir() // one image layer
	exe, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"bin", "lib", filepath.Dir(interp)} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "bin/app"), exe, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "lib/ld.so"), make([]byte, 8192), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/lib/ld.so", filepath.Join(root, interp)); err != nil {
		t.Fatal(err)
	}
	layer := trace.LayerRef{Index: 0, Digest: "sha256:c", Where: "image"}
	layerOf := func(p string) (trace.LayerRef, string, error) {
		real := filepath.Join(root, p)
		if _, err := os.Lstat(real); err != nil {
			return trace.LayerRef{}, "", err
		}
		return layer, real, nil
	}
	key := func(p string) (uint64, uint64) {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(root, p), &st); err != nil {
			t.Fatal(err)
		}
		return kernelDev(st.Dev), st.Ino
	}

	c := New(t0, Options{})
	exec := bpf.EventExec{H: hdr(bpf.EvExec, 10, 0), Dev: 99, Ino: 1}
	cstr(exec.Filename[:], "/bin/app")
	ldDev, ldIno := key("lib/ld.so")
	exeDev, exeIno := key("bin/app")
	handle(t, c, bpf.Encode(&exec),
		faultEv(10, time.Millisecond, ldDev, ldIno, 0, 4096),
		faultEv(10, time.Millisecond, exeDev, exeIno, 0, 4096))
	c.ResolveLayers(layerOf)
	tr := c.Trace(Meta{End: t0 + uint64(10*time.Millisecond), Outcome: trace.OutcomeExited})

	got := map[string]trace.File{}
	for _, f := range tr.Files {
		got[f.Path] = f
	}
	// The loader's entry in the layer is the link's target.
	loader := layer
	loader.Path = "/lib/ld.so"
	for p, want := range map[string]trace.LayerRef{"/bin/app": layer, interp: loader} {
		f, ok := got[p]
		if !ok || f.Layer == nil || *f.Layer != want || f.MappedBytes != 4096 {
			t.Errorf("%s: %+v, want layer %+v and 4096 bytes mapped; files %v", p, f, want, tr.Files)
		}
	}
	if len(tr.Files) != 2 {
		t.Errorf("%d files, want the executable and its loader: %+v", len(tr.Files), tr.Files)
	}
}

// TestFollow resolves links anywhere in a path as inside the container: a directory link
// as usrmerge's /lib -> usr/lib, absolute targets from the container's root, "..", and a
// loop.
func TestFollow(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "usr/lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/lib/libc.so"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"lib": "usr/lib", "abs": "/lib/../lib/libc.so", "loop": "loop2", "loop2": "/loop",
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	layerOf := func(p string) (trace.LayerRef, string, error) {
		real := filepath.Join(root, p)
		if _, err := os.Lstat(real); err != nil {
			return trace.LayerRef{}, "", err
		}
		return trace.LayerRef{Where: "image"}, real, nil
	}
	for p, want := range map[string]string{
		"/usr/lib/libc.so": "/usr/lib/libc.so", "/lib/libc.so": "/usr/lib/libc.so",
		"/abs": "/usr/lib/libc.so", "/lib/./../lib/libc.so": "/usr/lib/libc.so",
	} {
		_, real, got, err := follow(layerOf, p)
		if err != nil || got != want || real != filepath.Join(root, want) {
			t.Errorf("follow(%s) = %s, %s, %v; want %s", p, got, real, err, want)
		}
	}
	if _, _, _, err := follow(layerOf, "/loop/x"); err == nil || !strings.Contains(err.Error(), "too many levels") {
		t.Errorf("follow through a loop: %v", err)
	}
}
