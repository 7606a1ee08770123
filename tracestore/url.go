package tracestore

import (
	"cmp"
	"context"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	"github.com/coldtrace/coldtrace/trace"
)

// IsURL says whether s names a store (file://DIR or s3://BUCKET/PREFIX) rather than a file.
func IsURL(s string) bool { return strings.HasPrefix(s, "file://") || strings.HasPrefix(s, "s3://") }

// Each reads the traces in the store at url that f matches, one at a time: memory holds
// one trace whatever their number. A file:// store is read in the order of the traces'
// start, a bucket in the order of its keys (by workload, then start).
func Each(ctx context.Context, url string, f Filter, fn func(*trace.Trace) error) error {
	if dir, ok := strings.CutPrefix(url, "file://"); ok {
		return eachFile(ctx, dir, f, fn)
	}
	b, err := OpenBucket(ctx, url, "")
	if err != nil {
		return err
	}
	return b.Each(ctx, f, fn)
}

// eachFile reads the traces under dir without opening it as a Dir, which would tidy it
// (permissions, unfinished writes) under a running agent.
func eachFile(ctx context.Context, dir string, f Filter, fn func(*trace.Trace) error) error {
	var es []*Entry
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() || strings.HasPrefix(de.Name(), ".") || !strings.HasSuffix(p, suffix) {
			return err
		}
		e, err := readEntry(p, p)
		if err != nil {
			return err
		}
		if f.Match(*e) {
			es = append(es, e)
		}
		return ctx.Err()
	})
	if err != nil {
		return err
	}
	slices.SortFunc(es, func(a, b *Entry) int { return cmp.Or(a.Start.Compare(b.Start), strings.Compare(a.Name, b.Name)) })
	for _, e := range es {
		t, err := trace.ReadFile(e.Name)
		if err != nil {
			return err
		}
		if err := fn(t); err != nil {
			return err
		}
	}
	return nil
}
