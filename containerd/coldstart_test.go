package containerd

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/testenv"
)

// TestColdStartImage pulls the full-size test image of a cold start (busybox, 2,000 small
// libraries, 256 MiB of safetensors) at 32 MiB/s and checks the pull and the file layers.
// The rate is what this test's client keeps up with on two busy cores: unloaded, it
// receives and stores about 100 MiB/s.
func TestColdStartImage(t *testing.T) {
	testenv.Require(t, "a run without -short", !testing.Short(), "the test pulls 258 MiB")
	const rate = 32 << 20
	e := setup(t, rate)
	ctx := context.Background()

	built := time.Now()
	ti := ctrtest.ColdStartLayers(t, ctrtest.FullSizes)
	layers := []v1.Layer{ti.Base, ti.Libs, ti.Weights}
	ref, _ := push(t, e.reg, "test/coldstart:v1", layers...)
	t.Logf("built and pushed in %v", time.Since(built))

	p, err := e.c.Pull(ctx, ref, PullOptions{PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range layers {
		digest, size := digestOf(t, l)
		if lp := p.Layers[i]; lp.Bytes != size || e.reg.Served(digest) != size {
			t.Errorf("layer %d: pulled %d bytes, registry served %d, size %d", i, lp.Bytes, e.reg.Served(digest), size)
		}
		t.Logf("layer %d: %d bytes, fetched at %v, unpacked in %v", i, size,
			p.Layers[i].Fetched.Sub(p.Start), p.Layers[i].UnpackEnd.Sub(p.Layers[i].UnpackStart))
	}
	checkDownload(t, e.reg, p, rate)

	out := filepath.Join(t.TempDir(), "stdout")
	ct, err := e.c.Create(ctx, uniqueID("coldstart"), ref, CreateOptions{
		Args:   []string{"sh", "-c", "ls " + ctrtest.LibsDir + "/d00 | wc -l"},
		Stdout: out,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ct.Delete(context.Background()) })
	if err := ct.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if code, err := ct.Wait(ctx); err != nil || code != 0 {
		t.Fatalf("workload exited %d, %v", code, err)
	}
	if b, _ := os.ReadFile(out); string(bytes.TrimSpace(b)) != "40" {
		t.Errorf("the workload sees %q files in %s/d00, want 40", b, ctrtest.LibsDir)
	}

	for _, path := range []string{ti.LibPaths[0], ti.LibPaths[len(ti.LibPaths)-1]} {
		if ref, _, err := ct.Rootfs.LayerOf(path); err != nil || ref.Index != 1 || ref.Digest != p.Layers[1].Digest {
			t.Errorf("LayerOf(%s) = %+v, %v; want layer 1", path, ref, err)
		}
	}
	ref2, real, err := ct.Rootfs.LayerOf(ctrtest.WeightsPath)
	if err != nil || ref2.Index != 2 || ref2.Digest != p.Layers[2].Digest {
		t.Fatalf("LayerOf(%s) = %+v, %v; want layer 2", ctrtest.WeightsPath, ref2, err)
	}
	// The unpacked weights file carries the tensors where ColdStartLayers says they are.
	f, err := os.ReadFile(real)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(f)
	var header map[string]struct {
		Offsets [2]int64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(f[8:8+n], &header); err != nil {
		t.Fatal(err)
	}
	for _, ts := range ti.Tensors {
		if got := header[ts.Name].Offsets; got[0]+int64(8+n) != ts.Off || got[1]-got[0] != ts.Len {
			t.Errorf("tensor %s at %v in the file, want off %d len %d", ts.Name, got, ts.Off, ts.Len)
		}
	}
	if last := ti.Tensors[len(ti.Tensors)-1]; last.Off+last.Len != int64(len(f)) || len(f) < 256<<20 {
		t.Errorf("weights file is %d bytes, tensors end at %d", len(f), last.Off+last.Len)
	}
}
