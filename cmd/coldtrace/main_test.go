package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/internal/example"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

// The coldtrace binary, built once for all the tests (see build) in binDir, which TestMain
// removes at the end.
var (
	buildOnce sync.Once
	binDir    string
	builtBin  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// build compiles the coldtrace binary at its first call and returns it to every test.
func build(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "coldtrace-test-"); buildErr != nil {
			return
		}
		path := filepath.Join(binDir, "coldtrace")
		if out, err := exec.Command("go", "build", "-o", path, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		builtBin = path
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// TestRecordExample runs the README's first command: the built-in example, end to end.
func TestRecordExample(t *testing.T) {
	testenv.RequireBPF(t)
	bin := build(t)
	out := filepath.Join(t.TempDir(), "example.json.gz")
	cmd := exec.Command(bin, "record", "--example", "-o", out)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("record --example: %v\n%s", err, b)
	}
	for _, want := range []string{"outcome:      ready", "fetch", "load", "model.safetensors"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the printed breakdown lacks %q:\n%s", want, b)
		}
	}
	tr, err := trace.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var fetched int64
	for _, c := range tr.Conns {
		fetched += c.BytesRecv
	}
	if fetched < example.ShardBytes || fetched > example.ShardBytes+4096 {
		t.Errorf("fetched %d bytes, want the %d-byte shard and its headers", fetched, example.ShardBytes)
	}
	for _, f := range tr.Files {
		if filepath.Base(f.Path) == "model.safetensors" && f.MappedBytes < example.ModelBytes/2 {
			t.Errorf("model mapped %d bytes, want at least half of %d", f.MappedBytes, example.ModelBytes)
		}
	}
	report := exec.Command(bin, "report", out, "--format", "html")
	html, err := report.Output()
	if err != nil || !strings.Contains(string(html), "<svg") {
		t.Errorf("report --format html: %v", err)
	}
}

// TestRecordInterrupted sends Ctrl-C to a recording: the partial trace is written.
func TestRecordInterrupted(t *testing.T) {
	testenv.RequireBPF(t)
	bin := build(t)
	out := filepath.Join(t.TempDir(), "partial.json")
	cmd := exec.Command(bin, "record", "--format", "none", "-o", out, "--", "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Errorf("exit %v, want status 2 for an interrupted recording", err)
	}
	tr, err := trace.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Outcome != trace.OutcomeInterrupted || !tr.Incomplete {
		t.Errorf("outcome %s incomplete %v, want interrupted and incomplete", tr.Outcome, tr.Incomplete)
	}
}

func TestRecordErrors(t *testing.T) {
	bin := build(t)
	for args, want := range map[string]string{
		"record":                             "nothing to record",
		"record --format xml -- true":        "unknown --format",
		"record --ring-buffer lots -- true":  "not a byte count",
		"report /nonexistent/trace.json":     "no such file",
		"record -- coldtrace-no-such-binary": "cannot run",
		"agent --metrics-workloads 0":        "want at least 1",
	} {
		out, err := exec.Command(bin, strings.Fields(args)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("coldtrace %s: %v, output %q, want an error saying %q", args, err, out, want)
		}
	}
}
