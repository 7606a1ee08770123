package sockdiag

import (
	"io"
	"net"
	"net/netip"
	"testing"
)

// TestTCPCountsLoopbackTransfer has a loopback server write n bytes and close; the dump
// finds the client's socket, by its addresses, with at least n bytes received, and the
// server's with at least n acknowledged.
func TestTCPCountsLoopbackTransfer(t *testing.T) {
	const n = 3<<20 + 12345
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		_, err = c.Write(make([]byte, n))
		served <- err
	}()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := io.Copy(io.Discard, c)
	if err != nil || got != n {
		t.Fatalf("read %d bytes (%v), want %d", got, err, n)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}

	socks, err := TCP()
	if err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	remote := netip.MustParseAddrPort(ln.Addr().String())
	var client *Socket
	for i, s := range socks {
		if s.Local == local && s.Remote == remote {
			client = &socks[i]
		}
		if s.Local == remote && s.Remote == local && s.Sent < n {
			t.Errorf("server socket: %d bytes acknowledged, want >= %d", s.Sent, n)
		}
	}
	if client == nil {
		t.Fatalf("no socket %v -> %v among %d", local, remote, len(socks))
	}
	t.Logf("client socket %v -> %v: cookie %#x, inode %d, state %d, %d bytes received, %d sent", client.Local, client.Remote, client.Cookie, client.Inode, client.State, client.Recv, client.Sent)
	if client.Recv < n || client.Recv > n+1<<10 {
		t.Errorf("client socket: %d bytes received, want %d", client.Recv, n)
	}
	if client.Cookie == 0 || client.Inode == 0 {
		t.Errorf("client socket: cookie %#x, inode %d", client.Cookie, client.Inode)
	}
}
