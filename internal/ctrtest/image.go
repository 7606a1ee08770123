package ctrtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/coldtrace/coldtrace/internal/testenv"
)

// File is one entry of a layer.
type File struct {
	Path string // absolute path in the image
	Mode int64  // permission bits; 0644 when zero
	Data []byte
	Link string // symlink target; the entry is a symlink when set
}

// modTime is fixed so that the same files always make the same layer digest.
var modTime = time.Unix(1700000000, 0)

// Layer builds a gzip-compressed OCI layer holding files, with their parent directories.
func Layer(files ...File) (v1.Layer, error) { return layer(gzip.BestSpeed, files) }

// StoredLayer is Layer without compression inside the gzip stream: for data that does not
// compress, like weights, where compressing would only cost seconds per 100 MiB.
func StoredLayer(files ...File) (v1.Layer, error) { return layer(gzip.NoCompression, files) }

func layer(level int, files []File) (v1.Layer, error) {
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	dirs := map[string]bool{}
	for _, f := range files {
		for d := path.Dir(f.Path); d != "/" && d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	var sorted []string
	for d := range dirs {
		sorted = append(sorted, d)
	}
	sort.Strings(sorted) // parents before children
	for _, d := range sorted {
		h := &tar.Header{Typeflag: tar.TypeDir, Name: d[1:] + "/", Mode: 0o755, ModTime: modTime}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: f.Path[1:], Mode: f.Mode, Size: int64(len(f.Data)), ModTime: modTime}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if f.Link != "" {
			h.Typeflag, h.Linkname, h.Size, h.Mode = tar.TypeSymlink, f.Link, 0, 0o777
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}

	// Compress once and serve the compressed bytes: recompressing on every read of a
	// 256 MiB layer would cost seconds each time.
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, level)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(tarBuf.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	blob := gz.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(blob)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// BusyboxApplets are linked to /bin/busybox in BusyboxLayer.
var BusyboxApplets = []string{"sh", "cat", "sleep", "ls", "stat", "wc", "head", "dd", "true"}

// BusyboxLayer is a base layer with the host's static busybox (apt package busybox-static)
// as /bin/busybox and links for BusyboxApplets. It skips the test without it.
func BusyboxLayer(t testing.TB) v1.Layer {
	t.Helper()
	bin, err := os.ReadFile("/bin/busybox")
	testenv.Require(t, "/bin/busybox", err == nil, "apt-get install busybox-static")
	files := []File{{Path: "/bin/busybox", Mode: 0o755, Data: bin}}
	for _, a := range BusyboxApplets {
		files = append(files, File{Path: "/bin/" + a, Link: "busybox"})
	}
	l, err := Layer(files...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// BuildImage makes an OCI image for this machine's platform from layers (bottom first)
// with the given entrypoint and command.
func BuildImage(layers []v1.Layer, entrypoint, cmd []string) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Entrypoint, cf.Config.Cmd = entrypoint, cmd
	cf.Config.Env = []string{"PATH=/bin"}
	return mutate.ConfigFile(img, cf)
}

// WithEnv returns img with env (NAME=value) added to its configuration's environment.
func WithEnv(img v1.Image, env ...string) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Config.Env = append(cf.Config.Env, env...)
	return mutate.ConfigFile(img, cf)
}

// Sizes parameterise ColdStartLayers so that fast tests can use a small one.
type Sizes struct {
	Libs    int   // number of files in the libs layer
	LibSize int   // bytes of each
	Weights int64 // bytes of tensor data in the safetensors file
	Tensors int
}

// FullSizes are the sizes of the cold-start image of issue 3.
var FullSizes = Sizes{Libs: 2000, LibSize: 2048, Weights: 256 << 20, Tensors: 64}

// Paths in the cold-start test image.
const (
	LibsDir     = "/opt/libs"
	WeightsPath = "/models/model.safetensors"
	// ShardURLPath is what the test entrypoint (recorder/testdata/coldstart.c) downloads
	// from its origin; ShardPath where a test tells it (env MODEL_PATH) to write it.
	ShardURLPath = "/hub/shard.safetensors"
	ShardPath    = "/models/shard.safetensors"
)

// ColdStart holds the layers of the cold-start test image and what tests need to know.
type ColdStart struct {
	Base, Libs, Weights v1.Layer
	LibPaths            []string // the libs layer's files
	Tensors             []Tensor // the tensors of WeightsPath
}

// ColdStartLayers builds the layers of the cold-start test image: busybox base, a libs layer of
// many small files under LibsDir, and a weights layer with a safetensors file at
// WeightsPath. Callers add their own entrypoint layer and build the image with BuildImage.
func ColdStartLayers(t testing.TB, s Sizes) *ColdStart {
	t.Helper()
	ti := &ColdStart{Base: BusyboxLayer(t)}
	libs := make([]File, s.Libs)
	for i := range libs {
		data := bytes.Repeat([]byte{byte(i)}, s.LibSize)
		libs[i] = File{Path: fmt.Sprintf("%s/d%02d/lib%04d.so", LibsDir, i%50, i), Data: data}
		ti.LibPaths = append(ti.LibPaths, libs[i].Path)
	}
	var err error
	if ti.Libs, err = Layer(libs...); err != nil {
		t.Fatal(err)
	}
	st, tensors := Safetensors(s.Weights, s.Tensors)
	ti.Tensors = tensors
	if ti.Weights, err = StoredLayer(File{Path: WeightsPath, Data: st}); err != nil {
		t.Fatal(err)
	}
	return ti
}

// ColdStartImage is the cold-start test image as pushed to a registry.
type ColdStartImage struct {
	*ColdStart
	Layers      []v1.Layer
	Ref, Digest string
	// Args run the entrypoint against an origin of the shard at 127.0.0.1:port: it reads
	// the libraries, downloads the shard, maps every other tensor of the weights (the
	// even-numbered ones), and listens.
	Args []string
}

// PushColdStart builds the cold-start test image (ColdStartLayers, the static entrypoint
// recorder/testdata/coldstart.c compiled with gcc, MODEL_PATH set to ShardPath, then any
// extra layers) and pushes it to reg as test/coldstart:v1.
func PushColdStart(t testing.TB, reg *Registry, port int, sizes Sizes, extra ...v1.Layer) *ColdStartImage {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(here), "..", "..", "recorder", "testdata", "coldstart.c")
	bin := filepath.Join(t.TempDir(), "coldstart")
	if b, err := exec.Command("gcc", "-O2", "-Wall", "-o", bin, src, "-static").CombinedOutput(); err != nil {
		t.Fatalf("gcc coldstart.c: %v\n%s", err, b)
	}
	entry, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	im := &ColdStartImage{ColdStart: ColdStartLayers(t, sizes)}
	entryLayer, err := Layer(File{Path: "/coldstart", Mode: 0o755, Data: entry})
	if err != nil {
		t.Fatal(err)
	}
	im.Layers = append([]v1.Layer{im.Base, im.Libs, im.Weights, entryLayer}, extra...)
	img, err := BuildImage(im.Layers, []string{"/coldstart"}, nil)
	if err == nil {
		img, err = WithEnv(img, "MODEL_PATH="+ShardPath)
	}
	if err != nil {
		t.Fatal(err)
	}
	im.Ref = reg.Push(t, "test/coldstart:v1", img)
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	im.Digest = digest.String()
	im.Args = []string{"/coldstart", strings.TrimPrefix(LibsDir, "/"), fmt.Sprint(port), WeightsPath}
	for i, ts := range im.Tensors {
		if i%2 == 0 {
			im.Args = append(im.Args, fmt.Sprintf("%d:%d", ts.Off, ts.Len))
		}
	}
	return im
}
