package ctrtest

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// pullLayers downloads every layer of ref and returns the bytes read.
func pullLayers(ref string) (int64, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return 0, err
	}
	img, err := remote.Image(r, remote.WithRetryBackoff(remote.Backoff{Steps: 1}))
	if err != nil {
		return 0, err
	}
	layers, err := img.Layers()
	if err != nil {
		return 0, err
	}
	var total int64
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return total, err
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func TestRegistryRateAndCounts(t *testing.T) {
	const rate = 8 << 20
	reg := StartRegistry(t, RegistryOptions{Rate: rate})
	l, err := Layer(File{Path: "/data", Data: bytes.Repeat([]byte("x"), 1<<20)}, File{Path: "/rand", Data: func() []byte { b, _ := Safetensors(4<<20, 2); return b }()})
	if err != nil {
		t.Fatal(err)
	}
	img, err := BuildImage([]v1.Layer{l}, []string{"/bin/true"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "test/rate:v1", img)

	start := time.Now()
	n, err := pullLayers(ref)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	size, _ := l.Size()
	digest, _ := l.Digest()
	if n != size || reg.Served(digest.String()) != size {
		t.Errorf("read %d, registry counted %d for %s, layer is %d bytes", n, reg.Served(digest.String()), digest, size)
	}
	if reg.Total() != size {
		t.Errorf("registry total %d, want %d", reg.Total(), size)
	}
	// The manifest, fetched by tag, is counted under its digest but not in the total.
	raw, _ := img.RawManifest()
	md, _ := img.Digest()
	if got := reg.Served(md.String()); got != int64(len(raw)) {
		t.Errorf("registry counted %d bytes for the manifest %s, it is %d bytes", got, md, len(raw))
	}
	want := time.Duration(float64(size) / rate * float64(time.Second))
	t.Logf("%d bytes in %v at limit %d B/s: %.1f MiB/s (expected %v)", size, took, rate, float64(size)/took.Seconds()/(1<<20), want)
	if took < want*8/10 || took > want*12/10 {
		t.Errorf("download took %v, want %v ± 20%%", took, want)
	}
}

func TestRegistryFailAfter(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	data, _ := Safetensors(1<<20, 1)
	l, err := Layer(File{Path: "/w", Data: data})
	if err != nil {
		t.Fatal(err)
	}
	img, err := BuildImage([]v1.Layer{l}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "test/fail:v1", img)
	reg.FailAfter(100 << 10)
	n, err := pullLayers(ref)
	if err == nil {
		t.Fatal("download from a registry that died succeeded")
	}
	if n != 100<<10 || reg.Total() != 100<<10 {
		t.Errorf("read %d bytes, registry served %d; want %d", n, reg.Total(), 100<<10)
	}
	if !strings.Contains(err.Error(), "EOF") {
		t.Errorf("error %q does not say the stream ended", err)
	}
	// Dead: even the manifest is refused now.
	if _, err := pullLayers(ref); err == nil {
		t.Error("registry still answers after it died")
	}
}
