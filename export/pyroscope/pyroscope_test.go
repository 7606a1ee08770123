package pyroscope

import (
	"bytes"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// upload is one /ingest request as Pyroscope's handler reads it: the query's name (the
// application name and its labels) and the multipart form's "profile" field.
type upload struct {
	name    string
	profile *profile.Profile
	err     error
}

// startIngest receives /ingest uploads the way Pyroscope's ingest handler does for
// multipart/form-data bodies (pkg/og/convert/pprof: the form's "profile" field holds the
// pprof bytes), and parses the profile with the pprof library.
func startIngest(t *testing.T) (string, <-chan upload) {
	got := make(chan upload, 100)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := upload{name: r.URL.Query().Get("name")}
		defer func() { got <- u }()
		if r.URL.Path != "/ingest" {
			u.err = &net.AddrError{Err: "path " + r.URL.Path}
			http.NotFound(w, r)
			return
		}
		_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil {
			u.err = err
			return
		}
		form, err := multipart.NewReader(r.Body, params["boundary"]).ReadForm(32 << 20)
		if err != nil {
			u.err = err
			return
		}
		defer form.RemoveAll()
		fh := form.File["profile"]
		if len(fh) != 1 {
			u.err = &net.AddrError{Err: "no profile field"}
			return
		}
		f, err := fh[0].Open()
		if err != nil {
			u.err = err
			return
		}
		defer f.Close()
		var buf bytes.Buffer
		buf.ReadFrom(f)
		u.profile, u.err = profile.ParseData(buf.Bytes())
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String(), got
}

// The agent profiles itself with pyroscope-go: its CPU profile arrives at /ingest under
// the application coldtrace-agent with the node's label, and parses.
func TestSelf(t *testing.T) {
	url, got := startIngest(t)
	prof, err := Self(url, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer prof.Stop()
	seen := map[string]bool{}
	for deadline := time.After(time.Minute); !seen["cpu"]; {
		select {
		case u := <-got:
			if u.err != nil {
				t.Fatalf("upload %q: %v", u.name, u.err)
			}
			// Pyroscope names the profile type after the pprof's sample types.
			app, labels, _ := strings.Cut(u.name, "{")
			if app != SelfName || !strings.Contains(labels, "node=") {
				t.Errorf("upload named %q, want %s{node=...}", u.name, SelfName)
			}
			for _, st := range u.profile.SampleType {
				seen[st.Type] = true
				if st.Type == "cpu" && st.Unit != "nanoseconds" {
					t.Errorf("cpu sample type in %s", st.Unit)
				}
			}
		case <-deadline:
			t.Fatalf("no CPU profile of the agent within a minute; got %v", seen)
		}
	}
	t.Logf("sample types uploaded: %v", seen)
}

// Bad URLs are refused with a message that says what is wanted.
func TestBadURL(t *testing.T) {
	for _, u := range []string{"", "localhost:4040", "ftp://host", "http://"} {
		if _, err := New(u); err == nil || !strings.Contains(err.Error(), "want http://HOST:PORT") {
			t.Errorf("New(%q): %v", u, err)
		}
	}
}
