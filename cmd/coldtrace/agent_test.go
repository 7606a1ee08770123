package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

// TestAgentCommand runs `coldtrace agent` against a containerd and records what ctr
// starts in the default namespace: a container that crashes, then one that is still
// starting when the agent gets SIGTERM and writes it as an incomplete trace.
func TestAgentCommand(t *testing.T) {
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
	ctrd.Ctr(t, "images", "pull", "--hosts-dir", ctrd.HostsDir, ref)

	bin := build(t)
	data := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "agent-test-token-0123456789"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The socket by a path relative to the agent's working directory.
	sockDir, sock := filepath.Split(ctrd.Address)
	agentCmd := exec.Command(bin, "agent", "--containerd", filepath.Join(filepath.Base(sockDir), sock), "--namespace", "default", "--data-dir", data,
		"--api-address", "127.0.0.1:0", "--api-token-file", tokenFile)
	agentCmd.Dir = filepath.Dir(filepath.Clean(sockDir))
	agent := startAgent(t, agentCmd)
	cmd := agent.cmd
	waitLine := func(want string) string { t.Helper(); return agent.waitLine(t, want) }
	readTrace := func(id string) *trace.Trace {
		t.Helper()
		tr, err := trace.ReadFile(filepath.Join(data, "traces", "default", id+".json.gz"))
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}

	api := strings.Fields(strings.SplitAfter(waitLine("node API at http://"), "node API at ")[1])[0]
	waitLine("watching containerd")
	if code, body := httpGet(t, api+"/readyz", ""); code != 200 {
		t.Errorf("/readyz once watching: %d %s", code, body)
	}
	ctrd.Ctr(t, "run", "-d", ref, "crash", "sh", "-c", "cat /bin/busybox > /dev/null; exit 3")
	waitLine("container crash: exited")
	tr := readTrace("crash")
	if tr.Outcome != trace.OutcomeExited || !strings.Contains(tr.Error, "exit status 3") || tr.Workload.Image != ref {
		t.Errorf("crash: outcome %s (%s), image %s", tr.Outcome, tr.Error, tr.Workload.Image)
	}
	// Root's alone on the disk; through the API with the token only.
	for p, want := range map[string]os.FileMode{
		filepath.Join(data, "traces"):                             os.ModeDir | 0o700,
		filepath.Join(data, "traces", "default"):                  os.ModeDir | 0o700,
		filepath.Join(data, "traces", "default", "crash.json.gz"): 0o600,
	} {
		if fi, err := os.Stat(p); err != nil || fi.Mode() != want {
			t.Errorf("%s: %v, %v; want mode %v", p, fi.Mode(), err, want)
		}
	}
	if code, _ := httpGet(t, api+"/api/v1/traces", ""); code != 401 {
		t.Errorf("the traces API without the token: %d, want 401", code)
	}
	if code, body := httpGet(t, api+"/api/v1/traces/"+tr.ID, token); code != 200 || !strings.Contains(body, `"container_id":"crash"`) {
		t.Errorf("the crash's trace through the API: %d %.200s", code, body)
	}
	// advise reads it from the API as from the file: the same report.
	advise := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"advise", "--format", "json"}, args...)...).Output()
		if err != nil {
			t.Fatalf("advise %q: %v", args, err)
		}
		return string(out)
	}
	fromFile := advise(filepath.Join(data, "traces", "default", "crash.json.gz"))
	fromAPI := advise("--from", api+"/?since=1h", "--token-file", tokenFile)
	if fromFile != fromAPI {
		t.Errorf("advise --from gave another report than advise of the file:\n%s\n---\n%s", fromAPI, fromFile)
	}

	ctrd.Ctr(t, "run", "-d", ref, "slow", "sleep", "30")
	waitLine("recording container slow")
	cmd.Process.Signal(syscall.SIGTERM)
	waitLine("container slow: interrupted")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("the agent stopped with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not stop on SIGTERM")
	}
	if tr := readTrace("slow"); tr.Outcome != trace.OutcomeInterrupted || !tr.Incomplete || len(tr.Processes) == 0 {
		t.Errorf("slow: outcome %s (%s), incomplete %v, %d processes", tr.Outcome, tr.Error, tr.Incomplete, len(tr.Processes))
	}
}

// httpGet gets a URL with a bearer token, or none when token is empty.
func httpGet(t *testing.T, u, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// agentProc is a running `coldtrace agent` and the lines it logs.
type agentProc struct {
	cmd     *exec.Cmd
	metrics string // its metrics' URL, where startAgentProc waited for it
	lines   chan string
}

func startAgent(t *testing.T, cmd *exec.Cmd) *agentProc {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Room for every line of a test's agent: a full channel would stall the agent's logging.
	p := &agentProc{cmd: cmd, lines: make(chan string, 1<<14)}
	go func() {
		defer close(p.lines)
		for sc := bufio.NewScanner(stderr); sc.Scan(); {
			p.lines <- sc.Text()
		}
	}()
	return p
}

// waitLine returns the agent's next log line that contains want, failing the test when the
// agent ends or says nothing of the kind within a minute.
func (p *agentProc) waitLine(t *testing.T, want string) string {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("the agent ended before saying %q", want)
			}
			t.Log(l)
			if strings.Contains(l, want) {
				return l
			}
		case <-timeout:
			t.Fatalf("the agent did not say %q", want)
		}
	}
}
