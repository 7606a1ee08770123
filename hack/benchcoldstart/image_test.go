package benchcoldstart

import (
	"bytes"
	_ "embed"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coldtrace/coldtrace/internal/ctrtest"
)

//go:embed server.py
var serverPy []byte

// Paths in the benchmark image.
const (
	pythonBin   = "/usr/bin/python3.11"
	pythonLib   = "/usr/lib/python3.11"
	libsDir     = "/opt/venv/site-packages"
	weightsPath = "/models/model.safetensors"
	serverPath  = "/srv/server.py"
	shardPath   = "/models/shard.safetensors" // where the server writes a download
)

// imageSizes split the image's bytes (beyond the Python runtime) among its layers as an
// inference image does: most in the weights, much in native libraries (CUDA, PyTorch),
// little in thousands of Python modules.
type imageSizes struct {
	modules, moduleSize int
	natives             int
	nativeSize          int64
	weights             int64
	tensors             int
}

func sizesFor(total int64) imageSizes {
	s := imageSizes{moduleSize: 4 << 10, natives: 4, tensors: 64}
	s.modules = int(min(3000, max(40, total/(512<<10))))
	rest := total - int64(s.modules*s.moduleSize)
	s.nativeSize = rest * 2 / 5 / int64(s.natives)
	s.weights = rest - s.nativeSize*int64(s.natives)
	if total < 64<<20 {
		s.tensors = 10
	}
	return s
}

// pythonLayer holds the host's Python (Debian's python3.11) with its standard library and
// the shared objects it and its extension modules link, found by ldd.
func pythonLayer(t testing.TB) (v1.Layer, int64) {
	t.Helper()
	var files []ctrtest.File
	var size int64
	add := func(path string, mode int64) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, ctrtest.File{Path: path, Mode: mode, Data: data})
		size += int64(len(data))
	}
	add(pythonBin, 0o755)
	objects := []string{pythonBin}
	err := filepath.WalkDir(pythonLib, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "test" || d.Name() == "idlelib" || d.Name() == "tkinter" || d.Name() == "ensurepip") {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			add(p, 0o644)
			if strings.HasSuffix(p, ".so") {
				objects = append(objects, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("python layer: %v (apt-get install python3.11)", err)
	}
	out, err := exec.Command("ldd", objects...).Output()
	if err != nil {
		t.Fatalf("ldd: %v", err)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		// "	libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "	/lib64/ld-linux-x86-64.so.2 (0x...)"
		f := strings.Fields(line)
		for _, w := range f {
			if strings.HasPrefix(w, "/") && !strings.HasSuffix(w, ":") && !seen[w] {
				seen[w] = true
				real, err := filepath.EvalSymlinks(w)
				if err != nil {
					t.Fatal(err)
				}
				data, err := os.ReadFile(real)
				if err != nil {
					t.Fatal(err)
				}
				files = append(files, ctrtest.File{Path: w, Mode: 0o755, Data: data})
				size += int64(len(data))
			}
		}
	}
	l, err := ctrtest.StoredLayer(files...)
	if err != nil {
		t.Fatal(err)
	}
	return l, size
}

// benchImage is the inference-server image as pushed.
type benchImage struct {
	Ref   string
	Size  int64 // bytes of its files
	sizes imageSizes
}

// pushImage builds the image, every layer stored uncompressed (the data of a real one
// hardly compresses, and gzip would only cost this machine's CPUs), and pushes it.
func pushImage(t testing.TB, reg *ctrtest.Registry, total int64) *benchImage {
	t.Helper()
	sz := sizesFor(total)
	im := &benchImage{sizes: sz}
	py, pySize := pythonLayer(t)
	im.Size = pySize
	rng := rand.NewChaCha8([32]byte{7})

	// The libraries: a package of small modules, each defining a little code (what a
	// Python import compiles), and a few large native libraries of which the server maps
	// a quarter.
	var libs []ctrtest.File
	libs = append(libs, ctrtest.File{Path: libsDir + "/torchlike/__init__.py", Data: []byte("")})
	for i := range sz.modules {
		var b bytes.Buffer
		fmt.Fprintf(&b, "# module %d of the benchmark's libraries tree\nTABLE = [\n", i)
		for b.Len() < sz.moduleSize-200 {
			fmt.Fprintf(&b, "    (%d, %q),\n", b.Len(), fmt.Sprintf("op_%d_%d", i, b.Len()))
		}
		fmt.Fprintf(&b, "]\n\ndef op(x):\n    return x + len(TABLE)\n")
		libs = append(libs, ctrtest.File{Path: fmt.Sprintf("%s/torchlike/m%04d.py", libsDir, i), Data: b.Bytes()})
		im.Size += int64(b.Len())
	}
	for i := range sz.natives {
		data := make([]byte, sz.nativeSize)
		rng.Read(data)
		libs = append(libs, ctrtest.File{Path: fmt.Sprintf("%s/native/libtorchlike_%d.so", libsDir, i), Data: data})
		im.Size += sz.nativeSize
	}
	libLayer, err := ctrtest.StoredLayer(libs...)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := ctrtest.Safetensors(sz.weights, sz.tensors)
	im.Size += int64(len(st))
	weights, err := ctrtest.StoredLayer(ctrtest.File{Path: weightsPath, Data: st})
	if err != nil {
		t.Fatal(err)
	}
	server, err := ctrtest.StoredLayer(ctrtest.File{Path: serverPath, Data: serverPy})
	if err != nil {
		t.Fatal(err)
	}
	img, err := ctrtest.BuildImage([]v1.Layer{py, libLayer, weights, server}, []string{pythonBin, serverPath}, nil)
	if err == nil {
		img, err = ctrtest.WithEnv(img, "PYTHONDONTWRITEBYTECODE=1", "LIBS="+libsDir, "WEIGHTS="+weightsPath,
			"MODEL_PATH="+shardPath, fmt.Sprintf("IMPORTS=%d", sz.modules/2))
	}
	if err != nil {
		t.Fatal(err)
	}
	im.Ref = reg.Push(t, fmt.Sprintf("bench/llm-server:%dm", total>>20), img)
	return im
}
