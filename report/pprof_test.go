package report

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

// goPprof runs `go tool pprof ARGS FILE`: the totals are checked by pprof's own reader, not
// by the code that wrote the profile.
func goPprof(t *testing.T, file string, args ...string) string {
	t.Helper()
	cmd := exec.Command(testenv.GoBinary(t), append(append([]string{"tool", "pprof"}, args...), file)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// rawSamples parses the Samples section of `go tool pprof -raw`: each line is
// "CRITICAL BYTES: LOCATION IDS".
func rawSamples(t *testing.T, raw string) (critical, bytes int64, n int) {
	t.Helper()
	_, rest, ok := strings.Cut(raw, "Samples:\n")
	if !ok {
		t.Fatalf("no samples in pprof -raw output:\n%s", raw)
	}
	lines := strings.Split(rest, "\n")
	if !strings.HasPrefix(lines[0], PprofCritical+"/nanoseconds[dflt] "+PprofBytes+"/bytes") {
		t.Fatalf("sample types %q", lines[0])
	}
	for _, l := range lines[1:] {
		values, _, ok := strings.Cut(l, ":")
		f := strings.Fields(values)
		if !ok || len(f) != 2 {
			break // the Locations section
		}
		c, err1 := strconv.ParseInt(f[0], 10, 64)
		b, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil || c < 0 || b < 0 {
			t.Fatalf("bad sample line %q", l)
		}
		critical, bytes, n = critical+c, bytes+b, n+1
	}
	return critical, bytes, n
}

func TestPprofTotals(t *testing.T) {
	for name, tr := range fixtures() {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "start.pb.gz")
			f, err := os.Create(file)
			if err != nil {
				t.Fatal(err)
			}
			if err := Render(f, tr, "pprof"); err != nil {
				t.Fatal(err)
			}
			f.Close()
			var wantBytes int64
			for _, p := range tr.Phases {
				wantBytes += p.Bytes
			}
			critical, bytes, n := rawSamples(t, goPprof(t, file, "-raw"))
			if critical != int64(tr.Duration) {
				t.Errorf("critical-path nanoseconds add up to %d, the trace lasted %d", critical, tr.Duration)
			}
			if bytes != wantBytes {
				t.Errorf("bytes add up to %d, the phases moved %d", bytes, wantBytes)
			}
			if len(tr.Critical) > 0 && n == 0 {
				t.Error("no samples")
			}
		})
	}
}

// The stacks read workload; phase; layer or origin; file, as pprof -traces shows them
// (leaf first).
func TestPprofStacks(t *testing.T) {
	file := filepath.Join(t.TempDir(), "start.pb.gz")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	tr := realistic()
	if err := Pprof(f, tr); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if top := goPprof(t, file, "-top"); !strings.Contains(top, "Total samples = 118s") {
		t.Errorf("pprof -top does not total the 118 s to ready:\n%s", top)
	}
	traces := goPprof(t, file, "-traces", "-sample_index="+PprofBytes)
	root := "registry.example.internal/vllm/vllm-openai" // the image's repository, without its tag
	for _, want := range [][]string{
		{"layer 0 sha256:aaa", "pull", root},   // 6 GiB of the first layer
		{"layer 1 sha256:bbb", "unpack", root}, // its unpack
		{"/models/Qwen3-8B/model-00001-of-00004.safetensors", "host", "load", root},
		{"18.164.52.1:443", "fetch", root}, // the model download's peer
	} {
		if !strings.Contains(traces, strings.Join(want, "\n             ")) {
			t.Errorf("no stack %q in pprof -traces:\n%s", want, traces)
		}
	}
	// The gpu phase's critical time (104 s to 106 s) went to the driver call then running.
	crit := goPprof(t, file, "-traces")
	if !strings.Contains(crit, "cuDevicePrimaryCtxRetain\n             driver\n             gpu\n") {
		t.Errorf("no cuDevicePrimaryCtxRetain stack in pprof -traces:\n%s", crit)
	}
}

// A phase that moved fewer bytes than its things claim (a layer counted twice, a
// connection shared) still adds up: the profile never claims more than the phase moved.
func TestPprofBytesCapped(t *testing.T) {
	tr := realistic()
	for i, p := range tr.Phases {
		if p.Name == trace.PhaseFetch {
			tr.Phases[i].Bytes = 1000 // the connections claim 16 GiB
		}
	}
	p, err := Profile(tr)
	if err != nil {
		t.Fatal(err)
	}
	var fetch int64
	for _, s := range p.Sample {
		if s.Location[len(s.Location)-2].Line[0].Function.Name == string(trace.PhaseFetch) {
			fetch += s.Value[1]
		}
	}
	if fetch != 1000 {
		t.Errorf("fetch bytes %d, want the phase's 1000", fetch)
	}
}
