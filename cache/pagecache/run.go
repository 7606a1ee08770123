package pagecache

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coldtrace/coldtrace/internal/rate"
	"github.com/coldtrace/coldtrace/manifest"
)

// RunOptions tune Run.
type RunOptions struct {
	// Workers is the number of files warmed at once (default 4).
	Workers int
	// Rate bounds the bytes per second read by all workers together; 0 does not limit.
	Rate int64
	// LayerDir returns the directory of an image layer by compressed digest
	// (Layers.Dir); entries with a layer are skipped without it.
	LayerDir func(layer string) (string, error)
	// CacheRoot is the only directory whose files entries without a layer (host paths)
	// may name; they are skipped without it.
	CacheRoot string
	// Progress, when set, is told the bytes of the ranges done so far (read, or found in
	// the page cache) after each entry, from the workers.
	Progress func(done int64)
}

// EntryResult is what Run did with one hot-set entry.
type EntryResult struct {
	Layer string
	Path  string
	Order int
	// File is the path of the file warmed on this node.
	File string
	// Bytes is the number of bytes read into the page cache; Cached those that were in it
	// already and were not read.
	Bytes, Cached int64
	// Resident and Total are mincore's count after warming: bytes of the ranges in the
	// page cache, of the bytes they cover.
	Resident, Total int64
	// Skipped says why the entry was not warmed; empty when it was. Err is the error
	// behind it: errors.Is(Err, ErrRefused) or ErrChanged tells a refusal.
	Skipped string
	Err     error
	// Started is when the entry started, since the start of Run; Took is how long it took.
	Started, Took time.Duration
}

// Fraction is the resident share of the entry's ranges after warming.
func (r EntryResult) Fraction() float64 {
	if r.Total == 0 {
		return 0
	}
	return float64(r.Resident) / float64(r.Total)
}

// Report sums up a Run.
type Report struct {
	// Entries are in the order of the hot set (by Order).
	Entries []EntryResult
	// Bytes, Resident and Total add up the warmed entries.
	Bytes, Resident, Total int64
	Skipped                int
}

// Run warms the hot set: entries start in first-access order (by Order, earliest first)
// on opt.Workers workers, under one rate limit for all. An entry that cannot be resolved,
// is refused (see OpenBeneath), or whose file's size differs from the manifest's is
// skipped with the reason; the others are warmed and measured. When ctx ends, Run stops
// and returns the report so far (entries not started are skipped as cancelled) with
// ctx's error.
func Run(ctx context.Context, hot []manifest.HotEntry, opt RunOptions) (*Report, error) {
	start := time.Now()
	workers := opt.Workers
	if workers <= 0 {
		workers = 4
	}
	order := make([]int, len(hot))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return hot[order[a]].Order < hot[order[b]].Order })

	rep := &Report{Entries: make([]EntryResult, len(hot))}
	wopt := Options{Limit: rate.New(opt.Rate)}
	type task struct {
		slot  int
		began time.Duration // when it was handed out: in order, unlike the workers' clocks
	}
	next := make(chan task)
	var wg sync.WaitGroup
	var done atomic.Int64
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range next {
				r := warmEntry(ctx, hot[order[k.slot]], opt, wopt)
				r.Started = k.began
				rep.Entries[k.slot] = r
				if n := done.Add(r.Bytes + r.Cached); opt.Progress != nil {
					opt.Progress(n)
				}
			}
		}()
	}
	// An unbuffered channel hands out entries strictly in order: entry k starts only
	// after entries 0..k-1 have started.
	sent := 0
	for ; sent < len(order); sent++ {
		select {
		case next <- task{sent, time.Since(start)}:
			continue
		case <-ctx.Done():
		}
		break
	}
	close(next)
	wg.Wait()
	for slot := sent; slot < len(order); slot++ {
		e := hot[order[slot]]
		err := fmt.Errorf("cancelled: %w", context.Cause(ctx))
		rep.Entries[slot] = EntryResult{Layer: e.Layer, Path: e.Path, Order: e.Order, Skipped: err.Error(), Err: err}
	}
	for _, r := range rep.Entries {
		if r.Skipped != "" {
			rep.Skipped++
			continue
		}
		rep.Bytes += r.Bytes
		rep.Resident += r.Resident
		rep.Total += r.Total
	}
	return rep, ctx.Err()
}

func warmEntry(ctx context.Context, e manifest.HotEntry, opt RunOptions, wopt Options) EntryResult {
	start := time.Now()
	r := EntryResult{Layer: e.Layer, Path: e.Path, Order: e.Order}
	skip := func(format string, a ...any) EntryResult {
		r.Err = fmt.Errorf(format, a...)
		r.Skipped = r.Err.Error()
		r.Took = time.Since(start)
		return r
	}
	if ctx.Err() != nil {
		return skip("cancelled: %w", context.Cause(ctx))
	}
	root, rel, err := locate(e, opt)
	if err != nil {
		return skip("%w", err)
	}
	f, err := OpenBeneath(root, rel)
	if err != nil {
		return skip("%w", err)
	}
	defer f.Close()
	r.File = f.Name()
	fi, err := f.Stat()
	if err != nil {
		return skip("%w", err)
	}
	if e.Size > 0 && fi.Size() != e.Size {
		return skip("%s: %w: size %d, the manifest says %d", f.Name(), ErrChanged, fi.Size(), e.Size)
	}
	w, err := Warm(ctx, f, e.Ranges, wopt)
	r.Bytes, r.Cached = w.Bytes, w.Cached
	if err != nil {
		if errors.Is(err, ctx.Err()) {
			return skip("cancelled after %d bytes: %w", w.Bytes, context.Cause(ctx))
		}
		return skip("%w", err)
	}
	if r.Resident, r.Total, err = Resident(f, e.Ranges); err != nil {
		return skip("%w", err)
	}
	r.Took = time.Since(start)
	return r
}

// locate returns the root directory and the path beneath it of an entry's file.
func locate(e manifest.HotEntry, opt RunOptions) (root, rel string, err error) {
	if e.Layer != "" {
		if opt.LayerDir == nil {
			return "", "", fmt.Errorf("layer %s: no image layers to look in", e.Layer)
		}
		root, err := opt.LayerDir(e.Layer)
		return root, e.Path, err
	}
	if manifest.HasDotDot(e.Path) {
		return "", "", fmt.Errorf("host file %s: %w: \"..\" component", e.Path, ErrRefused)
	}
	if opt.CacheRoot == "" {
		return "", "", fmt.Errorf("host file %s: %w: no cache root to look in", e.Path, ErrRefused)
	}
	rel, err = filepath.Rel(opt.CacheRoot, e.Path)
	if err != nil || !filepath.IsAbs(e.Path) || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", "", fmt.Errorf("host file %s: %w: not under the cache root %s", e.Path, ErrRefused, opt.CacheRoot)
	}
	return opt.CacheRoot, rel, nil
}
