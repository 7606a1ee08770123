package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/manifest"
)

// loopback is the allow-list the tests' origins need: the store refuses loopback by default.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

func digestOf(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }

func artifact(o *origin.HTTP, body []byte) manifest.Artifact {
	return manifest.Artifact{Path: "/models/m.safetensors", Origin: o.URL(), Size: int64(len(body)), Digest: digestOf(body)}
}

func openStore(t testing.TB, root string, opt Options) *Store {
	t.Helper()
	s, err := Open(root, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// blobPath and partialPath are the layout, spelled out independently of the code under test.
func blobPath(root, tenant string, body []byte) string {
	return filepath.Join(root, "tenants", tenant, "sha256", fmt.Sprintf("%x", sha256.Sum256(body)))
}

func partialPath(root, tenant string, body []byte) string {
	return filepath.Join(root, ".partial", tenant, fmt.Sprintf("%x", sha256.Sum256(body)))
}

// writeByte writes b at off in the file at path, in place: what a bad disk or a stray
// writer does to a copy.
func writeByte(t testing.TB, path string, off int64, b byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{b}, off); err != nil {
		t.Fatal(err)
	}
}

func mustStage(t testing.TB, s *Store, tenant string, a manifest.Artifact) Result {
	t.Helper()
	r, err := s.Stage(context.Background(), tenant, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// sameFile checks that the published file holds exactly body and is read-only.
func sameFile(t testing.TB, path string, body []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("%s: %d bytes differ from the origin's %d", path, len(got), len(body))
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o444 {
		t.Errorf("%s: mode %v, want -r--r--r--", path, fi.Mode())
	}
}

func TestValidation(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{AllowOrigins: loopback})
	good := manifest.Artifact{Path: "/m", Origin: "http://127.0.0.1:1/m", Size: 1, Digest: digestOf([]byte("x"))}
	for _, tc := range []struct {
		name   string
		tenant string
		edit   func(*manifest.Artifact)
		want   string
	}{
		{"empty tenant", "", nil, "not a Kubernetes namespace"},
		{"upper case", "Team", nil, "not a Kubernetes namespace"},
		{"dot-dot", "..", nil, "not a Kubernetes namespace"},
		{"slash", "a/b", nil, "not a Kubernetes namespace"},
		{"partial dir", ".partial", nil, "not a Kubernetes namespace"},
		{"leading dash", "-a", nil, "not a Kubernetes namespace"},
		{"64 chars", strings.Repeat("a", 64), nil, "not a Kubernetes namespace"},
		{"no digest", "a", func(a *manifest.Artifact) { a.Digest = "" }, "has no digest"},
		{"upper-case digest", "a", func(a *manifest.Artifact) { a.Digest = strings.ToUpper(a.Digest) }, "not sha256:"},
		{"other algorithm", "a", func(a *manifest.Artifact) { a.Digest = "sha512:" + a.Digest[7:] }, "not sha256:"},
		{"peer address", "a", func(a *manifest.Artifact) { a.Origin = "10.0.0.7:8080" }, "no URL"},
		{"no origin", "a", func(a *manifest.Artifact) { a.Origin = "" }, "no URL"},
		{"file URL", "a", func(a *manifest.Artifact) { a.Origin = "file:///etc/passwd" }, "no URL"},
		{"no host", "a", func(a *manifest.Artifact) { a.Origin = "http:///m" }, "no URL"},
		{"negative size", "a", func(a *manifest.Artifact) { a.Size = -1 }, "needs its size"},
		{"no size", "a", func(a *manifest.Artifact) { a.Size = 0 }, "needs its size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := good
			if tc.edit != nil {
				tc.edit(&a)
			}
			_, err := s.Stage(context.Background(), tc.tenant, a, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Stage: %v, want an error saying %q", err, tc.want)
			}
			if tc.tenant != "a" {
				if _, err := s.Lookup(tc.tenant, a.Digest, -1, false); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Lookup: %v, want an error saying %q", err, tc.want)
				}
			}
		})
	}
	for _, tenant := range []string{"a", "default", "team-1", strings.Repeat("a", 63)} {
		if _, err := s.Dir(tenant); err != nil {
			t.Errorf("Dir(%q): %v", tenant, err)
		}
	}
	// Nothing was created outside the two top directories.
	ents, _ := os.ReadDir(s.root)
	if len(ents) != 2 {
		t.Errorf("root holds %v, want tenants and .partial only", ents)
	}
}

func TestStageThenHit(t *testing.T) {
	body := origin.Random(3<<20 + 17)
	o := origin.StartHTTP(t, "/blob", body, 0)
	root := t.TempDir()
	s := openStore(t, root, Options{AllowOrigins: loopback})
	a := artifact(o, body)

	var last int64
	r, err := s.Stage(context.Background(), "team-a", a, func(done, total int64) {
		if done < last || total != a.Size {
			t.Errorf("progress %d/%d after %d", done, total, last)
		}
		last = done
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Action != Fetched || r.Fetched != a.Size || last != a.Size {
		t.Errorf("first Stage: %+v (progress %d), want fetched %d bytes", r, last, a.Size)
	}
	if got := o.BodyBytes(); got != a.Size {
		t.Errorf("origin sent %d body bytes, want %d", got, a.Size)
	}
	want := blobPath(root, "team-a", body)
	if r.Path != want {
		t.Errorf("path %s, want %s", r.Path, want)
	}
	sameFile(t, want, body)

	r = mustStage(t, s, "team-a", a)
	if r.Action != Hit || r.Fetched != 0 || len(o.Requests()) != 1 {
		t.Errorf("second Stage: %+v after %d requests, want a hit without a request", r, len(o.Requests()))
	}
	p, err := s.Lookup("team-a", a.Digest, a.Size, true)
	if p != want || err != nil {
		t.Errorf("Lookup: %q, %v", p, err)
	}

	// What a pod mounting Dir sees: sha256/<hex>, and nothing of the partial downloads.
	dir, err := s.Dir("team-a")
	if err != nil || dir != filepath.Join(root, "tenants", "team-a") {
		t.Fatalf("Dir: %q, %v", dir, err)
	}
	var seen []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		rel, _ := filepath.Rel(dir, p)
		seen = append(seen, rel)
		return err
	})
	if want := []string{".", "sha256", filepath.Join("sha256", filepath.Base(want))}; fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("the mounted directory holds %v, want %v", seen, want)
	}
	st := s.Stats()
	if st.Hits != 1 || st.Misses != 1 || st.BytesFetched != a.Size || st.Failures != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestCorruptBlobRefetched(t *testing.T) {
	body := origin.Random(1 << 20)
	o := origin.StartHTTP(t, "/blob", body, 0)
	root := t.TempDir()
	s := openStore(t, root, Options{AllowOrigins: loopback})
	a := artifact(o, body)
	mustStage(t, s, "a", a)

	// Flip one byte in place, as a bad disk would.
	p := blobPath(root, "a", body)
	writeByte(t, p, 123456, body[123456]^0xff)

	if _, err := s.Lookup("a", a.Digest, a.Size, false); err != nil {
		t.Errorf("Lookup without verify checks the size only: %v", err)
	}
	if _, err := s.Lookup("a", a.Digest, a.Size, true); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Lookup with verify: %v, want corrupt", err)
	}
	r := mustStage(t, s, "a", a)
	if r.Action != Refetched || r.Fetched != a.Size {
		t.Errorf("Stage: %+v, want refetched", r)
	}
	sameFile(t, p, body)

	// A truncated file is caught by the size alone.
	os.Truncate(p, 1000)
	if _, err := s.Lookup("a", a.Digest, a.Size, false); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Lookup of a truncated file: %v, want corrupt", err)
	}
	if r := mustStage(t, s, "a", a); r.Action != Refetched {
		t.Errorf("Stage: %+v, want refetched", r)
	}
	sameFile(t, p, body)
	if st := s.Stats(); st.Refetches != 2 || st.BytesFetched != 3*a.Size || o.BodyBytes() != 3*a.Size {
		t.Errorf("stats %+v, origin sent %d", st, o.BodyBytes())
	}
}

func TestOriginDown(t *testing.T) {
	body := origin.Random(1 << 20)
	o := origin.StartHTTP(t, "/blob", body, 0)
	root := t.TempDir()
	s := openStore(t, root, Options{AllowOrigins: loopback})
	a := artifact(o, body)
	mustStage(t, s, "a", a)
	o.Close()

	if r := mustStage(t, s, "a", a); r.Action != Hit {
		t.Errorf("with the cache present: %+v, want a hit", r)
	}
	_, err := s.Stage(context.Background(), "b", a, nil)
	if err == nil || !strings.Contains(err.Error(), o.URL()) || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("with the cache absent: %v, want an error naming the origin", err)
	}
	if _, err := os.Lstat(blobPath(root, "b", body)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file was published for b: %v", err)
	}
}

// The origin serves other bytes than the digest names: an error, nothing published, no
// partial file left.
func TestOriginWrongContent(t *testing.T) {
	body := origin.Random(1 << 20)
	o := origin.StartHTTP(t, "/blob", body, 0)
	root := t.TempDir()
	s := openStore(t, root, Options{AllowOrigins: loopback})
	a := artifact(o, body)
	o.SetBody(origin.Random(len(body)))
	_, err := s.Stage(context.Background(), "a", a, nil)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Stage: %v, want corrupt", err)
	}
	for _, p := range []string{blobPath(root, "a", body), partialPath(root, "a", body)} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left: %v", p, err)
		}
	}
	// Wrong length: refused from the headers, before a byte is written.
	o.SetBody(origin.Random(len(body) + 1))
	if _, err := s.Stage(context.Background(), "a", a, nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "the manifest says") {
		t.Fatalf("Stage: %v, want a size mismatch", err)
	}
}

func TestTenantIsolation(t *testing.T) {
	body := origin.Random(1 << 20)
	o := origin.StartHTTP(t, "/blob", body, 0)
	root := t.TempDir()
	s := openStore(t, root, Options{AllowOrigins: loopback})
	a := artifact(o, body)
	mustStage(t, s, "a", a)

	// b knows the digest, and still does not get a's file.
	if _, err := s.Lookup("b", a.Digest, a.Size, false); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup for b: %v, want not found", err)
	}
	o.Close()
	if _, err := s.Stage(context.Background(), "b", a, nil); err == nil {
		t.Error("b staged a's file without the origin")
	}
	entries, _ := os.ReadDir(filepath.Join(root, "tenants", "b", "sha256"))
	if len(entries) != 0 {
		t.Errorf("b's directory holds %v", entries)
	}

	// With the origin, b gets its own copy (no deduplication across tenants).
	o2 := origin.StartHTTP(t, "/blob", body, 0)
	a.Origin = o2.URL()
	if r := mustStage(t, s, "b", a); r.Action != Fetched || o2.BodyBytes() != a.Size {
		t.Errorf("Stage for b: %+v, origin sent %d", r, o2.BodyBytes())
	}
	pa, pb := blobPath(root, "a", body), blobPath(root, "b", body)
	fa, _ := os.Stat(pa)
	fb, _ := os.Stat(pb)
	if os.SameFile(fa, fb) {
		t.Error("a's and b's files are one inode")
	}
	if p, err := s.Lookup("b", a.Digest, a.Size, true); p != pb || err != nil {
		t.Errorf("Lookup for b: %q, %v", p, err)
	}
}

func TestSymlinksRefused(t *testing.T) {
	body := origin.Random(64 << 10)
	o := origin.StartHTTP(t, "/blob", body, 0)
	root := t.TempDir()
	s := openStore(t, root, Options{AllowOrigins: loopback})
	a := artifact(o, body)
	mustStage(t, s, "b", a)
	h := fmt.Sprintf("%x", sha256.Sum256(body))

	// A "secret" outside the store with exactly the artifact's content: a store that
	// followed the link would find it intact.
	secret := filepath.Join(t.TempDir(), "shadow")
	os.WriteFile(secret, body, 0o600)

	for _, tc := range []struct {
		name   string
		link   string // beneath root
		target string
	}{
		{"blob to a file outside", "tenants/a/sha256/" + h, secret},
		{"blob to another tenant's", "tenants/c/sha256/" + h, "../../b/sha256/" + h},
		{"tenant directory to another's", "tenants/d", "b"},
		{"sha256 directory to another's", "tenants/e/sha256", "../b/sha256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			link := filepath.Join(root, tc.link)
			os.MkdirAll(filepath.Dir(link), 0o755)
			if err := os.Symlink(tc.target, link); err != nil {
				t.Fatal(err)
			}
			tenant := strings.Split(tc.link, "/")[1]
			if p, err := s.Lookup(tenant, a.Digest, a.Size, true); !errors.Is(err, ErrUnsafe) {
				t.Errorf("Lookup: %q, %v, want refused", p, err)
			}
			if r, err := s.Stage(context.Background(), tenant, a, nil); !errors.Is(err, ErrUnsafe) {
				t.Errorf("Stage: %+v, %v, want refused", r, err)
			}
			if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Errorf("the link was replaced: %v", err)
			}
		})
	}
	// A partial-download directory planted as a link is refused too.
	os.Symlink(filepath.Join(root, "tenants", "b", "sha256"), filepath.Join(root, ".partial", "f"))
	if _, err := s.Stage(context.Background(), "f", a, nil); !errors.Is(err, ErrUnsafe) {
		t.Errorf("Stage through a linked partial directory: %v, want refused", err)
	}
	if got := o.BodyBytes(); got != a.Size {
		t.Errorf("origin sent %d bytes, want only the first %d", got, a.Size)
	}
	sameFile(t, blobPath(root, "b", body), body)
	if b, _ := os.ReadFile(secret); !bytes.Equal(b, body) {
		t.Error("the file outside the store changed")
	}
}

// Two calls for the same file at once: one fetches, the other waits and finds it.
func TestConcurrentStageFetchesOnce(t *testing.T) {
	body := origin.Random(2 << 20)
	o := origin.StartHTTP(t, "/blob", body, 8<<20)
	s := openStore(t, t.TempDir(), Options{AllowOrigins: loopback})
	a := artifact(o, body)
	results := make(chan Result, 2)
	for range 2 {
		go func() {
			r, err := s.Stage(context.Background(), "a", a, nil)
			if err != nil {
				t.Error(err)
			}
			results <- r
		}()
	}
	got := map[Action]int{}
	for range 2 {
		got[(<-results).Action]++
	}
	if got[Fetched] != 1 || got[Hit] != 1 || o.BodyBytes() != a.Size {
		t.Errorf("actions %v, origin sent %d, want one fetch of %d and one hit", got, o.BodyBytes(), a.Size)
	}
}

type countingLimiter struct{ n atomic.Int64 }

func (l *countingLimiter) Wait(ctx context.Context, n int) error {
	l.n.Add(int64(n))
	return ctx.Err()
}

func TestLimiterSeesEveryByte(t *testing.T) {
	body := origin.Random(1<<20 + 3)
	l := &countingLimiter{}
	s := openStore(t, t.TempDir(), Options{AllowOrigins: loopback, Limiter: l})
	mustStage(t, s, "a", artifact(origin.StartHTTP(t, "/blob", body, 0), body))
	if l.n.Load() != int64(len(body)) {
		t.Errorf("the limiter was asked for %d bytes, want %d", l.n.Load(), len(body))
	}
}

// A manifest whose size is wrong for an intact file (0, or another number) is refused: the
// file is kept, not thrown away and fetched in vain on every apply.
func TestWrongSizeKeepsIntactFile(t *testing.T) {
	body := origin.Random(1 << 20)
	o := origin.StartHTTP(t, "/blob", body, 0)
	root := t.TempDir()
	s := openStore(t, root, Options{AllowOrigins: loopback})
	a := artifact(o, body)
	mustStage(t, s, "a", a)
	p := blobPath(root, "a", body)
	before, _ := os.Stat(p)
	for _, opt := range []Options{{AllowOrigins: loopback}, {AllowOrigins: loopback, Verify: true}} {
		s := openStore(t, root, opt)
		for _, size := range []int64{a.Size + 1, a.Size - 1, 0} {
			wrong := a
			wrong.Size = size
			_, err := s.Stage(context.Background(), "a", wrong, nil)
			if !errors.Is(err, ErrInvalid) || errors.Is(err, ErrCorrupt) {
				t.Errorf("Stage with size %d (verify %v): %v, want the size refused", size, opt.Verify, err)
			}
			if size > 0 {
				if !strings.Contains(err.Error(), "intact") {
					t.Errorf("the error %q does not say the file is intact", err)
				}
				if _, err := s.Lookup("a", a.Digest, size, false); !errors.Is(err, ErrInvalid) {
					t.Errorf("Lookup with size %d: %v, want the size refused", size, err)
				}
			}
		}
	}
	sameFile(t, p, body)
	if after, _ := os.Stat(p); !os.SameFile(before, after) {
		t.Error("the file was replaced")
	}
	if n := len(o.Requests()); n != 1 {
		t.Errorf("the origin got %d requests, want the first only", n)
	}
	// A truncated file with a wrong size is still corrupt, and fetched again.
	os.Truncate(p, 1000)
	if _, err := s.Lookup("a", a.Digest, 999, false); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Lookup of a truncated file: %v, want corrupt", err)
	}
}
