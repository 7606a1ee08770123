package advisor_test

import (
	"context"
	"path"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/advisor"
	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/manifest"
	"github.com/coldtrace/coldtrace/recorder"
	"github.com/coldtrace/coldtrace/trace"
)

// TestManifestCoversRealColdStart is the acceptance on real traces: the cold start of the
// container test image (busybox, a layer of libraries, safetensors weights of which half
// the tensors are mapped, a static entrypoint that downloads from a loopback server and
// listens) is recorded four times, each on a fresh container; a manifest built from the
// first three runs covers at least 99% of the image bytes the fourth run read and lists at
// most 110% of them, and lists the downloaded shard as an artifact: where it landed, its
// size, the sha256 of what the origin served and the URL it came from.
func TestManifestCoversRealColdStart(t *testing.T) {
	testenv.RequireBPF(t)
	testenv.RequireBinary(t, "gcc")
	ctrd := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{Rate: 64 << 20})
	// The shard is big enough to be an artifact; the entrypoint saves it in the
	// container's writable layer.
	shard := origin.StartHTTP(t, ctrtest.ShardURLPath, origin.Random(2<<20), 0)
	port := shard.Port()

	im := ctrtest.PushColdStart(t, reg, port, ctrtest.Sizes{Libs: 200, LibSize: 2048, Weights: 16 << 20, Tensors: 32})
	cs, ref, args := im.ColdStart, im.Ref, im.Args

	var traces []*trace.Trace
	for run := 1; run <= 4; run++ {
		tr, err := recorder.RecordImage(context.Background(), recorder.ImageOptions{
			Image: ref, Address: ctrd.Address, Namespace: "default", PlainHTTP: true, Fresh: run == 1,
			Args: args, HostNetwork: true, Timeout: time.Minute,
		})
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if tr.Outcome != trace.OutcomeReady || tr.Incomplete {
			t.Fatalf("run %d: outcome %s (%s), incomplete %v, warnings %v", run, tr.Outcome, tr.Error, tr.Incomplete, tr.Warnings)
		}
		traces = append(traces, tr)
	}

	m, err := advisor.BuildManifest(traces[:3], advisor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	wantArt := []manifest.Artifact{{Path: ctrtest.ShardPath, Origin: shard.URL(), Size: shard.Size(), Digest: shard.Digest()}}
	if !reflect.DeepEqual(m.Spec.Artifacts, wantArt) {
		t.Errorf("artifacts %+v, want %+v", m.Spec.Artifacts, wantArt)
	}
	t.Logf("artifacts: %+v", m.Spec.Artifacts)
	hot := map[[2]string][]manifest.Range{}
	var listed, listedImage int64
	for _, e := range m.Spec.HotSet {
		hot[[2]string{e.Layer, e.Path}] = e.Ranges
		listed += e.Bytes()
		if e.Layer != "" {
			listedImage += e.Bytes()
		} else {
			t.Logf("host entry %s: %d bytes, confidence %.2f", e.Path, e.Bytes(), e.Confidence)
		}
	}

	// What run 4 read of the image: every range of a file in an image layer, by the layer's
	// digest and the path relative to the layer root, as the manifest keys them.
	var read, covered int64
	files := 0
	for _, f := range traces[3].Files {
		if f.Layer == nil || f.Layer.Where != "image" || len(f.Ranges) == 0 {
			continue
		}
		files++
		key := [2]string{f.Layer.Digest, strings.TrimPrefix(path.Clean(f.Path), "/")}
		rs, ok := hot[key]
		var fileRead, fileCovered int64
		for _, r := range f.Ranges {
			fileRead += r.Len
			for _, h := range rs {
				if lo, hi := max(r.Off, h.Off), min(r.End(), h.End()); hi > lo {
					fileCovered += hi - lo
				}
			}
		}
		if fileCovered < fileRead {
			t.Logf("run 4: %s (layer %d %s) read %d bytes, %d covered (in the manifest: %v)", f.Path, f.Layer.Index, f.Layer.Digest, fileRead, fileCovered, ok)
		}
		read += fileRead
		covered += fileCovered
	}
	// The entrypoint, every library and the weights: anything less is a trace that missed
	// the workload, and a coverage computed on it would prove nothing.
	if want := len(cs.LibPaths) + 2; files < want || read == 0 {
		t.Fatalf("run 4 read %d bytes of %d image files, want at least %d files", read, files, want)
	}
	coverage := float64(covered) / float64(read)
	listedRatio := float64(listed) / float64(read)
	t.Logf("run 4 read %d bytes of %d image files; the manifest (%d entries) covers %d of them (%.2f%%) and lists %d bytes (%.2f%%; %d in image layers, %.2f%%)",
		read, files, len(m.Spec.HotSet), covered, 100*coverage, listed, 100*listedRatio, listedImage, 100*float64(listedImage)/float64(read))
	if coverage < 0.99 {
		t.Errorf("the manifest covers %.2f%% of the bytes run 4 read, want at least 99%%", 100*coverage)
	}
	if listedRatio > 1.10 {
		t.Errorf("the manifest lists %.2f%% of the bytes run 4 read, want at most 110%%", 100*listedRatio)
	}
}
