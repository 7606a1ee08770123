// Package nodeapi is the agent's HTTP API on its node: Prometheus metrics, the kubelet's
// health and readiness probes, and the node's traces for `coldtrace advise --from`. Traces
// hold file paths, URLs and command lines, so their endpoints need a bearer token.
package nodeapi

import (
	"compress/gzip"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/coldtrace/coldtrace/tracestore"
)

// Paths of the API.
const (
	TracesPath  = "/api/v1/traces"
	MetricsPath = "/metrics"
	HealthPath  = "/healthz"
	ReadyPath   = "/readyz"
)

// Options configure the API.
type Options struct {
	Store tracestore.Store
	// TokenFile holds the bearer token of the traces endpoints (a mounted Secret); it is
	// read again when it changes, so a rotated Secret takes effect without a restart.
	// Empty refuses every request to them.
	TokenFile string
	// Metrics are served at /metrics.
	Metrics prometheus.Gatherer
	// Ready says why the agent is not ready yet, or nil once it is.
	Ready func() error
}

// Handler serves the API. It fails when the token file cannot be read, so that a
// missing Secret stops the agent at its start rather than at the first request.
func Handler(opts Options) (http.Handler, error) {
	tok := &tokenFile{path: opts.TokenFile}
	if opts.TokenFile != "" {
		if _, err := tok.get(); err != nil {
			return nil, err
		}
	}
	s := &server{opts: opts, token: tok}
	mux := http.NewServeMux()
	mux.Handle("GET "+MetricsPath, promhttp.HandlerFor(opts.Metrics, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET "+HealthPath, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET "+ReadyPath, s.ready)
	mux.HandleFunc("GET "+TracesPath, s.auth(s.list))
	mux.HandleFunc("GET "+TracesPath+"/{id}", s.auth(s.get))
	return mux, nil
}

type server struct {
	opts  Options
	token *tokenFile
}

func (s *server) ready(w http.ResponseWriter, _ *http.Request) {
	if err := s.opts.Ready(); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ok\n")
}

// auth lets a request through when it carries the token: "Authorization: Bearer TOKEN".
func (s *server) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="coldtrace"`)
		if s.opts.TokenFile == "" {
			http.Error(w, "the traces API is off: the agent was started without --api-token-file", http.StatusUnauthorized)
			return
		}
		want, err := s.token.get()
		if err != nil {
			http.Error(w, "the agent cannot read its token", http.StatusInternalServerError)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		// Hashes of equal length, so that the comparison's time says nothing of the token.
		g, t := sha256.Sum256([]byte(got)), sha256.Sum256(want)
		if !ok || subtle.ConstantTimeCompare(g[:], t[:]) != 1 {
			http.Error(w, "a bearer token is needed (Authorization: Bearer TOKEN)", http.StatusUnauthorized)
			return
		}
		next(w, r)
	}
}

// List is the listing's JSON.
type List struct {
	Traces []tracestore.Entry `json:"traces"`
}

func (s *server) list(w http.ResponseWriter, r *http.Request) {
	f, err := ParseFilter(r.URL.Query(), time.Now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	es, err := s.opts.Store.List(r.Context(), f)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if es == nil {
		es = []tracestore.Entry{} // [] rather than null
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(List{Traces: es})
}

// get sends the trace as stored, gzipped JSON, decompressed for a client that does not
// accept gzip.
func (s *server) get(w http.ResponseWriter, r *http.Request) {
	rc, err := s.opts.Store.Open(r.Context(), r.PathValue("id"))
	if errors.Is(err, tracestore.ErrNotFound) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Add("Vary", "Accept-Encoding")
	var body io.Reader = rc
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		w.Header().Set("Content-Encoding", "gzip")
	} else {
		zr, err := gzip.NewReader(rc)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		body = zr
	}
	io.Copy(w, body)
}

// ParseFilter reads a listing's query: namespace, pod, workload, since and until, times
// in RFC 3339 or as a duration before now ("since=1h").
func ParseFilter(q map[string][]string, now time.Time) (tracestore.Filter, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	for k := range q {
		switch k {
		case "namespace", "pod", "workload", "since", "until":
		default:
			return tracestore.Filter{}, fmt.Errorf("unknown filter %q (namespace, pod, workload, since, until)", k)
		}
	}
	f := tracestore.Filter{Namespace: get("namespace"), Pod: get("pod"), Workload: get("workload")}
	for _, b := range []struct {
		key string
		to  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		v := get(b.key)
		if v == "" {
			continue
		}
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			*b.to = t
		} else if d, err := time.ParseDuration(v); err == nil && d >= 0 {
			*b.to = now.Add(-d)
		} else {
			return f, fmt.Errorf("%s=%q: want an RFC 3339 time (2026-12-01T10:00:00Z) or a duration before now (1h)", b.key, v)
		}
	}
	return f, nil
}

// tokenFile is the token in a file, read again when the file changes (a Secret's update
// swaps the file in place).
type tokenFile struct {
	path string

	mu      sync.Mutex
	modTime time.Time
	size    int64
	val     []byte
}

func (t *tokenFile) get() ([]byte, error) {
	fi, err := os.Stat(t.path)
	if err != nil {
		return nil, fmt.Errorf("API token: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.val != nil && fi.ModTime().Equal(t.modTime) && fi.Size() == t.size {
		return t.val, nil
	}
	b, err := os.ReadFile(t.path)
	if err != nil {
		return nil, fmt.Errorf("API token: %w", err)
	}
	v := []byte(strings.TrimSpace(string(b)))
	if len(v) < 16 {
		return nil, fmt.Errorf("API token in %s: %d characters, want at least 16", t.path, len(v))
	}
	t.val, t.modTime, t.size = v, fi.ModTime(), fi.Size()
	return v, nil
}
