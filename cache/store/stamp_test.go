package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/internal/testenv"
)

// readBy returns the bytes read while f runs.
func readBy(t testing.TB, f func()) int64 {
	t.Helper()
	before := testenv.Rchar(t, 0)
	f()
	return testenv.Rchar(t, 0) - before
}

// little is what a hit on a stamped file may read: its stamp, not its content.
const little = 16 << 10

func TestHitReadsNoContent(t *testing.T) {
	body := origin.Random(8 << 20)
	o := origin.StartHTTP(t, "/blob", body, 0)
	root := t.TempDir()
	s := openStore(t, root, Options{AllowOrigins: loopback})
	a := artifact(o, body)
	mustStage(t, s, "a", a)

	for i := range 3 {
		var r Result
		if n := readBy(t, func() { r = mustStage(t, s, "a", a) }); n > little || r.Action != Hit {
			t.Errorf("hit %d: %+v, read %d bytes, want a hit reading at most %d", i, r, n, little)
		}
	}
	// A verified Lookup trusts the stamp too, and leaves it valid for the next hit.
	if n := readBy(t, func() {
		if _, err := s.Lookup("a", a.Digest, a.Size, true); err != nil {
			t.Error(err)
		}
	}); n > little {
		t.Errorf("Lookup with verify read %d bytes", n)
	}
	if n := readBy(t, func() { mustStage(t, s, "a", a) }); n > little {
		t.Errorf("the hit after a Lookup read %d bytes", n)
	}
	if len(o.Requests()) != 1 {
		t.Errorf("%d requests to the origin, want 1", len(o.Requests()))
	}

	// Another process (a new Store on the root) trusts the stamp as well.
	s2 := openStore(t, root, Options{AllowOrigins: loopback})
	if n := readBy(t, func() { mustStage(t, s2, "a", a) }); n > little {
		t.Errorf("a hit in a new Store read %d bytes", n)
	}

	// Verify mode hashes every hit in full, and a verified Lookup; Lookup without verify
	// checks the size only.
	sv := openStore(t, root, Options{AllowOrigins: loopback, Verify: true})
	for i := range 2 {
		if n := readBy(t, func() { mustStage(t, sv, "a", a) }); n < a.Size {
			t.Errorf("verify mode, hit %d: read %d bytes, want all %d", i, n, a.Size)
		}
	}
	if n := readBy(t, func() { sv.Lookup("a", a.Digest, a.Size, true) }); n < a.Size {
		t.Errorf("verify mode, Lookup with verify: read %d bytes, want all %d", n, a.Size)
	}
	if n := readBy(t, func() { sv.Lookup("a", a.Digest, a.Size, false) }); n > little {
		t.Errorf("verify mode, Lookup without verify: read %d bytes", n)
	}
	// ... and leaves a stamp that the cheap mode trusts.
	if n := readBy(t, func() { mustStage(t, s, "a", a) }); n > little {
		t.Errorf("the hit after verify mode read %d bytes", n)
	}
	if st := s.Stats(); st.Hits != 5 || st.Refetches != 0 {
		t.Errorf("stats %+v", st)
	}
}

// A write in place changes the inode's times: the next hit hashes the file again. Written
// back to the same bytes, the file is intact and becomes trusted again.
func TestStampCatchesWriteInPlace(t *testing.T) {
	body := origin.Random(4 << 20)
	o := origin.StartHTTP(t, "/blob", body, 0)
	root := t.TempDir()
	s := openStore(t, root, Options{AllowOrigins: loopback})
	a := artifact(o, body)
	mustStage(t, s, "a", a)
	p := blobPath(root, "a", body)

	writeByte(t, p, 1<<20, body[1<<20]) // the same byte: the content is intact, the inode changed
	var r Result
	if n := readBy(t, func() { r = mustStage(t, s, "a", a) }); n < a.Size || r.Action != Hit {
		t.Errorf("after a write in place: %+v, read %d bytes, want a hit that hashed all %d", r, n, a.Size)
	}
	if n := readBy(t, func() { r = mustStage(t, s, "a", a) }); n > little || r.Action != Hit {
		t.Errorf("the next hit: %+v, read %d bytes", r, n)
	}

	writeByte(t, p, 3<<20, body[3<<20]^1) // one bit flipped
	if r := mustStage(t, s, "a", a); r.Action != Refetched || r.Fetched != a.Size {
		t.Errorf("after a bit flip: %+v, want refetched", r)
	}
	sameFile(t, p, body)
	if n := readBy(t, func() { r = mustStage(t, s, "a", a) }); n > little || r.Action != Hit {
		t.Errorf("the hit after the refetch: %+v, read %d bytes", r, n)
	}
}

// A corrupt copy is hashed once: found corrupt before the download's lock, it is not read
// again after the lock is taken while its inode shows it unchanged; a copy written since is
// hashed again.
func TestCorruptCopyReadOnce(t *testing.T) {
	body := origin.Random(8 << 20)
	o := origin.StartHTTP(t, "/blob", body, 0)
	root := t.TempDir()
	s := openStore(t, root, Options{AllowOrigins: loopback})
	a := artifact(o, body)
	mustStage(t, s, "a", a)
	p := blobPath(root, "a", body)

	writeByte(t, p, 1<<20, body[1<<20]^1)
	var r Result
	// rchar counts the socket too: the copy hashed once, and the body received once.
	if n := readBy(t, func() { r = mustStage(t, s, "a", a) }); n > 2*a.Size+little || r.Action != Refetched {
		t.Errorf("a corrupt copy: %+v, read %d bytes, want it refetched after reading at most %d", r, n, 2*a.Size+little)
	}
	sameFile(t, p, body)

	blobs, err := openAt(s.dir, blobDir("a"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer blobs.Close()
	h := strings.TrimPrefix(a.Digest, "sha256:")
	var bad stamp
	check := func() (n int64, err error) {
		n = readBy(t, func() { err = s.check("a", blobs, h, a.Size, true, &bad) })
		return n, err
	}
	writeByte(t, p, 2<<20, body[2<<20]^1)
	if n, err := check(); !errors.Is(err, ErrCorrupt) || n < a.Size {
		t.Errorf("first check: %v, read %d bytes, want corrupt after hashing all %d", err, n, a.Size)
	}
	if n, err := check(); !errors.Is(err, ErrCorrupt) || n > little {
		t.Errorf("check of the unchanged copy: %v, read %d bytes, want corrupt without reading it", err, n)
	}
	writeByte(t, p, 2<<20, body[2<<20]) // written back: intact, and its inode changed
	if n, err := check(); err != nil || n < a.Size {
		t.Errorf("check after a write: %v, read %d bytes, want intact after hashing all %d", err, n, a.Size)
	}
}

// A file renamed over the blob is another inode: hashed, found corrupt, fetched again,
// even with the blob's size and times copied onto it.
func TestStampCatchesReplacement(t *testing.T) {
	body := origin.Random(2 << 20)
	o := origin.StartHTTP(t, "/blob", body, 0)
	root := t.TempDir()
	s := openStore(t, root, Options{AllowOrigins: loopback})
	a := artifact(o, body)
	mustStage(t, s, "a", a)
	p := blobPath(root, "a", body)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}

	other := filepath.Join(filepath.Dir(p), "other")
	if err := os.WriteFile(other, origin.Random(len(body)), 0o444); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(other, fi.ModTime(), fi.ModTime())
	if err := os.Rename(other, p); err != nil {
		t.Fatal(err)
	}
	if r := mustStage(t, s, "a", a); r.Action != Refetched || r.Fetched != a.Size {
		t.Errorf("after a rename over the blob: %+v, want refetched", r)
	}
	sameFile(t, p, body)
	if o.BodyBytes() != 2*a.Size {
		t.Errorf("origin sent %d bytes, want %d", o.BodyBytes(), 2*a.Size)
	}
}

// A hard link made elsewhere changes the link count and ctime: the file is hashed again,
// and a write through the other name is caught.
func TestStampCatchesHardLink(t *testing.T) {
	body := origin.Random(2 << 20)
	o := origin.StartHTTP(t, "/blob", body, 0)
	root := t.TempDir()
	s := openStore(t, root, Options{AllowOrigins: loopback})
	a := artifact(o, body)
	mustStage(t, s, "a", a)
	p := blobPath(root, "a", body)

	link := filepath.Join(root, "elsewhere")
	if err := os.Link(p, link); err != nil {
		t.Fatal(err)
	}
	var r Result
	if n := readBy(t, func() { r = mustStage(t, s, "a", a) }); n < a.Size || r.Action != Hit {
		t.Errorf("after a hard link: %+v, read %d bytes, want a hit that hashed all %d", r, n, a.Size)
	}
	f, err := os.OpenFile(link, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{body[0] ^ 0xff}, 0)
	f.Close()
	if r := mustStage(t, s, "a", a); r.Action != Refetched {
		t.Errorf("after a write through the link: %+v, want refetched", r)
	}
	sameFile(t, p, body)
}

// A pod that mounts the tenant's directory finds no stamp there; an evicted or corrupt file
// leaves no stamp behind.
func TestStampPlace(t *testing.T) {
	const mib = 1 << 20
	root := t.TempDir()
	s := openStore(t, root, Options{AllowOrigins: loopback, Quota: 2 * mib})
	bodyA, bodyB := origin.Random(mib), origin.Random(mib+1)
	a := artifact(origin.StartHTTP(t, "/blob", bodyA, 0), bodyA)
	mustStage(t, s, "a", a)
	stampA := partialPath(root, "a", bodyA) + ".stamp.json"
	if _, err := os.Stat(stampA); err != nil {
		t.Fatalf("no stamp: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(root, "tenants", "a", "sha256"))
	if len(ents) != 1 {
		t.Errorf("the tenant's directory holds %v", ents)
	}
	// B does not fit beside A: A is evicted, with its stamp.
	mustStage(t, s, "b", artifact(origin.StartHTTP(t, "/blob", bodyB, 0), bodyB))
	absent(t, blobPath(root, "a", bodyA))
	absent(t, stampA)
}

// BenchmarkStageHit is a hit on a present 64 MiB file: trusted from its stamp, and hashed
// in full in verify mode (from the page cache here; from disk, slower still).
func BenchmarkStageHit(b *testing.B) {
	body := origin.Random(64 << 20)
	root := b.TempDir()
	a := artifact(origin.StartHTTP(b, "/blob", body, 0), body)
	mustStage(b, openStore(b, root, Options{AllowOrigins: loopback}), "a", a)
	for _, bc := range []struct {
		name string
		opt  Options
	}{{"stamp", Options{AllowOrigins: loopback}}, {"verify", Options{AllowOrigins: loopback, Verify: true}}} {
		b.Run(bc.name, func(b *testing.B) {
			s := openStore(b, root, bc.opt)
			before := testenv.Rchar(b, 0)
			for b.Loop() {
				if r := mustStage(b, s, "a", a); r.Action != Hit {
					b.Fatalf("%+v, want a hit", r)
				}
			}
			b.ReportMetric(float64(testenv.Rchar(b, 0)-before)/float64(b.N), "read-B/op")
		})
	}
}
