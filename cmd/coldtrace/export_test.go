package main

import (
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/exporttest"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

// TestAgentExports runs `coldtrace agent --otlp-endpoint --pyroscope-url` against a real
// containerd: the container that ctr pulls and starts is recorded by the watcher, and its trace,
// as the agent wrote it, is what Jaeger (over OTLP/gRPC) and the Pyroscope push receiver
// got; the agent's metrics count one export each.
func TestAgentExports(t *testing.T) {
	testenv.RequireBPF(t)
	testenv.RequireBinary(t, "ctr")
	ctrd := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{})
	img, err := ctrtest.BuildImage([]v1.Layer{ctrtest.BusyboxLayer(t)}, []string{"/bin/sh", "-c"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "test/busybox:v1", img)
	ctrd.TrustHTTP(t, reg.Host)
	j := exporttest.StartJaeger(t)
	pyroURL, pushes := exporttest.StartPushReceiver(t)
	data := t.TempDir()
	agent := startAgentProc(t, build(t), "--containerd", ctrd.Address, "--namespace", "default", "--data-dir", data,
		"--otlp-endpoint", "grpc://"+j.GRPC, "--pyroscope-url", pyroURL, "--metrics-address", "127.0.0.1:0")
	waitLine := func(want string) { t.Helper(); agent.waitLine(t, want) }
	waitLine("watching containerd")
	// Pulled while the agent watches, so that the trace begins at the pull.
	ctrd.Ctr(t, "images", "pull", "--hosts-dir", ctrd.HostsDir, ref)
	// Ready at its listen, in the container's own network namespace.
	ctrd.Ctr(t, "run", "-d", ref, "serve", "sh", "-c", "cat /bin/busybox > /dev/null; exec nc -l -p 8080")
	waitLine("container serve: ready")
	tr, err := trace.ReadFile(filepath.Join(data, "traces", "default", "serve.json.gz"))
	if err != nil {
		t.Fatal(err)
	}

	// The exports run after the trace is written: wait for the agent's counters.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		m := scrape(t, agent.metrics)
		if strings.Contains(m, `coldtrace_exports_total{exporter="otlp"} 1`) && strings.Contains(m, `coldtrace_exports_total{exporter="pyroscope"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not count both exports within a minute:\n%s", m)
		}
	}
	if tr.Pull == nil || len(tr.Pull.Layers) == 0 {
		t.Errorf("the agent's trace has no pull: %+v", tr.Pull)
	}
	exporttest.CheckJaeger(t, j, tr)
	select {
	case req := <-pushes:
		exporttest.CheckPush(t, req, tr)
	case <-time.After(10 * time.Second):
		t.Fatal("the Pyroscope receiver got nothing")
	}
	agent.cmd.Process.Signal(syscall.SIGTERM)
	if err := agent.cmd.Wait(); err != nil {
		t.Errorf("the agent stopped with %v", err)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Bad exporter flags stop the agent before it records anything, saying what is wanted.
func TestAgentExportFlags(t *testing.T) {
	bin := build(t)
	for args, want := range map[string]string{
		"--otlp-endpoint localhost:4317":  "--otlp-endpoint: otlp endpoint \"localhost:4317\": want http://HOST:PORT",
		"--otlp-endpoint tcp://host:4317": "unknown scheme \"tcp\"",
		"--pyroscope-url pyroscope:4040":  "--pyroscope-url: pyroscope url \"pyroscope:4040\": want http://HOST:PORT",
	} {
		out, err := exec.Command(bin, append([]string{"agent", "--data-dir", t.TempDir()}, strings.Fields(args)...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("coldtrace agent %s: %v, output %q, want an error saying %q", args, err, out, want)
		}
	}
}
