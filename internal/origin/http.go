package origin

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// HTTP is a loopback HTTP/1.1 origin for tests of downloads: it serves one body at one path
// with http.ServeContent (so Range and If-Range work against its ETag), paced to a rate,
// records every request with the body bytes it wrote, and counts every byte it writes on
// its connections, headers included.
type HTTP struct {
	srv  *httptest.Server
	path string
	sent atomic.Int64

	mu          sync.Mutex
	body        []byte
	etag        string
	rate        int64
	ignoreRange bool
	reqs        []Request
}

// Request is one request the origin answered.
type Request struct {
	Range  string // the Range header, if any
	Status int
	Body   int64 // body bytes written
}

// StartHTTP starts an origin serving body at path (404 elsewhere) at bytesPerSec (0: as
// fast as it goes); it stops at the end of the test.
func StartHTTP(t testing.TB, path string, body []byte, bytesPerSec int64) *HTTP {
	t.Helper()
	return StartHTTPOn(t, nil, path, body, bytesPerSec)
}

// StartHTTPOn is StartHTTP on ln, a listener the caller made (in a network namespace of
// its own, say); nil listens on 127.0.0.1.
func StartHTTPOn(t testing.TB, ln net.Listener, path string, body []byte, bytesPerSec int64) *HTTP {
	t.Helper()
	o := &HTTP{path: path, rate: bytesPerSec}
	o.SetBody(body)
	o.srv = httptest.NewUnstartedServer(http.HandlerFunc(o.serve))
	if ln != nil {
		o.srv.Listener.Close()
		o.srv.Listener = ln
	}
	o.srv.Listener = countingListener{o.srv.Listener, &o.sent}
	o.srv.Start()
	t.Cleanup(o.Close)
	return o
}

// Random returns size random bytes, a body no compression shrinks.
func Random(size int) []byte {
	b := make([]byte, size)
	rand.Read(b)
	return b
}

// URL is the address of the body: http://127.0.0.1:PORT/PATH.
func (o *HTTP) URL() string { return o.srv.URL + o.path }

// Port is the TCP port the origin listens on.
func (o *HTTP) Port() int { return o.srv.Listener.Addr().(*net.TCPAddr).Port }

// Sent is the number of bytes written on the origin's connections so far, headers included.
func (o *HTTP) Sent() int64 { return o.sent.Load() }

// Size is the size of the body.
func (o *HTTP) Size() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return int64(len(o.body))
}

// Body is the content served.
func (o *HTTP) Body() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.body
}

// Digest is the sha256 of the body, as "sha256:" and 64 hex digits.
func (o *HTTP) Digest() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	sum := sha256.Sum256(o.body)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Close stops the origin: from then on a fetch finds nobody listening.
func (o *HTTP) Close() { o.srv.Close() }

// SetBody replaces the content, and with it the ETag.
func (o *HTTP) SetBody(body []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.body = body
	o.etag = fmt.Sprintf(`"%x"`, sha256.Sum256(body))
}

// IgnoreRange makes the origin answer every request with the whole body, as a server
// without range support does.
func (o *HTTP) IgnoreRange(ignore bool) {
	o.mu.Lock()
	o.ignoreRange = ignore
	o.mu.Unlock()
}

// Requests returns the requests answered so far.
func (o *HTTP) Requests() []Request {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Request(nil), o.reqs...)
}

// BodyBytes is the body bytes written so far, all requests together.
func (o *HTTP) BodyBytes() int64 {
	var n int64
	for _, r := range o.Requests() {
		n += r.Body
	}
	return n
}

func (o *HTTP) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != o.path {
		http.NotFound(w, r)
		return
	}
	o.mu.Lock()
	body, etag, rate, ignore := o.body, o.etag, o.rate, o.ignoreRange
	if ignore {
		r.Header.Del("Range")
	}
	// Recorded on arrival and counted as it is written, so that a client that has read the
	// whole body finds its request complete here, even before the handler returns.
	o.reqs = append(o.reqs, Request{Range: r.Header.Get("Range"), Status: http.StatusOK})
	pw := &pacedWriter{ResponseWriter: w, o: o, i: len(o.reqs) - 1, rate: rate}
	o.mu.Unlock()
	w.Header().Set("ETag", etag)
	http.ServeContent(pw, r, "", time.Unix(1700000000, 0), bytes.NewReader(body))
}

// pacedWriter counts the body bytes written into its request's record and sends them in
// 16 KiB pieces at rate.
type pacedWriter struct {
	http.ResponseWriter
	o    *HTTP
	i    int
	rate int64
}

func (p *pacedWriter) WriteHeader(code int) {
	p.o.mu.Lock()
	p.o.reqs[p.i].Status = code
	p.o.mu.Unlock()
	p.ResponseWriter.WriteHeader(code)
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		c := b[:min(len(b), 16<<10)]
		n, err := p.ResponseWriter.Write(c)
		written += n
		p.o.mu.Lock()
		p.o.reqs[p.i].Body += int64(n)
		p.o.mu.Unlock()
		if err != nil {
			return written, err
		}
		b = b[n:]
		if p.rate > 0 {
			p.ResponseWriter.(http.Flusher).Flush()
			time.Sleep(time.Duration(int64(n) * int64(time.Second) / p.rate))
		}
	}
	return written, nil
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
