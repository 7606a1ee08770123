// Package testenv lets a test say what its environment must have: root, BPF with kernel BTF,
// a program on PATH. When something is missing the test is skipped with a message that says
// what and why, except in CI (CI=true), where a skip would hide a test that never ran: there
// the test fails instead.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// VmlinuxBTF is where the running kernel exposes its BTF; CO-RE programs need it.
const VmlinuxBTF = "/sys/kernel/btf/vmlinux"

// Seams for the package's own tests.
var (
	geteuid  = os.Geteuid
	btfPath  = VmlinuxBTF
	lookPath = exec.LookPath
)

// InCI reports whether the tests run in CI: the environment variable CI is true (as
// strconv.ParseBool reads it: true, TRUE, True or 1).
func InCI() bool {
	ci, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && ci
}

// Require skips t, or fails it in CI, unless ok. what names the requirement ("root"), why
// says what was found instead ("running as uid 1000").
func Require(t testing.TB, what string, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	msg := "requires " + what
	if why != "" {
		msg += ": " + why
	}
	if InCI() {
		t.Fatal(msg + " (CI=true: a test that cannot run fails in CI instead of skipping)")
	}
	t.Skip(msg)
}

// RequireRoot requires the test to run as root (effective uid 0).
func RequireRoot(t testing.TB) {
	t.Helper()
	uid := geteuid()
	Require(t, "root", uid == 0, fmt.Sprintf("running as uid %d", uid))
}

// RequireBPF requires what loading coldtrace's CO-RE programs needs: root, and the kernel's
// BTF at /sys/kernel/btf/vmlinux.
func RequireBPF(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	_, err := os.Stat(btfPath)
	why := ""
	if err != nil {
		why = fmt.Sprintf("kernel BTF: %v", err)
	}
	Require(t, "BPF with kernel BTF", err == nil, why)
}

// RequireBinary requires the program name on PATH and returns its path.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	path, err := lookPath(name)
	why := ""
	if err != nil {
		why = err.Error()
	}
	Require(t, "the program "+name, err == nil, why)
	return path
}

// Rchar is the bytes process pid (0: this one) has read through read(2) and its kin, as
// the kernel counts them in /proc/PID/io: ground truth for how much a call or a workload
// read, from outside the code under test. It reports a failure with t.Errorf (and returns
// 0), so it may be called from any goroutine.
func Rchar(t testing.TB, pid int) int64 {
	t.Helper()
	p := "/proc/self/io"
	if pid != 0 {
		p = "/proc/" + strconv.Itoa(pid) + "/io"
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("read %s: %v", p, err)
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "rchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Errorf("%s: %v", p, err)
			}
			return n
		}
	}
	t.Errorf("%s has no rchar", p)
	return 0
}
