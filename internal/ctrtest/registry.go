package ctrtest

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/coldtrace/coldtrace/internal/rate"
)

// RegistryOptions configures StartRegistry.
type RegistryOptions struct {
	// Rate limits the bytes per second of all blob responses together, like one link to
	// the registry; zero means unlimited. Manifests are not limited.
	Rate int64
	// Listener is where the registry serves (in a network namespace of the caller's, say);
	// nil listens on 127.0.0.1.
	Listener net.Listener
	// Referrers serves the OCI 1.1 referrers API; without it, clients fall back to the
	// referrers tag schema.
	Referrers bool
}

// Registry is an in-process OCI registry on 127.0.0.1 that counts the bytes it serves:
// blobs, and manifests by their digest.
type Registry struct {
	// Host is "127.0.0.1:port", the registry part of image references.
	Host string

	srv    *http.Server
	bucket *bucket // nil when unlimited

	mu        sync.Mutex
	served    map[string]int64 // blobs and manifests, by digest
	sent      map[string]*sendTimes
	total     int64 // blobs only
	failAfter int64 // blob bytes left before the registry dies; -1 for never
	dead      bool
}

// blobPath matches blob downloads: /v2/<repository>/blobs/<digest>; manifestPath manifest
// downloads, by tag or digest.
var (
	blobPath     = regexp.MustCompile(`^/v2/.+/blobs/(sha256:[0-9a-f]{64})$`)
	manifestPath = regexp.MustCompile(`^/v2/.+/manifests/[^/]+$`)
)

// chunk bounds each rate-limited write so that the bucket meters smoothly.
const chunk = 32 << 10

// StartRegistry starts a registry on 127.0.0.1:0; it stops at the end of the test.
func StartRegistry(t testing.TB, opts RegistryOptions) *Registry {
	t.Helper()
	ln := opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	r := &Registry{Host: ln.Addr().String(), served: map[string]int64{}, sent: map[string]*sendTimes{}, failAfter: -1}
	if opts.Rate > 0 {
		r.bucket = &bucket{rate: opts.Rate, burst: max(2*chunk, opts.Rate/4)}
	}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(opts.Referrers))
	r.srv = &http.Server{
		Handler:  r.wrap(reg),
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go r.srv.Serve(ln)
	t.Cleanup(r.Stop)
	return r
}

// Stop closes the listener and every connection: later requests are refused.
func (r *Registry) Stop() { r.srv.Close() }

// FailAfter makes the registry die once it has served n more blob bytes: it cuts the
// connection in the middle of the blob and every request after that.
func (r *Registry) FailAfter(n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failAfter = n
}

// Served returns the bytes sent for one digest ("sha256:..."), a blob's or a manifest's: a
// pull downloads its manifests into containerd's content store like its blobs.
func (r *Registry) Served(digest string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.served[digest]
}

// sendTimes is a blob's download on the registry's clock.
type sendTimes struct{ requested, last time.Time }

// Sent returns when the first request for a blob arrived and when the last write of its
// bytes began (zero times for a blob never requested): on the registry's clock, ground
// truth that a client's own timing of the download must lie around, however busy the
// machine.
func (r *Registry) Sent(digest string) (requested, last time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.sent[digest]; s != nil {
		return s.requested, s.last
	}
	return time.Time{}, time.Time{}
}

// Total returns the blob bytes sent in all (layers and configs; manifests are left out).
func (r *Registry) Total() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

// Push uploads img as repo:tag and returns its reference, "127.0.0.1:port/repo:tag".
func (r *Registry) Push(t testing.TB, repoTag string, img v1.Image) string {
	t.Helper()
	ref := r.Host + "/" + repoTag
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

// PullingName is how coldtrace names a pull, still running, of the image pushed as
// repoTag with manifest digest top (containerd.NameIngests): by digest, with the
// registry's host but not its port, as containerd's labels give it.
func (r *Registry) PullingName(repoTag, top string) string {
	host, _, _ := strings.Cut(r.Host, ":")
	repo, _, _ := strings.Cut(repoTag, ":")
	return host + "/" + repo + "@" + top
}

func (r *Registry) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		dead := r.dead
		r.mu.Unlock()
		if dead {
			panic(http.ErrAbortHandler) // drops the connection without a response
		}
		if manifestPath.MatchString(req.URL.Path) && req.Method == http.MethodGet {
			w = &manifestWriter{ResponseWriter: w, r: r}
		} else if m := blobPath.FindStringSubmatch(req.URL.Path); m != nil && req.Method == http.MethodGet {
			r.mu.Lock()
			if r.sent[m[1]] == nil {
				r.sent[m[1]] = &sendTimes{requested: time.Now()}
			}
			r.mu.Unlock()
			closeRange(h, req)
			w = &blobWriter{ResponseWriter: w, r: r, digest: m[1]}
			if r.bucket != nil {
				r.bucket.busy(1)
				defer r.bucket.busy(-1)
			}
		}
		h.ServeHTTP(w, req)
	})
}

// closeRange gives an open-ended range request ("bytes=N-", as containerd sends to resume a
// blob) the end that the in-process registry needs, from the blob's size; real registries
// take open-ended ranges as they are.
func closeRange(h http.Handler, req *http.Request) {
	var start int64
	rng := req.Header.Get("Range")
	if n, err := fmt.Sscanf(rng, "bytes=%d-", &start); n != 1 || err != nil || !strings.HasSuffix(rng, "-") {
		return
	}
	head := httptest.NewRecorder()
	h.ServeHTTP(head, httptest.NewRequest(http.MethodHead, req.URL.Path, nil))
	if size, err := strconv.ParseInt(head.Header().Get("Content-Length"), 10, 64); err == nil && head.Code == http.StatusOK {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", start, size-1))
	}
}

// blobWriter meters and counts a blob's body.
type blobWriter struct {
	http.ResponseWriter
	r      *Registry
	digest string
}

func (w *blobWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), chunk)
		n, cut := w.r.admit(n)
		if w.r.bucket != nil {
			w.r.bucket.wait(n)
		}
		at := time.Now() // before the write: the client cannot have the bytes earlier
		n, err := w.ResponseWriter.Write(p[:n])
		written += n
		w.r.count(w.digest, n, at)
		if err != nil {
			return written, err
		}
		if cut {
			w.ResponseWriter.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		p = p[n:]
	}
	return written, nil
}

// admit shortens a write that crosses the failure point and says whether the registry
// dies after it.
func (r *Registry) admit(n int) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failAfter < 0 {
		return n, false
	}
	if int64(n) >= r.failAfter {
		n = int(r.failAfter)
		r.failAfter, r.dead = -1, true
		return n, true
	}
	r.failAfter -= int64(n)
	return n, false
}

func (r *Registry) count(digest string, n int, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.served[digest] += int64(n)
	r.total += int64(n)
	r.sent[digest].last = at
}

// manifestWriter counts a manifest's body under its digest, which the registry gives in
// the response's header (a manifest fetched by tag has no digest in its path). Manifests
// are neither metered nor part of Total.
type manifestWriter struct {
	http.ResponseWriter
	r *Registry
}

func (w *manifestWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.r.mu.Lock()
	w.r.served[w.Header().Get("Docker-Content-Digest")] += int64(n)
	w.r.mu.Unlock()
	return n, err
}

// bucket meters all blob responses together, as one link: writers take what they need
// from one limiter and sleep off the debt, so waiting writers share the rate fairly. The
// burst, 250 ms of the rate, lets the sender catch up after the receiver stalled, as the
// buffers of a real link do; the limiter is made anew, empty, when a blob starts on an idle
// link, so that a transfer does not start with a burst saved up while idle.
type bucket struct {
	mu          sync.Mutex
	rate, burst int64
	active      int
	l           *rate.Limiter
}

// busy counts blob responses in flight; the first one starts the bucket empty.
func (b *bucket) busy(d int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.active == 0 {
		b.l = rate.NewBurst(b.rate, b.burst)
	}
	b.active += d
}

func (b *bucket) wait(n int) {
	b.mu.Lock()
	l := b.l
	b.mu.Unlock()
	l.Wait(context.Background(), n)
}
