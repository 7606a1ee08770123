package store

import (
	"os"
	"testing"

	"github.com/coldtrace/coldtrace/cache/pagecache"
	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/manifest"
)

// TestStagedCopyStaysResident: the download writes the artifact through the page cache
// and only fsyncs it (no O_DIRECT, no FADV_DONTNEED), so right after Stage every page of
// the published copy is in the page cache, as mincore says, and warming it after staging
// reads nothing. Warm runs that read back part of a shard they had just staged (0–83 MiB
// of 192 MiB on a busy machine) saw pages reclaimed by memory pressure or a concurrent
// drop_caches between the two steps, which warming then reads again, as it should.
func TestStagedCopyStaysResident(t *testing.T) {
	body := origin.Random(32 << 20)
	o := origin.StartHTTP(t, "/blob", body, 0)
	root := t.TempDir()
	s := openStore(t, root, Options{AllowOrigins: loopback})
	r := mustStage(t, s, "a", artifact(o, body))
	f, err := os.Open(r.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	resident, total, err := pagecache.Resident(f, []manifest.Range{{Off: 0, Len: int64(len(body))}})
	if err != nil {
		t.Fatal(err)
	}
	missing := total - resident
	if missing > 0 {
		t.Errorf("%d of %d bytes of the copy just staged are not in the page cache", missing, total)
	}
}
