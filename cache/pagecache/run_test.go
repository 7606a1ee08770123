package pagecache

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/manifest"
)

// Run over host files under a cache root: entries start in Order, files that changed or
// lie outside the root are skipped with the reason, the others end fully resident (by the
// test's own mincore) and nothing else of them is.
func TestRunHostFiles(t *testing.T) {
	a := coldFile(t, 1<<20)
	root := filepath.Dir(a)
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	b := filepath.Join(abs, "b.bin")
	if err := os.WriteFile(b, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	drop(t, b)
	if err := os.Symlink("/etc/passwd", filepath.Join(abs, "link")); err != nil {
		t.Fatal(err)
	}
	hot := []manifest.HotEntry{
		{Path: filepath.Join(abs, "b.bin"), Size: 64 << 10, Ranges: []manifest.Range{{Off: 0, Len: 16 << 10}}, Order: 2},
		{Path: filepath.Join(abs, "weights.bin"), Size: 1 << 20, Ranges: []manifest.Range{{Off: 64 << 10, Len: 128 << 10}}, Order: 0},
		{Path: filepath.Join(abs, "weights.bin"), Size: 1 << 19, Ranges: []manifest.Range{{Off: 0, Len: page}}, Order: 1},
		{Path: "/etc/passwd", Ranges: []manifest.Range{{Off: 0, Len: page}}, Order: 3},
		{Path: filepath.Join(abs, "link"), Ranges: []manifest.Range{{Off: 0, Len: page}}, Order: 4},
		{Path: abs + "/../" + filepath.Base(abs) + "/b.bin", Ranges: []manifest.Range{{Off: 0, Len: page}}, Order: 5},
		{Layer: "sha256:" + strings.Repeat("0", 64), Path: "x", Ranges: []manifest.Range{{Off: 0, Len: page}}, Order: 6},
	}
	rep, err := Run(context.Background(), hot, RunOptions{Workers: 2, CacheRoot: abs})
	if err != nil {
		t.Fatal(err)
	}
	var orders []int
	for i, r := range rep.Entries {
		orders = append(orders, r.Order)
		if i > 0 && r.Started < rep.Entries[i-1].Started {
			t.Errorf("entry %d (order %d) started at %v, before entry %d at %v", i, r.Order, r.Started, i-1, rep.Entries[i-1].Started)
		}
		t.Logf("order %d %s: %d bytes, resident %d/%d, skipped %q", r.Order, r.Path, r.Bytes, r.Resident, r.Total, r.Skipped)
	}
	if want := []int{0, 1, 2, 3, 4, 5, 6}; !slices.Equal(orders, want) {
		t.Fatalf("entries in order %v, want %v", orders, want)
	}
	for slot, i := range map[int]int{0: 1, 2: 0} {
		r := rep.Entries[slot]
		if r.Skipped != "" || r.Fraction() != 1 || r.Bytes != hot[i].Bytes() {
			t.Errorf("entry %d: %+v, want warmed and fully resident", slot, r)
		}
	}
	for i, want := range map[int]string{1: "size 1048576, the manifest says 524288", 3: "not under the cache root", 4: "outside the root", 5: `".." component`, 6: "no image layers"} {
		if !strings.Contains(rep.Entries[i].Skipped, want) {
			t.Errorf("entry %d skipped %q, want it to say %q", i, rep.Entries[i].Skipped, want)
		}
	}
	if rep.Skipped != 5 || rep.Bytes != 144<<10 || rep.Resident != 144<<10 {
		t.Errorf("report: %d skipped, %d bytes, %d resident; want 5, %d, %d", rep.Skipped, rep.Bytes, rep.Resident, 144<<10, 144<<10)
	}
	// Ground truth: the test's own mincore sees exactly the warmed ranges of a.
	for i, in := range pagesIn(t, a) {
		if want := i >= 16 && i < 48; in != want {
			t.Errorf("page %d of %s: resident %v, want %v", i, a, in, want)
		}
	}
}

// A cancelled run stops and says which entries it did not warm: at 1 MiB/s, the first two
// 512 KiB entries are warm by the deadline of 1.2 s and the last ones never start.
func TestRunCancel(t *testing.T) {
	a := coldFile(t, 4<<20)
	abs, _ := filepath.Abs(a)
	var hot []manifest.HotEntry
	for i := range 8 {
		hot = append(hot, manifest.HotEntry{Path: abs, Ranges: []manifest.Range{{Off: int64(i) << 19, Len: 1 << 19}}, Order: i})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel()
	rep, err := Run(ctx, hot, RunOptions{Workers: 1, Rate: 1 << 20, CacheRoot: filepath.Dir(abs)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: %v, want the deadline", err)
	}
	for _, r := range rep.Entries {
		t.Logf("order %d: %d bytes, started %v, skipped %q", r.Order, r.Bytes, r.Started, r.Skipped)
	}
	if rep.Skipped == 0 || rep.Skipped == len(hot) || !strings.HasPrefix(rep.Entries[len(hot)-1].Skipped, "cancelled") {
		t.Fatalf("cancelled run: %d of %d skipped, last %q", rep.Skipped, len(hot), rep.Entries[len(hot)-1].Skipped)
	}
}
