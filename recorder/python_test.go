package recorder

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

var pythonCmd = []string{"/usr/bin/python3", "-c", "import json, sqlite3, email, decimal"}

// straceOpens runs the command under strace -f and returns the regular files it opened
// successfully, as absolute paths.
func straceOpens(t *testing.T, cmd []string) map[string]bool {
	testenv.RequireBinary(t, "strace")
	log := filepath.Join(t.TempDir(), "strace.log")
	args := append([]string{"-f", "-qq", "-e", "trace=open,openat,openat2", "-e", "signal=none", "-o", log}, cmd...)
	if out, err := exec.Command("strace", args...).CombinedOutput(); err != nil {
		t.Fatalf("strace: %v\n%s", err, out)
	}
	f, err := os.Open(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cwd, _ := os.Getwd()
	// 1234  openat(AT_FDCWD, "/usr/lib/x.so", O_RDONLY|O_CLOEXEC) = 3
	re := regexp.MustCompile(`open(?:at2?)?\((?:AT_FDCWD, )?"([^"]+)".*\) = (\d+)$`)
	files := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := re.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		p := m[1]
		if !path.IsAbs(p) {
			p = path.Join(cwd, p)
		}
		p = path.Clean(p)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			files[p] = true
		}
	}
	return files
}

// TestPythonAgainstStrace records a program nobody here wrote and checks it against two
// outside witnesses: the files strace sees it open, and the kernel's I/O accounting.
func TestPythonAgainstStrace(t *testing.T) {
	testenv.RequireBPF(t)
	testenv.RequireBinary(t, pythonCmd[0])
	want := straceOpens(t, pythonCmd)

	var procRead int64
	tr, err := Record(context.Background(), Options{
		Command: pythonCmd,
		Stderr:  os.Stderr,
		Timeout: time.Minute,
		OnExit:  func(pid int) { procRead = testenv.Rchar(t, pid) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Outcome != trace.OutcomeExited || tr.Error != "" {
		t.Fatalf("outcome %s (%s), want a clean exit", tr.Outcome, tr.Error)
	}
	got := map[string]bool{}
	var read int64
	for _, f := range tr.Files {
		if f.Opens > 0 {
			got[f.Path] = true
		}
		read += f.BytesRead
	}
	for p := range want {
		if !got[p] {
			t.Errorf("strace saw %s opened; the trace did not", p)
		}
	}
	for p := range got {
		if !want[p] {
			t.Errorf("the trace has %s opened; strace did not", p)
		}
	}
	t.Logf("%d files opened, %d bytes read; /proc/PID/io rchar %d", len(got), read, procRead)
	if d := float64(read-procRead) / float64(procRead); d < -0.01 || d > 0.01 {
		t.Errorf("bytes read from files %d, /proc/PID/io rchar %d: off by %.2f%%", read, procRead, 100*d)
	}
}
