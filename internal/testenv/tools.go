package testenv

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// GoTool returns the path of the executable name of the Go tools module in the
// repository's folder hack/dir, which go caches once built (hack/install-deps.sh builds
// them ahead of the tests). Servers the tests run, such as Jaeger and SeaweedFS, live in
// modules of their own so that coldtrace's go.mod stays lean.
func GoTool(t testing.TB, dir, name string) string {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	mod := filepath.Join(filepath.Dir(here), "..", "..", "hack", dir)
	out, err := exec.Command(GoBinary(t), "-C", mod, "tool", "-n", name).Output()
	bin := strings.TrimSpace(string(out))
	why := ""
	if err != nil {
		why = fmt.Sprintf("go -C hack/%s tool -n %s: %v", dir, name, err)
	}
	Require(t, fmt.Sprintf("the %s tool of hack/%s (hack/install-deps.sh builds it)", name, dir), err == nil && bin != "", why)
	return bin
}

// GoBinary is the go command that runs the tests, for tests that run go's own tools.
func GoBinary(t testing.TB) string {
	t.Helper()
	return RequireBinary(t, "go")
}

// FreePort is a TCP port free on 127.0.0.1 now, for a server that must be told its port
// (a child process, or a pod on the host's network) rather than given port 0.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
