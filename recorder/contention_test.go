package recorder

import (
	"context"
	"crypto/rand"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coldtrace/coldtrace/containerd"
	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

// pushMarked pushes an image of busybox (a layer every such image shares), a marker file
// and a layer of incompressible data; it returns the reference and the blob digests:
// config, busybox, marker, data.
func pushMarked(t *testing.T, reg *ctrtest.Registry, name string, dataBytes int) (string, []string) {
	t.Helper()
	base := ctrtest.BusyboxLayer(t)
	marker, err := ctrtest.Layer(ctrtest.File{Path: "/marker-" + name, Mode: 0o644, Data: []byte(name)})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, dataBytes)
	rand.Read(data)
	payload, err := ctrtest.StoredLayer(ctrtest.File{Path: "/data-" + name, Mode: 0o644, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	img, err := ctrtest.BuildImage([]v1.Layer{base, marker, payload}, []string{"/bin/sh"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "test/"+name+":v1", img)
	var blobs []string
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	blobs = append(blobs, cfg.String())
	for _, l := range []v1.Layer{base, marker, payload} {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, d.String())
	}
	// The manifest is downloaded through an ingest too, and the registry counts it by digest.
	m, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ref, append(blobs, m.String())
}

// lastFetch is when the last layer of the trace's pull was in, on the wall clock.
func lastFetch(tr *trace.Trace) time.Time {
	var last trace.Duration
	for _, l := range tr.Pull.Layers {
		last = max(last, l.Fetched)
	}
	return tr.Start.Add(last)
}

// TestRecordImageContention starts two containers of two images at once, pulled from one
// rate-limited registry: both are recorded, neither trace holds anything of the other
// container, and each reports the other's pull as contention, with the bytes the
// registry sent for it.
func TestRecordImageContention(t *testing.T) {
	testenv.RequireBPF(t)
	const rate = 8 << 20
	ctrd := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{Rate: rate})
	// containerd downloads the busybox layer that both images share once, for one of
	// the pulls: for the other, that download is contention too.
	names := []string{"alpha", "beta"}
	refs, blobs := map[string]string{}, map[string][]string{}
	for _, n := range names {
		refs[n], blobs[n] = pushMarked(t, reg, n, 12<<20)
	}

	traces := map[string]*trace.Trace{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr, err := RecordImage(context.Background(), ImageOptions{
				Image: refs[n], Address: ctrd.Address, Namespace: "default", PlainHTTP: true, Fresh: true,
				Args:    []string{"sh", "-c", "cat /marker-" + n + " /data-" + n + " > /dev/null; exec nc -l -p 8080"},
				Timeout: time.Minute,
			})
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			traces[n] = tr
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	served := func(digests []string) int64 {
		var n int64
		for _, d := range digests {
			n += reg.Served(d)
		}
		return n
	}
	rates := map[string]float64{}
	for i, n := range names {
		other := names[1-i]
		tr := traces[n]
		if tr.Outcome != trace.OutcomeReady || tr.Incomplete {
			t.Fatalf("%s: outcome %s (%s), incomplete %v, warnings %v", n, tr.Outcome, tr.Error, tr.Incomplete, tr.Warnings)
		}
		if err := tr.Validate(); err != nil {
			t.Errorf("%s: %v", n, err)
		}

		// Nothing of the other container: its marker, its data, its processes.
		cgroups := map[uint64]bool{}
		for _, p := range tr.Processes {
			cgroups[p.Cgroup] = true
		}
		if len(cgroups) != 1 {
			t.Errorf("%s: processes in %d cgroups, want the container's one: %+v", n, len(cgroups), tr.Processes)
		}
		files := map[string]bool{}
		for _, f := range tr.Files {
			files[f.Path] = true
			if strings.Contains(f.Path, other) {
				t.Errorf("%s: the trace holds %s of the other container", n, f.Path)
			}
		}
		if !files["/marker-"+n] || !files["/data-"+n] {
			t.Errorf("%s: its own marker or data is not in the trace", n)
		}

		// The contention: one other pull, the other image, its blobs, its bytes.
		p := tr.Pull
		if len(p.Overlaps) != 1 {
			t.Fatalf("%s: overlaps %+v, want one: the pull of %s", n, p.Overlaps, other)
		}
		o := p.Overlaps[0]
		// By its tag once the other pull created its image, by digest while it still ran.
		pulling := reg.PullingName("test/"+other+":v1", blobs[other][len(blobs[other])-1])
		if (o.Ref != refs[other] && o.Ref != pulling) || o.Namespace != "default" || len(p.Contended) != 1 || p.Contended[0] != o.Ref {
			t.Errorf("%s: overlap of %q in %q (contended %v), want %s or %s", n, o.Ref, o.Namespace, p.Contended, refs[other], pulling)
		}
		theirs := map[string]bool{}
		for _, d := range blobs[other] {
			theirs[d] = true
		}
		shared := blobs[n][1] // the busybox layer: whichever pull downloads it
		for _, d := range o.Blobs {
			if !theirs[d] && d != shared {
				t.Errorf("%s: overlap blob %s is not a blob of %s", n, d, other)
			}
		}
		var fetched, ours trace.Duration
		var ourBytes int64
		for _, l := range p.Layers {
			fetched = max(fetched, l.Fetched)
			ourBytes += l.Bytes
		}
		ours = fetched - p.Start
		var overlap trace.Duration
		for _, iv := range o.Intervals {
			if iv.Start < p.Start || iv.End > fetched+containerd.IngestPoll {
				t.Errorf("%s: overlap interval %v outside the download [%v, %v]", n, iv, p.Start, fetched)
			}
			overlap += iv.End - iv.Start
		}
		// Ground truth: never more than the registry sent for those blobs, and the two
		// pulls started together, so most of it.
		sent := served(o.Blobs)
		t.Logf("%s: pulled %d bytes in %v; %s downloaded %d bytes (registry: %d for its blobs) in %v of overlap",
			n, ourBytes, ours, other, o.Bytes, sent, overlap)
		if o.Bytes <= 0 || o.Bytes > sent {
			t.Errorf("%s: overlap bytes %d, the registry sent %d for those blobs", n, o.Bytes, sent)
		}
		if overlap < ours/2 {
			t.Errorf("%s: overlap %v of a %v download; they started together", n, overlap, ours)
		}
		// A pull that started first and finished last ran through the whole of the other's
		// download (on a busy machine the two may start far apart).
		theirStart := traces[other].Start.Add(traces[other].Pull.Start)
		if !tr.Start.Add(p.Start).After(theirStart) && tr.Start.Add(fetched).After(lastFetch(traces[other])) && o.Bytes < sent*9/10 {
			t.Errorf("%s: overlap bytes %d, the registry sent %d for the blobs of a pull that ran within this one", n, o.Bytes, sent)
		}
		rates[n] = float64(o.Bytes) / overlap.Seconds()
		rates[n+"/own"] = float64(ourBytes) / ours.Seconds()
	}
	// The registry shares its rate fairly: during the overlap each pull saw the other
	// download at about its own rate. Compared with each other, the rates do not depend
	// on how loaded the host is.
	for i, n := range names {
		other := names[1-i]
		r := rates[n] / rates[other+"/own"]
		t.Logf("%s saw %s at %.2f MiB/s; %s pulled at %.2f MiB/s on its own account", n, other, rates[n]/(1<<20), other, rates[other+"/own"]/(1<<20))
		if r < 0.5 || r > 2 {
			t.Errorf("%s saw %s download at %.0f B/s, but %s pulled at %.0f B/s", n, other, rates[n], other, rates[other+"/own"])
		}
	}
	// Together they used the registry's link: within 20% of its rate while both ran.
	both := rates[names[0]] + rates[names[1]]
	if both > rate*1.2 {
		t.Errorf("the two pulls together at %.0f B/s, above the registry's %d B/s", both, rate)
	}
}
