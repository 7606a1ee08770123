package pagecache

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/internal/rate"
	"github.com/coldtrace/coldtrace/manifest"
)

// Options tune Warm.
type Options struct {
	// Limit bounds the bytes per second read; share one across workers for an overall
	// limit. Nil does not limit.
	Limit *rate.Limiter
}

// Result is what Warm did to one file.
type Result struct {
	// Bytes is the number of bytes read into the page cache (ranges past the end of the
	// file are cut there); Cached those found there already, which were not read again.
	Bytes, Cached int64
	Took          time.Duration
}

// chunk is the size of each read, and of the rate limiter's steps.
const chunk = 1 << 20

var bufs = sync.Pool{New: func() any { b := make([]byte, chunk); return &b }}

// Warm reads ranges of f so that their pages are in the page cache when it returns.
//
// It reads with pread into a reused buffer rather than asking the kernel to read ahead:
// readahead(2) and posix_fadvise(WILLNEED) only start I/O and return, so neither the rate
// limit nor the result would say what was read, and the kernel may drop or trim the
// request under memory pressure; pread is synchronous, so the bytes counted are in the
// cache and the limiter meters real I/O. The copy into user space costs CPU time, well below
// that of the disk read itself. POSIX_FADV_RANDOM on f turns off the kernel's readahead
// for this open file, so that exactly the listed pages are read, not the window after them.
//
// A chunk whose pages are all in the page cache already (mincore) is not read again, so
// that warming again what is warm costs little: the agent re-applies its manifests often.
func Warm(ctx context.Context, f *os.File, ranges []manifest.Range, opt Options) (Result, error) {
	start := time.Now()
	var res Result
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM); err != nil {
		return res, fmt.Errorf("warm %s: fadvise: %w", f.Name(), err)
	}
	fi, err := f.Stat()
	if err != nil {
		return res, fmt.Errorf("warm %s: %w", f.Name(), err)
	}
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	buf := *bp
	for _, r := range ranges {
		if r.Off < 0 || r.Len < 0 {
			return res, fmt.Errorf("warm %s: bad range {off %d, len %d}", f.Name(), r.Off, r.Len)
		}
		for off := r.Off; off < r.End() && off < fi.Size(); {
			n := int(min(int64(len(buf)), r.End()-off))
			if cached(f, off, int64(n), fi.Size()) {
				res.Cached += min(int64(n), fi.Size()-off)
				off += int64(n)
				continue
			}
			if err := opt.Limit.Wait(ctx, n); err != nil {
				res.Took = time.Since(start)
				return res, err
			}
			got, err := f.ReadAt(buf[:n], off)
			res.Bytes += int64(got)
			off += int64(got)
			if err == io.EOF {
				break
			}
			if err != nil {
				res.Took = time.Since(start)
				return res, fmt.Errorf("warm %s: %w", f.Name(), err)
			}
		}
	}
	res.Took = time.Since(start)
	return res, nil
}

// cached reports whether every page of [off, off+n) inside the file is in the page cache.
// An error (the file shrank, say) says no: the read that follows finds out.
func cached(f *os.File, off, n, size int64) bool {
	page := int64(os.Getpagesize())
	end := min(off+n, size)
	if off >= end {
		return true
	}
	w := off / page * page
	in, err := residentPages(f, w, (end+page-1)/page*page-w)
	if err != nil {
		return false
	}
	for _, ok := range in {
		if !ok {
			return false
		}
	}
	return true
}

// Resident measures with mincore how many bytes of ranges are in the page cache, of total
// bytes the ranges cover inside the file (ranges past the end of the file are cut there).
// A page counts with the bytes of the ranges that fall in it.
func Resident(f *os.File, ranges []manifest.Range) (resident, total int64, err error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	size := fi.Size()
	page := int64(os.Getpagesize())
	for _, r := range ranges {
		off, end := max(r.Off, 0), min(r.End(), size)
		if off >= end {
			continue
		}
		total += end - off
		// Map in windows so that a huge range needs neither a huge vector nor one mapping.
		const window = 256 << 20
		for w := off / page * page; w < end; w += window {
			wend := min(w+window, (end+page-1)/page*page)
			in, err := residentPages(f, w, wend-w)
			if err != nil {
				return 0, 0, fmt.Errorf("mincore %s: %w", f.Name(), err)
			}
			for i, ok := range in {
				if !ok {
					continue
				}
				p := w + int64(i)*page
				resident += min(p+page, end) - max(p, off)
			}
		}
	}
	return resident, total, nil
}

// residentPages maps [off, off+n) of f (off page-aligned) and returns mincore's answer
// for each page. Mapping a file does not read it, and mincore does not fault pages in.
func residentPages(f *os.File, off, n int64) ([]bool, error) {
	m, err := unix.Mmap(int(f.Fd()), off, int(n), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	defer unix.Munmap(m)
	vec := make([]byte, (n+int64(os.Getpagesize())-1)/int64(os.Getpagesize()))
	// x/sys/unix has no wrapper for mincore(2).
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return nil, errno
	}
	in := make([]bool, len(vec))
	for i, v := range vec {
		in[i] = v&1 != 0
	}
	return in, nil
}
