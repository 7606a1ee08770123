// Package origin holds loopback origins for tests that count every byte they write,
// headers included, so that a trace's network bytes can be checked against what was really
// sent: Server, a raw TCP origin that sends a body of random bytes of a known size to every
// request, and HTTP, a real HTTP server of one file with Range support.
package origin

import (
	"bufio"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
)

// Server is a running origin on 127.0.0.1.
type Server struct {
	ln   net.Listener
	sent atomic.Int64
}

// Start starts an origin serving size bytes; it stops at the end of the test.
func Start(t testing.TB, size int) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{ln: ln}
	body := Random(size)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c, body)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return s
}

func (s *Server) serve(c net.Conn, body []byte) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil || line == "\r\n" {
			break
		}
	}
	n, _ := fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
	m, _ := c.Write(body)
	s.sent.Add(int64(n + m))
}

// Port is the TCP port the origin listens on.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Sent is the number of bytes written so far, headers included.
func (s *Server) Sent() int64 { return s.sent.Load() }
