package recorder

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/containerd"
	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

// pushColdStart pushes the cold-start image (ctrtest.PushColdStart); want are the pages of the tensors its entrypoint maps, the last one clipped to the
// end of the file.
func pushColdStart(t *testing.T, reg *ctrtest.Registry, shardPort int, sizes ctrtest.Sizes) (*ctrtest.ColdStartImage, []trace.Range) {
	t.Helper()
	im := ctrtest.PushColdStart(t, reg, shardPort, sizes)
	const page = 4096
	var want []trace.Range
	var fileSize int64
	for i, ts := range im.Tensors {
		fileSize = ts.Off + ts.Len
		if i%2 == 0 {
			start, end := ts.Off&^(page-1), (ts.Off+ts.Len+page-1)&^(page-1)
			want = append(want, trace.Range{Off: start, Len: end - start})
		}
	}
	if last := &want[len(want)-1]; last.End() > fileSize {
		last.Len = fileSize - last.Off
	}
	return im, want
}

// TestRecordImage records the cold start of the full-size container test image of issue 3
// end to end: a pull through a registry limited to 32 MiB/s (busybox, 2,000 small libraries,
// 256 MiB of safetensors), a static entrypoint that reads the libraries, downloads a 64 MiB
// shard over HTTP from a loopback origin into the container's writable layer, maps half of
// the tensors, opens a stand-in GPU device and listens. Every number in the trace is
// checked against what the test knows.
func TestRecordImage(t *testing.T) {
	testenv.RequireBPF(t)
	const rate = 32 << 20
	ctrd := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{Rate: rate})
	shard := origin.StartHTTP(t, ctrtest.ShardURLPath, origin.Random(64<<20), 0)
	im, want := pushColdStart(t, reg, shard.Port(), ctrtest.FullSizes)
	ref, layers, cs := im.Ref, im.Layers, im.ColdStart

	// A stand-in accelerator: the node of /dev/null (allowed by runc's device rules),
	// mounted where the NVIDIA driver's first device is.
	gpu := filepath.Join(t.TempDir(), "nvidia0")
	if err := unix.Mknod(gpu, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatalf("mknod stand-in device: %v", err)
	}
	out := filepath.Join(t.TempDir(), "out")
	tr, err := RecordImage(context.Background(), ImageOptions{
		Image: ref, Address: ctrd.Address, Namespace: "default", PlainHTTP: true, Fresh: true,
		Args: im.Args, HostNetwork: true, Stdout: out, Stderr: out, Timeout: time.Minute,
		Env:    []string{"GPU_DEVICE=/dev/nvidia0"},
		Mounts: []specs.Mount{{Destination: "/dev/nvidia0", Type: "bind", Source: gpu, Options: []string{"rbind", "rw"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); len(b) > 0 {
		t.Logf("workload output:\n%s", b)
	}
	if tr.Outcome != trace.OutcomeReady || tr.Error != "" || tr.Incomplete {
		t.Fatalf("outcome %s (%s), incomplete %v, warnings %v", tr.Outcome, tr.Error, tr.Incomplete, tr.Warnings)
	}
	w := tr.Workload
	if w.Image != ref || w.ImageDigest != im.Digest || !strings.HasPrefix(w.ContainerID, "coldtrace-") {
		t.Errorf("workload %+v, want image %s digest %s", w, ref, im.Digest)
	}

	// The pull: every layer's bytes as the registry counted them, each layer fetched after
	// the registry sent its last byte (the registry's clock bounds the trace's however busy
	// the machine is), and the whole no faster than the registry's rate allows.
	var fetched trace.Duration
	for i, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		size, _ := l.Size()
		lp := tr.Pull.Layers[i]
		if lp.Digest != d.String() || lp.Bytes != reg.Served(d.String()) || lp.Bytes != size {
			t.Errorf("layer %d: %s %d bytes, registry served %s %d of %d", i, lp.Digest, lp.Bytes, d, reg.Served(d.String()), size)
		}
		if requested, last := reg.Sent(d.String()); tr.Start.Add(tr.Pull.Start).After(requested) || tr.Start.Add(lp.Fetched).Before(last) {
			t.Errorf("layer %d: pull started at %v, fetched at %v; the registry had the request %v and sent the last byte %v after the trace's start",
				i, tr.Pull.Start, lp.Fetched, requested.Sub(tr.Start), last.Sub(tr.Start))
		}
		fetched = max(fetched, lp.Fetched)
	}
	took := fetched - tr.Pull.Start
	wantTook := time.Duration(float64(reg.Total()) / rate * float64(time.Second))
	t.Logf("pulled %d bytes in %v (%.2f MiB/s, limit %.2f MiB/s)", reg.Total(), took,
		float64(reg.Total())/took.Seconds()/(1<<20), float64(rate)/(1<<20))
	if took < wantTook {
		t.Errorf("download took %v, less than the registry's rate allows: %v", took, wantTook)
	}

	// The registry connections: to the registry, carrying every blob byte it served plus
	// the HTTP framing, manifests and config.
	var regRecv int64
	var regConns int
	for _, c := range tr.Conns {
		if c.Role != "registry" {
			continue
		}
		regConns++
		regRecv += c.BytesRecv
		if c.Remote != reg.Host || c.Dir != "connect" || c.Open < 0 || c.FirstRecv < c.Open {
			t.Errorf("registry connection %+v, want one to %s", c, reg.Host)
		}
		if n := len(c.Samples); c.BytesRecv > 0 && (n == 0 || c.Samples[n-1].Recv != c.BytesRecv || c.Samples[n-1].At != c.LastRecv) {
			t.Errorf("registry connection to %s: %d samples, the last %+v; received %d bytes, the last at %v", c.Remote, n, c.Samples[max(n-1, 0):], c.BytesRecv, c.LastRecv)
		}
	}
	t.Logf("%d registry connections received %d bytes; the registry served %d blob bytes", regConns, regRecv, reg.Total())
	if regConns == 0 || regRecv < reg.Total() || regRecv > reg.Total()+reg.Total()/100+256<<10 {
		t.Errorf("registry connections received %d bytes, the registry served %d blob bytes", regRecv, reg.Total())
	}

	// Files: each in the layer that provides it.
	files := map[string]trace.File{}
	for _, f := range tr.Files {
		files[f.Path] = f
	}
	layerOf := func(path string, index int) {
		t.Helper()
		f, ok := files[path]
		if !ok {
			t.Errorf("%s is not in the trace", path)
			return
		}
		if f.Layer == nil || f.Layer.Index != index || f.Layer.Digest != tr.Pull.Layers[index].Digest ||
			f.Layer.DiffID != tr.Pull.Layers[index].DiffID || f.Layer.Where != "image" {
			t.Errorf("%s: layer %+v, want image layer %d", path, f.Layer, index)
		}
	}
	for _, p := range cs.LibPaths {
		layerOf(p, 1)
		if f := files[p]; f.BytesRead != 2048 {
			t.Errorf("%s: read %d bytes, want 2048", p, f.BytesRead)
		}
	}
	layerOf(ctrtest.WeightsPath, 2)
	layerOf("/coldstart", 3)

	// The weights: exactly the pages of the tensors touched, through the mappings.
	wf := files[ctrtest.WeightsPath]
	var ranges []trace.Range
	for _, r := range wf.Ranges {
		if r.Via != trace.AccessMmap {
			t.Errorf("weights range %+v not through mmap", r)
		}
		ranges = append(ranges, trace.Range{Off: r.Off, Len: r.Len})
	}
	if fmt.Sprint(ranges) != fmt.Sprint(want) {
		t.Errorf("weights ranges\n%v\nwant\n%v", ranges, want)
	}
	var mapped int64
	for _, r := range want {
		mapped += r.Len
	}
	if wf.MappedBytes != mapped || wf.Kind != trace.KindWeights {
		t.Errorf("weights: %s, mapped %d bytes, want %d", wf.Kind, wf.MappedBytes, mapped)
	}
	t.Logf("weights: %d ranges, %d bytes mapped, %d pages missed", len(wf.Ranges), wf.MappedBytes, wf.CacheMisses)

	// The download: exactly what the server sent.
	var recv int64
	for _, c := range tr.Conns {
		if c.Dir == "connect" && c.Role == "peer" {
			recv += c.BytesRecv
		}
	}
	if recv != shard.Sent() {
		t.Errorf("fetched %d bytes, the server sent %d", recv, shard.Sent())
	}

	// The shard where it landed: every byte written, the sha256 of what the origin served,
	// and the URL of the request.
	sf := files[ctrtest.ShardPath]
	if sf.WrittenBytes != shard.Size() || sf.Size != shard.Size() || sf.Digest != shard.Digest() || sf.Origin != shard.URL() {
		t.Errorf("shard: wrote %d bytes, size %d, digest %s, origin %s; want %d bytes, %s, %s",
			sf.WrittenBytes, sf.Size, sf.Digest, sf.Origin, shard.Size(), shard.Digest(), shard.URL())
	}
	if sf.Layer == nil || sf.Layer.Where != "rw" || sf.Kind != trace.KindWeights || len(sf.Ranges) != 0 || sf.CacheMisses != 0 {
		t.Errorf("shard: layer %+v, kind %s, %d ranges read, %d pages missed; want the writable layer, weights, none read", sf.Layer, sf.Kind, len(sf.Ranges), sf.CacheMisses)
	}

	// Phases: present, non-negative, in the order of a cold start.
	var prev trace.Phase
	for _, name := range []trace.PhaseName{trace.PhasePull, trace.PhaseUnpack, trace.PhaseCreate, trace.PhaseInit, trace.PhaseFetch, trace.PhaseLoad, trace.PhaseGPU} {
		p, ok := tr.Phase(name)
		switch {
		case !ok:
			t.Errorf("no %s phase", name)
			continue
		case p.Start < 0 || p.End < p.Start || p.End > tr.Duration:
			t.Errorf("%s: [%v, %v] in a trace of %v", name, p.Start, p.End, tr.Duration)
		case prev.Name != "" && p.Start < prev.Start:
			t.Errorf("%s starts at %v, before %s at %v", name, p.Start, prev.Name, prev.Start)
		}
		t.Logf("%-7s %10v .. %10v  critical %v", name, p.Start, p.End, p.Critical)
		prev = p
	}
	if p, _ := tr.Phase(trace.PhaseFetch); p.Bytes != recv {
		t.Errorf("fetch phase: %d bytes, want %d", p.Bytes, recv)
	}

	// The stand-in GPU: one open and the entrypoint's five ioctls (coldstart.c GPU_IOCTLS).
	var ioctls int64
	for _, st := range tr.GPU.Ioctls {
		if st.Device == "/dev/nvidia0" {
			ioctls += st.Count
		}
	}
	if len(tr.GPU.Opens) != 1 || tr.GPU.Opens[0].Path != "/dev/nvidia0" || ioctls != 5 {
		t.Errorf("GPU opens %+v and %d ioctls on /dev/nvidia0, want one open and 5", tr.GPU.Opens, ioctls)
	}

	// Ready: the listen of the entrypoint, which ends the trace.
	if tr.Ready == nil || tr.Ready.Kind != "listen" || tr.Ready.At != tr.Duration || !strings.HasPrefix(tr.Ready.Addr, "127.0.0.1:") {
		t.Fatalf("ready %+v, trace of %v", tr.Ready, tr.Duration)
	}
	if load, _ := tr.Phase(trace.PhaseLoad); tr.Ready.At < load.End {
		t.Errorf("ready at %v, before the load ended at %v", tr.Ready.At, load.End)
	}
	for _, p := range tr.Processes {
		if p.PID == tr.Ready.PID && p.Comm != "coldstart" {
			t.Errorf("ready by %s, want coldstart", p.Comm)
		}
	}
}

// TestRecordImageColdCache records a container of an image that is present but not in the
// page cache, as after a reboot: the weights' pages come from disk, and the misses, which
// the kernel reports on the layer's real file, land on the file the container opened.
func TestRecordImageColdCache(t *testing.T) {
	testenv.RequireBPF(t)
	ctrd := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{})
	shard := origin.StartHTTP(t, ctrtest.ShardURLPath, origin.Random(64<<10), 0)
	im, want := pushColdStart(t, reg, shard.Port(), ctrtest.Sizes{Libs: 200, LibSize: 2048, Weights: 16 << 20, Tensors: 32})

	cl, err := containerd.New(ctrd.Address, "default")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Pull(context.Background(), im.Ref, containerd.PullOptions{PlainHTTP: true}); err != nil {
		t.Fatal(err)
	}
	evict(t, filepath.Join(ctrd.Root, "io.containerd.snapshotter.v1.overlayfs", "snapshots"))

	tr, err := RecordImage(context.Background(), ImageOptions{
		Image: im.Ref, Address: ctrd.Address, Namespace: "default", PlainHTTP: true,
		Args: im.Args, HostNetwork: true, Timeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Outcome != trace.OutcomeReady {
		t.Fatalf("outcome %s (%s)", tr.Outcome, tr.Error)
	}
	for _, l := range tr.Pull.Layers {
		if l.Bytes != 0 {
			t.Errorf("layer %d: pulled %d bytes of an image already present", l.Index, l.Bytes)
		}
	}
	var mapped int64
	for _, r := range want {
		mapped += r.Len
	}
	var libMisses, libs int64
	for _, f := range tr.Files {
		switch {
		case strings.HasPrefix(f.Path, "inode:") && f.CacheMisses > 0:
			// Misses must land on a named file. (Code pages that the runtime's init maps
			// from its own binary before it execs the entrypoint may stay unnamed when it
			// has exec'd by the time the collector first sees it.)
			t.Errorf("%s (%d pages missed, %d bytes mapped) was not folded into a file of the container", f.Path, f.CacheMisses, f.MappedBytes)
		case f.Path == ctrtest.WeightsPath:
			if f.MappedBytes != mapped || f.CacheMisses*4096 < mapped {
				t.Errorf("weights: mapped %d bytes, %d pages missed; want %d bytes, at least %d pages", f.MappedBytes, f.CacheMisses, mapped, mapped/4096)
			}
			t.Logf("weights: %d bytes mapped, %d pages missed", f.MappedBytes, f.CacheMisses)
		case strings.HasPrefix(f.Path, ctrtest.LibsDir):
			libMisses += f.CacheMisses
			libs++
		}
	}
	// Each library is one page, read() through the overlay after eviction: one miss each.
	if libMisses != libs || libs == 0 {
		t.Errorf("libraries: %d pages missed over %d files, want one each", libMisses, libs)
	}
	t.Logf("libraries: %d pages missed over %d files", libMisses, libs)
}

// evict drops every regular file under dir from the page cache.
func evict(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := f.Sync(); err != nil { // dirty pages stay cached
			return err
		}
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRecordImageNotReady records containers that never get ready: one crashes during
// start-up, one outlives the timeout. Both are traces that say so.
func TestRecordImageNotReady(t *testing.T) {
	testenv.RequireBPF(t)
	ctrd := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{})
	img, err := ctrtest.BuildImage([]v1.Layer{ctrtest.BusyboxLayer(t)}, []string{"/bin/sh"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "test/busybox:v1", img)
	opts := ImageOptions{Image: ref, Address: ctrd.Address, Namespace: "default", PlainHTTP: true}

	opts.Args = []string{"sh", "-c", "cat /bin/busybox > /dev/null; exit 3"}
	tr, err := RecordImage(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Outcome != trace.OutcomeExited || !strings.Contains(tr.Error, "exit status 3") || tr.Ready != nil {
		t.Errorf("a crash: outcome %s (%s), ready %+v", tr.Outcome, tr.Error, tr.Ready)
	}
	if len(tr.Processes) == 0 || tr.Pull == nil {
		t.Errorf("a crash: %d processes, pull %+v", len(tr.Processes), tr.Pull)
	}

	opts.Args, opts.Timeout = []string{"sleep", "30"}, time.Second
	start := time.Now()
	tr, err = RecordImage(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Outcome != trace.OutcomeTimeout || !tr.Incomplete || !strings.Contains(tr.Error, "not ready after 1s") {
		t.Errorf("a timeout: outcome %s (%s), incomplete %v", tr.Outcome, tr.Error, tr.Incomplete)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("a timeout of 1s took %v to record", took)
	}
}
