package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/manifest"
)

// stallingOrigin serves body at /blob with Range support; while stalled, it answers with
// the headers and the first `head` bytes, then sends nothing more until the client leaves.
type stallingOrigin struct {
	srv  *httptest.Server
	body []byte
	head int

	mu      sync.Mutex
	stalled bool
	ranges  []string // the Range header of each request
}

func startStallingOrigin(t *testing.T, body []byte, head int) *stallingOrigin {
	o := &stallingOrigin{body: body, head: head, stalled: true}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.ranges = append(o.ranges, r.Header.Get("Range"))
		stalled := o.stalled
		o.mu.Unlock()
		w.Header().Set("ETag", `"v1"`)
		if !stalled {
			http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(body)))
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		w.Write(body[:head])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *stallingOrigin) heal() {
	o.mu.Lock()
	o.stalled = false
	o.mu.Unlock()
}

func (o *stallingOrigin) requests() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.ranges...)
}

// An origin that sends its headers and a little, then nothing: Stage gives up after the
// idle timeout (not the caller's deadline), keeps what came, and resumes from it later.
func TestStalledOrigin(t *testing.T) {
	body := origin.Random(1 << 20)
	const head = 64 << 10
	o := startStallingOrigin(t, body, head)
	root := t.TempDir()
	s := openStore(t, root, Options{AllowOrigins: loopback, IdleTimeout: time.Second})
	a := manifest.Artifact{Path: "/m", Origin: o.srv.URL + "/blob", Size: int64(len(body)), Digest: digestOf(body)}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err := s.Stage(ctx, "a", a, nil)
	took := time.Since(start)
	if err == nil || !errors.Is(err, errStalled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		t.Fatalf("Stage from a stalled origin: %v, want it to give up as stalled", err)
	}
	t.Logf("gave up after %v: %v", took.Round(time.Millisecond), err)
	absent(t, blobPath(root, "a", body))
	if n := fileSize(t, partialPath(root, "a", body)); n != head {
		t.Fatalf("partial file of %d bytes, want the %d the origin sent", n, head)
	}

	o.heal()
	r := mustStage(t, s, "a", a)
	reqs := o.requests()
	if want := fmt.Sprintf("bytes=%d-", head); r.Action != Resumed || r.ResumedFrom != head || reqs[len(reqs)-1] != want {
		t.Errorf("Stage: %+v, the origin saw %q, want a resume with %s", r, reqs, want)
	}
	sameFile(t, r.Path, body)
}

// By default the store connects to no loopback or link-local address (the kubelet on
// 127.0.0.1:10250, the metadata service on 169.254.169.254); the allow-list lets it.
func TestOriginAddressPolicy(t *testing.T) {
	body := origin.Random(64 << 10)
	o := origin.StartHTTP(t, "/blob", body, 0)
	a := artifact(o, body)
	root := t.TempDir()

	s := openStore(t, root, Options{})
	_, err := s.Stage(context.Background(), "a", a, nil)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "127.0.0.1 is loopback") || !strings.Contains(err.Error(), "--origin-allow") {
		t.Fatalf("Stage from a loopback origin: %v, want it refused, naming the address and the flag", err)
	}
	if n := len(o.Requests()); n != 0 || o.Sent() != 0 {
		t.Errorf("the refused origin got %d requests, %d bytes", n, o.Sent())
	}
	absent(t, blobPath(root, "a", body))

	meta := a
	meta.Origin = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Stage(ctx, "a", meta, nil); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "169.254.169.254 is link-local") {
		t.Errorf("Stage from the metadata address: %v, want it refused", err)
	}

	allowed := openStore(t, root, Options{AllowOrigins: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	if r := mustStage(t, allowed, "a", a); r.Action != Fetched || o.BodyBytes() != a.Size {
		t.Errorf("Stage with the address allowed: %+v, the origin sent %d", r, o.BodyBytes())
	}
}

// A redirect goes through the same check: an allowed origin cannot send the store on to
// an address it refuses. Redirects are followed five times at most.
func TestRedirects(t *testing.T) {
	body := origin.Random(64 << 10)
	// The refused target listens on 127.0.0.2, outside the allow-list 127.0.0.1/32.
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	var refusedHits atomic.Int64
	refused := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refusedHits.Add(1)
		w.Write(body)
	}))
	refused.Listener.Close()
	refused.Listener = ln
	refused.Start()
	t.Cleanup(refused.Close)
	target := origin.StartHTTP(t, "/blob", body, 0)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/hop/")); {
		case r.URL.Path == "/away":
			http.Redirect(w, r, refused.URL+"/blob", http.StatusFound)
		case n > 0:
			http.Redirect(w, r, fmt.Sprintf("/hop/%d", n-1), http.StatusFound)
		default:
			http.Redirect(w, r, target.URL(), http.StatusFound)
		}
	}))
	t.Cleanup(front.Close)
	a := artifact(target, body)
	root := t.TempDir()
	only1 := openStore(t, root, Options{AllowOrigins: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})

	away := a
	away.Origin = front.URL + "/away"
	_, err = only1.Stage(context.Background(), "a", away, nil)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "127.0.0.2 is loopback") {
		t.Fatalf("Stage redirected to a refused address: %v, want it refused", err)
	}
	if n := refusedHits.Load(); n != 0 {
		t.Errorf("the refused address got %d requests", n)
	}
	absent(t, blobPath(root, "a", body))

	// /hop/N redirects N times to /hop/0, which redirects once more to the file.
	for _, tc := range []struct {
		n  int
		ok bool
	}{{4, true}, {5, false}} {
		b := a
		b.Origin = fmt.Sprintf("%s/hop/%d", front.URL, tc.n)
		_, err := only1.Stage(context.Background(), fmt.Sprintf("hop-%d", tc.n), b, nil)
		if tc.ok && err != nil {
			t.Errorf("%d redirects: %v", tc.n+1, err)
		}
		if !tc.ok && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "more than 5 redirects")) {
			t.Errorf("%d redirects: %v, want them refused", tc.n+1, err)
		}
	}
}

func TestCheckRedirect(t *testing.T) {
	get := func(u string) *http.Request {
		p, _ := url.Parse(u)
		return &http.Request{URL: p}
	}
	sec, plain := get("https://hub.example/m"), get("http://hub.example/m")
	if err := checkRedirect(plain, []*http.Request{sec}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "from https to http") {
		t.Errorf("https -> http: %v, want refused", err)
	}
	if err := checkRedirect(sec, []*http.Request{plain}); err != nil {
		t.Errorf("http -> https: %v", err)
	}
	if err := checkRedirect(sec, []*http.Request{sec, sec, sec, sec, sec}); err != nil {
		t.Errorf("a fifth redirect: %v", err)
	}
	if err := checkRedirect(sec, []*http.Request{sec, sec, sec, sec, sec, sec}); err == nil {
		t.Error("a sixth redirect was followed")
	}
}

func TestAddressPolicy(t *testing.T) {
	none, meta := []netip.Prefix(nil), []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32")}
	for _, tc := range []struct {
		addr  string
		allow []netip.Prefix
		ok    bool
	}{
		{"127.0.0.1:10250", none, false},
		{"[::1]:80", none, false},
		{"[::ffff:127.0.0.1]:80", none, false},
		{"169.254.169.254:80", none, false},
		{"[fe80::1]:80", none, false},
		{"0.0.0.0:80", none, false},
		{"[::]:80", none, false},
		{"224.0.0.1:80", none, false},
		{"10.0.0.7:443", none, true},
		{"192.0.2.1:443", none, true},
		{"[2001:db8::1]:443", none, true},
		{"169.254.169.254:80", meta, true},
		{"169.254.169.253:80", meta, false},
	} {
		err := addressPolicy(tc.allow)("tcp", tc.addr, nil)
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%s allowing %v: %v, want allowed=%v", tc.addr, tc.allow, err, tc.ok)
		}
	}
}

// Refused fetches say nothing of what the origin sent: no size, no hash.
func TestRefusalsHideContent(t *testing.T) {
	body := origin.Random(64 << 10)
	o := origin.StartHTTP(t, "/blob", body, 0)
	s := openStore(t, t.TempDir(), Options{AllowOrigins: loopback})
	wrong := artifact(o, origin.Random(len(body)+1)) // other size and digest
	_, err := s.Stage(context.Background(), "a", wrong, nil)
	other := artifact(o, origin.Random(len(body))) // same size, other digest
	_, err2 := s.Stage(context.Background(), "a", other, nil)
	sum := digestOf(body)[7:]
	for _, e := range []error{err, err2} {
		if !errors.Is(e, ErrCorrupt) {
			t.Errorf("Stage: %v, want corrupt", e)
			continue
		}
		if msg := e.Error(); strings.Contains(msg, strconv.Itoa(len(body))) || strings.Contains(msg, sum) {
			t.Errorf("the error tells the origin's content: %s", msg)
		}
	}
}
