package main

import (
	"bufio"
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
	// The socket by a path relative to the agent's working directory.
	sockDir, sock := filepath.Split(ctrd.Address)
	cmd := exec.Command(bin, "agent", "--containerd", filepath.Join(filepath.Base(sockDir), sock), "--namespace", "default", "--data-dir", data)
	cmd.Dir = filepath.Dir(filepath.Clean(sockDir))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		for sc := bufio.NewScanner(stderr); sc.Scan(); {
			lines <- sc.Text()
		}
	}()
	waitLine := func(want string) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the agent ended before saying %q", want)
				}
				t.Log(l)
				if strings.Contains(l, want) {
					return
				}
			case <-timeout:
				t.Fatalf("the agent did not say %q", want)
			}
		}
	}
	readTrace := func(id string) *trace.Trace {
		t.Helper()
		tr, err := trace.ReadFile(filepath.Join(data, "traces", "default", id+".json.gz"))
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}

	waitLine("watching containerd")
	ctrd.Ctr(t, "run", "-d", ref, "crash", "sh", "-c", "cat /bin/busybox > /dev/null; exit 3")
	waitLine("container crash: exited")
	if tr := readTrace("crash"); tr.Outcome != trace.OutcomeExited || !strings.Contains(tr.Error, "exit status 3") || tr.Workload.Image != ref {
		t.Errorf("crash: outcome %s (%s), image %s", tr.Outcome, tr.Error, tr.Workload.Image)
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
