package nodeapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coldtrace/coldtrace/trace"
	"github.com/coldtrace/coldtrace/tracestore"
)

const token = "s3cr3t-t0ken-0123456789"

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

type fixture struct {
	url, tokenFile string
	ready          error
}

// serve runs the API on loopback over a store with three traces: two of pod llm-0 in
// prod, one of web-0 in dev.
func serve(t *testing.T) *fixture {
	t.Helper()
	reg := prometheus.NewRegistry()
	st, err := tracestore.OpenDir(t.TempDir(), tracestore.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range []trace.Workload{
		{Pod: "llm-0", Namespace: "prod", Image: "reg/llm:v1", ContainerID: "c1"},
		{Pod: "llm-0", Namespace: "prod", Image: "reg/llm:v1", ContainerID: "c2"},
		{Pod: "web-0", Namespace: "dev", Image: "reg/web:v1", ContainerID: "c3"},
	} {
		tr := &trace.Trace{ID: "t" + w.ContainerID[1:], Workload: w, Start: t0.Add(time.Duration(i) * time.Hour),
			Duration: time.Second, Outcome: trace.OutcomeReady, Files: []trace.File{{Path: "/models/m.safetensors", Size: 1 << 30}}}
		if _, err := st.Put(context.Background(), "k8s.io/"+w.ContainerID, tr); err != nil {
			t.Fatal(err)
		}
	}
	f := &fixture{tokenFile: filepath.Join(t.TempDir(), "token"), ready: errors.New("probes not attached yet")}
	if err := os.WriteFile(f.tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := Handler(Options{Store: st, TokenFile: f.tokenFile, Metrics: reg, Ready: func() error { return f.ready }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func get(t *testing.T, u, tok string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	// A transport of its own that does not ask for gzip, to see what a plain client gets.
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAuth(t *testing.T) {
	f := serve(t)
	for _, c := range []struct {
		path, tok string
		want      int
	}{
		{"/api/v1/traces", "", 401},
		{"/api/v1/traces", "wrong-token-0123456789", 401},
		{"/api/v1/traces", token[:len(token)-1], 401},
		{"/api/v1/traces/t1", "", 401},
		{"/api/v1/traces", token, 200},
		{"/api/v1/traces/t1", token, 200},
		{"/api/v1/traces/nope", token, 404},
		{"/api/v1/traces?pod=x&color=red", token, 400},
		{"/api/v1/traces?since=yesterday", token, 400},
		{"/healthz", "", 200},
		{"/metrics", "", 200},
	} {
		if code, body := get(t, f.url+c.path, c.tok); code != c.want {
			t.Errorf("GET %s with token %q: %d (%s), want %d", c.path, c.tok, code, body, c.want)
		}
	}
	// A plain request by hand, without the "Bearer " scheme, is refused too.
	if code, _ := get(t, f.url+"/api/v1/traces", "", "Authorization", token); code != 401 {
		t.Errorf("a token without the Bearer scheme: %d, want 401", code)
	}

	// A rotated Secret: the old token is refused, the new one accepted, without a restart.
	newToken := "rotated-token-9876543210"
	tmp := f.tokenFile + ".new"
	os.WriteFile(tmp, []byte(newToken), 0o600)
	os.Chtimes(tmp, time.Now(), time.Now().Add(time.Minute))
	if err := os.Rename(tmp, f.tokenFile); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, f.url+"/api/v1/traces", token); code != 401 {
		t.Errorf("the old token after rotation: %d, want 401", code)
	}
	if code, _ := get(t, f.url+"/api/v1/traces", newToken); code != 200 {
		t.Errorf("the new token after rotation: %d, want 200", code)
	}
}

func TestReady(t *testing.T) {
	f := serve(t)
	if code, body := get(t, f.url+"/readyz", ""); code != 503 || !strings.Contains(body, "probes not attached") {
		t.Errorf("before ready: %d %q", code, body)
	}
	f.ready = nil
	if code, _ := get(t, f.url+"/readyz", ""); code != 200 {
		t.Errorf("once ready: %d", code)
	}
}

func TestMetrics(t *testing.T) {
	f := serve(t)
	if _, body := get(t, f.url+"/metrics", ""); !strings.Contains(body, `coldtrace_trace_store_write_failures_total{reason="no_space"} 0`) {
		t.Errorf("metrics lack the store's counters:\n%s", body)
	}
}

func TestFetch(t *testing.T) {
	f := serve(t)
	ids := func(u, tok string) ([]string, error) {
		ts, err := Fetch(context.Background(), http.DefaultClient, u, tok)
		var out []string
		for _, tr := range ts {
			if len(tr.Files) != 1 || tr.Files[0].Size != 1<<30 {
				t.Errorf("trace %s came back without its file: %+v", tr.ID, tr.Files)
			}
			out = append(out, tr.ID)
		}
		return out, err
	}
	since := url.QueryEscape(t0.Add(30 * time.Minute).Format(time.RFC3339))
	for _, c := range []struct {
		u    string
		want []string
	}{
		{f.url, []string{"t1", "t2", "t3"}},
		{f.url + "/", []string{"t1", "t2", "t3"}},
		{f.url + "/?namespace=prod&pod=llm-0", []string{"t1", "t2"}},
		{f.url + "/api/v1/traces?workload=reg/web:v1", []string{"t3"}},
		{f.url + "/?namespace=prod&since=" + since, []string{"t2"}},
		{f.url + "/?until=" + since, []string{"t1"}},
		{f.url + "/api/v1/traces/t2", []string{"t2"}},
		{f.url + "/?pod=none", nil},
	} {
		got, err := ids(c.u, token)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("Fetch(%s) = %q, %v; want %q", c.u, got, err, c.want)
		}
	}
	for _, c := range []struct{ u, tok, want string }{
		{f.url, "wrong-token-0123456789", "401 Unauthorized: a bearer token is needed"},
		{f.url + "/api/v1/traces/nope", token, "404 Not Found"},
		{f.url + "/somewhere", token, "not the address of an agent"},
		{"ftp://node/", token, "want an http:// or https:// URL"},
	} {
		if _, err := ids(c.u, c.tok); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Fetch(%s): %v, want %q", c.u, err, c.want)
		}
	}
}

// TestGetEncoding: the stored gzip goes out as is to a client that accepts it, and
// decompressed to one that does not; both decode to the same trace.
func TestGetEncoding(t *testing.T) {
	f := serve(t)
	for _, enc := range []string{"", "gzip"} {
		code, body := get(t, f.url+"/api/v1/traces/t3", token, "Accept-Encoding", enc)
		tr, err := trace.Read(strings.NewReader(body))
		if code != 200 || err != nil || tr.Workload.Pod != "web-0" {
			t.Errorf("Accept-Encoding %q: %d, %v, %+v", enc, code, err, tr)
		}
		if gz := strings.HasPrefix(body, "\x1f\x8b"); gz != (enc == "gzip") {
			t.Errorf("Accept-Encoding %q: gzipped body %v", enc, gz)
		}
	}
}

func TestHandlerNeedsItsToken(t *testing.T) {
	for _, c := range []struct{ content, want string }{
		{"", "no such file"},
		{"short", "want at least 16"},
	} {
		p := filepath.Join(t.TempDir(), "token")
		if c.content != "" {
			os.WriteFile(p, []byte(c.content), 0o600)
		}
		if _, err := Handler(Options{TokenFile: p}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("token file %q: %v, want %q", c.content, err, c.want)
		}
	}
	// Without a token file the traces API is closed, and says how to open it.
	h, err := Handler(Options{Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	if code, body := get(t, srv.URL+"/api/v1/traces", "anything"); code != 401 || !strings.Contains(body, "--api-token-file") {
		t.Errorf("without a token file: %d %q", code, body)
	}
}
