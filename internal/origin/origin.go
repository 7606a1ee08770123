// Package origin holds loopback origins for tests that count every byte they write,
// headers included, so that a trace's network bytes can be checked against what was really
// sent: Server, a raw TCP origin that sends a body of random bytes of a known size to every
// request, and HTTP, a real HTTP server of one file with Range support.
package origin

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
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
	body := make([]byte, size)
	rand.Read(body)
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

// HTTP is a loopback HTTP/1.1 origin that serves one file at one path, Range requests
// included (http.ServeContent), and counts every byte it writes on its connections,
// headers included.
type HTTP struct {
	srv  *httptest.Server
	path string
	body []byte
	sent atomic.Int64
}

// StartHTTP starts an origin serving size random bytes at path (404 elsewhere); it stops at
// the end of the test.
func StartHTTP(t testing.TB, path string, size int) *HTTP {
	t.Helper()
	h := &HTTP{path: path, body: make([]byte, size)}
	rand.Read(h.body)
	modified := time.Now()
	h.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != h.path {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, path, modified, bytes.NewReader(h.body))
	}))
	h.srv.Listener = countingListener{h.srv.Listener, &h.sent}
	h.srv.Start()
	t.Cleanup(h.srv.Close)
	return h
}

// URL is the address of the file: http://127.0.0.1:PORT/PATH.
func (h *HTTP) URL() string { return h.srv.URL + h.path }

// Port is the TCP port the origin listens on.
func (h *HTTP) Port() int { return h.srv.Listener.Addr().(*net.TCPAddr).Port }

// Sent is the number of bytes written so far, headers included.
func (h *HTTP) Sent() int64 { return h.sent.Load() }

// Size is the size of the file.
func (h *HTTP) Size() int64 { return int64(len(h.body)) }

// Digest is the sha256 of the file, as "sha256:" and 64 hex digits.
func (h *HTTP) Digest() string {
	sum := sha256.Sum256(h.body)
	return "sha256:" + hex.EncodeToString(sum[:])
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.n}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}
