package recorder

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

// TestRecordDownload records curl downloading a file over HTTP/1.1 (send(2) for the
// request, write(2) for the file): the trace names the file it wrote, every byte, the
// sha256 of what the origin served and the URL; a small file gets its bytes counted and
// no digest.
func TestRecordDownload(t *testing.T) {
	testenv.RequireBPF(t)
	curl := testenv.RequireBinary(t, "curl")
	shard := origin.StartHTTP(t, "/org/model/resolve/main/model.bin", origin.Random(3<<20+123), 0)
	dir := t.TempDir()
	dst := filepath.Join(dir, "model.bin")
	tr, err := Record(context.Background(), Options{
		Command: []string{curl, "-sf", "-o", dst, "-D", filepath.Join(dir, "headers.txt"), shard.URL()},
		Timeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Outcome != trace.OutcomeExited || tr.Error != "" {
		t.Fatalf("outcome %s (%s)", tr.Outcome, tr.Error)
	}
	st, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	f := fileByName(t, tr, dst)
	if f.WrittenBytes != st.Size() || st.Size() != shard.Size() || f.Size != st.Size() || f.Digest != shard.Digest() || f.Origin != shard.URL() {
		t.Errorf("download: wrote %d bytes, size %d, digest %s, origin %s; want %d bytes (on disk %d), %s, %s",
			f.WrittenBytes, f.Size, f.Digest, f.Origin, shard.Size(), st.Size(), shard.Digest(), shard.URL())
	}
	hdr := fileByName(t, tr, filepath.Join(dir, "headers.txt"))
	if st, err := os.Stat(hdr.Path); err != nil || hdr.WrittenBytes != st.Size() || hdr.Digest != "" {
		t.Errorf("curl's header dump: wrote %d bytes (%v), digest %q; want all of it and no digest", hdr.WrittenBytes, err, hdr.Digest)
	}
	var urls []string
	for _, c := range tr.Conns {
		urls = append(urls, c.URL)
	}
	if len(urls) != 1 || urls[0] != shard.URL() {
		t.Errorf("connection URLs %q, want [%s]", urls, shard.URL())
	}
}
