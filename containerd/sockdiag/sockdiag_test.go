package sockdiag

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/internal/testenv"
)

// TestTCPCountsLoopbackTransfer has a loopback server write n bytes and close; the dump
// finds the client's socket, by its addresses, with at least n bytes received.
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

// TestDestroyedFinalCounts closes a loopback connection after a transfer of n bytes: the
// notice of the client socket's destruction holds at least n bytes received.
func TestDestroyedFinalCounts(t *testing.T) {
	testenv.RequireRoot(t) // the forced receive buffer takes CAP_NET_ADMIN
	const n = 1<<20 + 777
	d, err := WatchDestroyed()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write(make([]byte, n))
			c.Close()
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.Copy(io.Discard, c); err != nil || got != n {
		t.Fatalf("read %d bytes (%v), want %d", got, err, n)
	}
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	c.Close()
	got := make(chan Socket, 1)
	go func() {
		for {
			socks, err := d.Read()
			if errors.Is(err, os.ErrClosed) {
				return
			}
			for _, s := range socks {
				if s.Local == local {
					got <- s
					return
				}
			}
		}
	}()
	select {
	case s := <-got:
		t.Logf("destroyed %v -> %v: cookie %#x, state %d, %d bytes received, %d sent", s.Local, s.Remote, s.Cookie, s.State, s.Recv, s.Sent)
		if s.Recv < n || s.Recv > n+1<<10 || s.Remote.String() != ln.Addr().String() {
			t.Errorf("destroyed %v -> %v with %d bytes received, want %v with %d", s.Local, s.Remote, s.Recv, ln.Addr(), n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no notice of the client socket's destruction")
	}
}

// FuzzParseNotices: any datagram parses into sockets or an error, without a panic.
func FuzzParseNotices(f *testing.F) {
	msg := make([]byte, 16+sizeofDiagMsg+4+offBytesReceived+8)
	binary.NativeEndian.PutUint32(msg, uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	msg[16] = unix.AF_INET
	binary.NativeEndian.PutUint16(msg[16+sizeofDiagMsg:], uint16(4+offBytesReceived+8))
	binary.NativeEndian.PutUint16(msg[16+sizeofDiagMsg+2:], attrInfo)
	f.Add(msg)
	f.Add(msg[:40])
	f.Fuzz(func(t *testing.T, b []byte) {
		parseNotices(b)
	})
}
