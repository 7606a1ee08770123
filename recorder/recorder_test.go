package recorder

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

// buildC compiles a test program from testdata with gcc.
func buildC(t *testing.T, src, out string, flags ...string) string {
	t.Helper()
	testenv.RequireBinary(t, "gcc")
	bin := filepath.Join(t.TempDir(), out)
	args := append([]string{"-O2", "-Wall", "-o", bin, filepath.Join("testdata", src)}, flags...)
	if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", src, err, b)
	}
	return bin
}

// writeEvicted writes a file of random bytes, syncs it and drops it from the page cache,
// so that every page the workload reads is a page-cache miss.
func writeEvicted(t *testing.T, path string, data []byte) {
	t.Helper()
	if data == nil {
		data = make([]byte, 128<<10)
		rand.Read(data)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// safetensors builds a 4 MiB safetensors file: the 8-byte header length, a JSON header,
// then tensor data.
func safetensors() []byte {
	const size = 4 << 20
	header := fmt.Sprintf(`{"w":{"dtype":"F32","shape":[%d],"data_offsets":[0,%d]}}`, (size-4096)/4, size-4096)
	b := make([]byte, size)
	rand.Read(b)
	hlen := 4096 - 8
	for i := 0; i < 8; i++ {
		b[i] = byte(uint64(hlen) >> (8 * i))
	}
	copy(b[8:], header)
	for i := 8 + len(header); i < 4096; i++ {
		b[i] = ' '
	}
	return b
}

func marks(t *testing.T, out string) map[string]int64 {
	m := map[string]int64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "MARK" {
			v, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil {
				t.Fatalf("bad mark %q", line)
			}
			m[f[1]] = v
		}
	}
	return m
}

func fileByName(t *testing.T, tr *trace.Trace, path string) trace.File {
	t.Helper()
	for _, f := range tr.Files {
		if f.Path == path {
			return f
		}
	}
	t.Fatalf("no file %s in the trace", path)
	return trace.File{}
}

// between checks that the trace's instant got lies in the workload's bracket [before, after].
func between(t *testing.T, what string, got, before, after time.Duration) {
	t.Helper()
	if got < before || got > after {
		t.Errorf("%s: got %v, want within the workload's [%v, %v]", what, got, before, after)
	} else {
		t.Logf("%s: %v within the workload's [%v, %v]", what, got, before, after)
	}
}

// TestWorkloadGroundTruth records a workload whose every file range, byte count, ioctl,
// driver call and phase boundary is known, and checks the trace against it.
func TestWorkloadGroundTruth(t *testing.T) {
	testenv.RequireBPF(t)
	workload := buildC(t, "workload.c", "workload")
	libdir := t.TempDir()
	lib := filepath.Join(libdir, "libcuda.so.1")
	if b, err := exec.Command("gcc", "-O2", "-shared", "-fPIC", "-o", lib, "testdata/fakecuda.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc fakecuda: %v\n%s", err, b)
	}
	dir := t.TempDir()
	for _, name := range []string{"a.dat", "b.dat", "c.dat", "d.dat", "e.dat", "f.dat"} {
		writeEvicted(t, filepath.Join(dir, name), nil)
	}
	writeEvicted(t, filepath.Join(dir, "model.safetensors"), safetensors())
	if err := os.Mkdir(filepath.Join(dir, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	device := filepath.Join(dir, "dev", "nvidia0")
	if err := unix.Mknod(device, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatalf("mknod stand-in device: %v", err)
	}
	srv := origin.Start(t, 3<<20)

	var out bytes.Buffer
	tr, err := Record(context.Background(), Options{
		Command:        []string{workload, dir, strconv.Itoa(srv.Port()), device, lib},
		Stdout:         &out,
		Stderr:         os.Stderr,
		Timeout:        30 * time.Second,
		DevicePatterns: []string{filepath.Join(dir, "dev", "nvidia*")},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := marks(t, out.String())
	at := func(name string) time.Duration {
		v, ok := m[name]
		if !ok {
			t.Fatalf("workload printed no mark %q; output:\n%s", name, out.String())
		}
		return time.Duration(v - tr.MonotonicStart)
	}
	if tr.Outcome != trace.OutcomeReady || tr.Ready == nil {
		t.Fatalf("outcome %s (%s), want ready", tr.Outcome, tr.Error)
	}
	if tr.LostEvents != 0 || tr.Incomplete {
		t.Errorf("lost %d events, incomplete %v: %v", tr.LostEvents, tr.Incomplete, tr.Warnings)
	}

	// Files: exact byte ranges, and one page-cache miss per page read.
	want := map[string][]trace.Range{
		"a.dat": {{Off: 0, Len: 12288}, {Off: 40960, Len: 8192}},
		"b.dat": {{Off: 0, Len: 8192}},
		"c.dat": {{Off: 0, Len: 4096}, {Off: 16384, Len: 8192}, {Off: 65536, Len: 4096}},
		"d.dat": {{Off: 8192, Len: 16384}},
		"e.dat": {{Off: 0, Len: 32768}},
		"f.dat": {{Off: 4096, Len: 8192}},
		"model.safetensors": {
			{Off: 0, Len: 4096, Via: trace.AccessRead},
			{Off: 1 << 20, Len: 1 << 20, Via: trace.AccessMmap},
			{Off: 3 << 20, Len: 256 << 10, Via: trace.AccessRead},
		},
	}
	for name, ranges := range want {
		f := fileByName(t, tr, filepath.Join(dir, name))
		var pages int64
		if len(f.Ranges) != len(ranges) {
			t.Errorf("%s: ranges %+v, want %+v", name, f.Ranges, ranges)
			continue
		}
		for i, r := range ranges {
			got := f.Ranges[i]
			via := r.Via
			if via == "" {
				via = trace.AccessRead
			}
			if got.Off != r.Off || got.Len != r.Len || got.Via != via {
				t.Errorf("%s range %d: got [%d,+%d) %s, want [%d,+%d) %s", name, i, got.Off, got.Len, got.Via, r.Off, r.Len, via)
			}
			pages += r.Len / 4096
		}
		if f.CacheMisses != pages {
			t.Errorf("%s: %d page-cache misses, want %d (the pages read after eviction)", name, f.CacheMisses, pages)
		}
	}
	if k := fileByName(t, tr, filepath.Join(dir, "model.safetensors")).Kind; k != trace.KindWeights {
		t.Errorf("model.safetensors classified %s", k)
	}

	// Network: the bytes the server sent.
	var recv int64
	for _, c := range tr.Conns {
		if strings.HasSuffix(c.Remote, ":"+strconv.Itoa(srv.Port())) {
			recv += c.BytesRecv
		}
	}
	if recv != srv.Sent() {
		t.Errorf("received %d bytes from the server, it sent %d", recv, srv.Sent())
	}

	// GPU: exact ioctl count, driver call durations.
	var ioctls int64
	for _, st := range tr.GPU.Ioctls {
		if st.Device == device {
			ioctls += st.Count
		}
	}
	if ioctls != 7 {
		t.Errorf("%d ioctls on %s, want 7 (%+v)", ioctls, device, tr.GPU.Ioctls)
	}
	if len(tr.GPU.Opens) != 1 || tr.GPU.Opens[0].Path != device {
		t.Errorf("device opens %+v, want one of %s", tr.GPU.Opens, device)
	}
	calls := map[string]trace.Call{}
	for _, c := range tr.GPU.Calls {
		if _, dup := calls[c.Name]; dup {
			t.Errorf("%s recorded twice: %+v", c.Name, tr.GPU.Calls)
		}
		calls[c.Name] = c
	}
	// Each call within the workload's marks around it, and at least as long as the stand-in
	// library sleeps in it (nanosleep never returns early): bounds that a busy machine
	// cannot break, where a fixed tolerance around the sleep measured its idleness.
	for name, d := range map[string]time.Duration{"cuInit": 200 * time.Millisecond, "cuDevicePrimaryCtxRetain": 20 * time.Millisecond, "cuCtxCreate_v2": 30 * time.Millisecond} {
		c, ok := calls[name]
		if !ok {
			t.Errorf("no %s call in the trace (calls %+v, warnings %v)", name, tr.GPU.Calls, tr.Warnings)
			continue
		}
		if before, after := at(name), at(name+"_end"); c.Start < before || c.End > after || c.End-c.Start < d {
			t.Errorf("%s: [%v, %v], want within the workload's [%v, %v] and at least %v long", name, c.Start, c.End, before, after, d)
		} else {
			t.Logf("%s: [%v, %v] within the workload's [%v, %v]", name, c.Start, c.End, before, after)
		}
	}

	// Phases: each boundary within the workload's marks taken right before and right after
	// the operation that defines it, so that a descheduled workload widens the bracket
	// instead of moving the truth.
	phase := func(name trace.PhaseName) trace.Phase {
		p, ok := tr.Phase(name)
		if !ok {
			t.Fatalf("no %s phase: %+v", name, tr.Phases)
		}
		return p
	}
	fetch, load, gpu := phase(trace.PhaseFetch), phase(trace.PhaseLoad), phase(trace.PhaseGPU)
	between(t, "fetch start (connect)", fetch.Start, at("connect"), at("connect_end"))
	between(t, "fetch end (last read with data)", fetch.End, at("last_recv"), at("last_recv_end"))
	between(t, "load start (first weights read)", load.Start, at("first_weights"), at("first_weights_end"))
	between(t, "load end (last weights read)", load.End, at("last_weights"), at("last_weights_end"))
	between(t, "gpu start (device open)", gpu.Start, at("device_open"), at("device_open_end"))
	between(t, "gpu end (cuCtxCreate_v2 return)", gpu.End, at("cuCtxCreate_v2"), at("cuCtxCreate_v2_end"))
	between(t, "ready (listen)", tr.Ready.At, at("listen"), at("listen_end"))
	// Exact by definition: init ends at the first access to the weights, and the GPU phase at
	// the last driver call's return.
	if init := phase(trace.PhaseInit); init.End != load.Start {
		t.Errorf("init ends at %v, the load starts at %v", init.End, load.Start)
	}
	if c, ok := calls["cuCtxCreate_v2"]; ok && gpu.End != c.End {
		t.Errorf("gpu phase ends at %v, cuCtxCreate_v2 returned at %v", gpu.End, c.End)
	}
	if tr.Duration != tr.Ready.At {
		t.Errorf("duration %v, ready at %v", tr.Duration, tr.Ready.At)
	}
	var sum time.Duration
	for _, p := range tr.Phases {
		sum += p.Critical
	}
	if sum != tr.Duration {
		t.Errorf("critical path adds up to %v, duration %v", sum, tr.Duration)
	}
	if err := tr.Validate(); err != nil {
		t.Error(err)
	}
}
