package pagecache

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/internal/rate"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/manifest"
)

const page = manifest.PageSize

// coldFile writes size random bytes to a new file on a disk-backed file system, syncs it
// and drops its pages from the page cache.
func coldFile(t testing.TB, size int64) string {
	t.Helper()
	testenv.Require(t, fmt.Sprintf("%d-byte pages", page), os.Getpagesize() == page, fmt.Sprintf("the page size is %d", os.Getpagesize()))
	// t.TempDir may be on tmpfs, whose pages cannot be dropped; the package directory is on disk.
	dir, err := os.MkdirTemp(".", "cold-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, "weights.bin")
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	drop(t, p)
	return p
}

// drop syncs p and evicts its pages.
func drop(t testing.TB, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	onTmpfs := unix.Fstatfs(int(f.Fd()), &st) == nil && st.Type == unix.TMPFS_MAGIC
	testenv.Require(t, "a disk-backed file system for the test files", !onTmpfs, "they are on tmpfs, whose pages cannot be dropped")
}

// pagesIn is the test's own mincore over a separate mapping of the whole file: one bool a page.
func pagesIn(t testing.TB, p string) []bool {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+page-1)/page)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	in := make([]bool, len(vec))
	for i, v := range vec {
		in[i] = v&1 != 0
	}
	return in
}

// vmtouchPages asks vmtouch, when installed, how many pages of p are resident; -1 without it.
func vmtouchPages(t testing.TB, p string) int {
	t.Helper()
	out, err := exec.Command("vmtouch", p).CombinedOutput()
	if err != nil {
		return -1
	}
	m := regexp.MustCompile(`Resident Pages: (\d+)/`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("vmtouch output not understood:\n%s", out)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

func inRanges(off int64, rs []manifest.Range) bool {
	for _, r := range rs {
		if off >= r.Off && off < r.End() {
			return true
		}
	}
	return false
}

// Warm brings exactly the listed pages into the page cache: before, none of the file is
// resident; after, every page of the ranges is and no page outside them is, by the test's
// own mincore and by vmtouch.
func TestWarmExactRanges(t *testing.T) {
	const size = 16 << 20
	p := coldFile(t, size)
	ranges := []manifest.Range{{Off: 0, Len: 3 * page}, {Off: 1 << 20, Len: 2<<20 + 5*page}, {Off: 9 << 20, Len: page}, {Off: size - 2*page, Len: 2 * page}}
	var want int64
	for _, r := range ranges {
		want += r.Len
	}
	for i, in := range pagesIn(t, p) {
		if in {
			t.Fatalf("page %d resident after the drop", i)
		}
	}

	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res0, total, err := Resident(f, ranges)
	if err != nil {
		t.Fatal(err)
	}
	if res0 != 0 || total != want {
		t.Fatalf("Resident before: %d of %d, want 0 of %d", res0, total, want)
	}
	r, err := Warm(context.Background(), f, ranges, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Bytes != want {
		t.Errorf("Warm read %d bytes, want %d", r.Bytes, want)
	}
	res1, total, err := Resident(f, ranges)
	if err != nil {
		t.Fatal(err)
	}
	if res1 != want || total != want {
		t.Errorf("Resident after: %d of %d, want %d of %d", res1, total, want, want)
	}

	resident, outside := 0, 0
	for i, in := range pagesIn(t, p) {
		switch {
		case inRanges(int64(i)*page, ranges) && !in:
			t.Errorf("page %d of a range is not resident", i)
		case !inRanges(int64(i)*page, ranges) && in:
			outside++
		}
		if in {
			resident++
		}
	}
	if outside > 0 {
		t.Errorf("%d pages outside the ranges are resident", outside)
	}
	if n := vmtouchPages(t, p); n >= 0 && n != int(want/page) {
		t.Errorf("vmtouch: %d pages resident, want %d", n, want/page)
	} else {
		t.Logf("resident pages: mincore %d, vmtouch %d, listed %d of %d; warmed in %v", resident, n, want/page, size/page, r.Took)
	}
	// Warming again reads nothing: every page is there. rchar counts what the process read.
	before := testenv.Rchar(t, 0)
	again, err := Warm(context.Background(), f, ranges, Options{})
	if read := testenv.Rchar(t, 0) - before; err != nil || again.Bytes != 0 || again.Cached != want || read >= page {
		t.Errorf("warm again: %+v, %v, read %d bytes; want nothing read (but /proc/self/io itself) and %d found cached", again, err, read, want)
	}
}

// Ranges past the end of the file are cut at the end; a bad range is an error.
func TestWarmPastEnd(t *testing.T) {
	p := coldFile(t, 5*page)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ranges := []manifest.Range{{Off: 3 * page, Len: 8 * page}, {Off: 100 * page, Len: page}}
	r, err := Warm(context.Background(), f, ranges, Options{})
	if err != nil || r.Bytes != 2*page {
		t.Fatalf("Warm = %d bytes, %v; want %d", r.Bytes, err, 2*page)
	}
	res, total, err := Resident(f, ranges)
	if err != nil || res != 2*page || total != 2*page {
		t.Fatalf("Resident = %d of %d, %v; want %d of %d", res, total, err, 2*page, 2*page)
	}
	if _, err := Warm(context.Background(), f, []manifest.Range{{Off: -page, Len: page}}, Options{}); err == nil {
		t.Fatal("a negative offset was accepted")
	}
}

// The rate limit holds: 4 MiB at 8 MiB/s takes about half a second (wall clock), and a
// cancelled context stops the warm.
func TestWarmRate(t *testing.T) {
	p := coldFile(t, 4<<20)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	all := []manifest.Range{{Off: 0, Len: 4 << 20}}
	start := time.Now()
	r, err := Warm(context.Background(), f, all, Options{Limit: rate.New(8 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	if el < 400*time.Millisecond {
		t.Errorf("4 MiB at 8 MiB/s took %v, want at least 0.4 s", el)
	}
	t.Logf("4 MiB at 8 MiB/s: %v (%.1f MiB/s)", el, float64(r.Bytes)/el.Seconds()/(1<<20))

	drop(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	r, err = Warm(ctx, f, all, Options{Limit: rate.New(1 << 20)})
	if err == nil || r.Bytes >= 4<<20 {
		t.Fatalf("cancelled warm: %d bytes, %v; want an error before the end", r.Bytes, err)
	}
}
