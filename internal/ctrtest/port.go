package ctrtest

import (
	"net"
	"testing"
)

// FreePort is a TCP port free on the host now, for a server of a pod on the host's
// network, which a test cannot give port 0.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
