package watcher

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

// readerDir holds the files the reader workload reads: enough of them that their read
// runs fill several of the kernel's per-CPU batches (32 runs each).
const (
	readerDir   = "/data/many"
	readerFiles = 48
)

// readerLayerFiles are the files of the reader workload (testdata/reader.c, compiled
// static): the binary, busybox's taskset and readerDir's files, of sizes from 1 byte to
// 190 KiB, so that some take one read and some dozens.
func readerLayerFiles(t *testing.T) []ctrtest.File {
	t.Helper()
	testenv.RequireBinary(t, "gcc")
	_, here, _, _ := runtime.Caller(0)
	bin := filepath.Join(t.TempDir(), "reader")
	if b, err := exec.Command("gcc", "-O2", "-Wall", "-static", "-o", bin, filepath.Join(filepath.Dir(here), "testdata", "reader.c")).CombinedOutput(); err != nil {
		t.Fatalf("gcc reader.c: %v\n%s", err, b)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	files := []ctrtest.File{{Path: "/reader", Mode: 0o755, Data: data}, {Path: "/bin/taskset", Link: "busybox"}}
	for i := range readerFiles {
		size := 1 + i*i*83
		files = append(files, ctrtest.File{Path: fmt.Sprintf("%s/f%02d", readerDir, i), Data: bytes.Repeat([]byte{byte(i)}, size)})
	}
	return files
}

// checkReads compares a trace with the reader's report of what it read ("PATH BYTES"
// lines): every file with exactly its bytes, and a complete trace.
func checkReads(t *testing.T, name string, tr *trace.Trace, report string) {
	t.Helper()
	if tr.Outcome != trace.OutcomeReady || tr.Incomplete || tr.LostEvents > 0 {
		t.Errorf("%s: outcome %s (%s), incomplete %v, lost %d, warnings %q", name, tr.Outcome, tr.Error, tr.Incomplete, tr.LostEvents, tr.Warnings)
	}
	read := map[string]int64{}
	for _, f := range tr.Files {
		read[f.Path] = f.BytesRead
	}
	lines := strings.Split(strings.TrimSpace(report), "\n")
	if len(lines) != readerFiles {
		t.Fatalf("%s: the reader reported %d files, want %d:\n%s", name, len(lines), readerFiles, report)
	}
	wrong := 0
	for _, l := range lines {
		path, n, _ := strings.Cut(l, " ")
		want, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			t.Fatalf("%s: report line %q", name, l)
		}
		if got, ok := read[path]; !ok || got != want {
			wrong++
			t.Errorf("%s: %s: the trace has %d bytes read (present %v), the reader read %d", name, path, got, ok, want)
		}
	}
	t.Logf("%s: %d of %d files exact, %d files in the trace, ready after %v", name, len(lines)-wrong, len(lines), len(tr.Files), tr.Duration)
}

// runReader starts a container with ctr that runs the reader with args, reporting to
// /out/ID, that is outDir/ID: outDir is bind-mounted at /out. cpu pins it (with taskset)
// to one CPU unless negative.
func (n *node) runReader(id, outDir string, cpu int, args ...string) error {
	cmd := []string{"/reader"}
	if cpu >= 0 {
		cmd = []string{"taskset", "-c", strconv.Itoa(cpu), "/reader"}
	}
	cmd = append(append(cmd, args...), "/out/"+id, readerDir)
	ctr := append([]string{"--address", n.ctrd.Address, "-n", namespace, "run", "-d",
		"--mount", "type=bind,src=" + outDir + ",dst=/out,options=rbind:rw", n.ref, n.id(id)}, cmd...)
	if out, err := exec.Command("ctr", ctr...).CombinedOutput(); err != nil {
		return fmt.Errorf("ctr run %s: %v: %s", id, err, out)
	}
	return nil
}

// TestAgentBurstComplete starts 8 containers at once: their read runs share the kernel's
// per-CPU batches, and each trace must still hold exactly what its workload read.
func TestAgentBurstComplete(t *testing.T) {
	n := buildNode(t, ctrtest.RegistryOptions{}, readerLayerFiles(t)...)
	n.pull(t)
	n.startAgent(t)
	const burst = 8
	out := t.TempDir()
	var wg sync.WaitGroup
	errs := make(chan error, burst)
	for i := range burst {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- n.runReader(fmt.Sprintf("burst%d", i), out, -1) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range burst {
		name := fmt.Sprintf("burst%d", i)
		tr := n.trace(t, name)
		report, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		checkReads(t, name, tr, string(report))
		checkRuntime(t, name, tr)
	}
}

// TestAgentInterleavedOnOneCPU pins two containers to one CPU and lets them read at the
// same moment, yielding the CPU to each other after every file: their read runs alternate
// in that CPU's batches.
func TestAgentInterleavedOnOneCPU(t *testing.T) {
	n := buildNode(t, ctrtest.RegistryOptions{}, readerLayerFiles(t)...)
	n.pull(t)
	n.startAgent(t)
	names := []string{"left", "right"}
	out := t.TempDir()
	for _, name := range names {
		// Both wait for /out/go, which the test creates once both are pinned and tracked.
		if err := n.runReader(name, out, 0, "-y", "-g", "/out/go"); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		pid, err := waitForComm(cgroupDir(t, n.id(name)), "reader")
		if err != nil {
			t.Fatal(err)
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil || !strings.Contains(string(status), "\nCpus_allowed_list:\t0\n") {
			t.Fatalf("%s: the reader is not pinned to CPU 0 (%v):\n%s", name, err, status)
		}
		n.log.waitFor(t, "recording container "+n.id(name), 0)
	}
	if err := os.WriteFile(filepath.Join(out, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		tr := n.trace(t, name) // at ready: the report is written
		report, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		checkReads(t, name, tr, string(report))
		checkRuntime(t, name, tr)
	}
}
