package tracestore

import (
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coldtrace/coldtrace/trace"
)

// Traces hold file paths, URLs and command lines: only root reads them.
const (
	dirPerm  = 0o700
	filePerm = 0o600
	suffix   = ".json.gz"
)

// Options bound a Dir and name where its metrics go.
type Options struct {
	// MaxBytes bounds the stored traces' total size and MaxAge their age; the oldest are
	// removed first. Zero means no bound.
	MaxBytes int64
	MaxAge   time.Duration
	// Registerer receives the store's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Log receives a line per problem that does not stop the store.
	Log io.Writer
}

// Dir is a Store in a local directory: DIR/<name>.json.gz, directories 0700 and files 0600.
type Dir struct {
	root string
	opts Options
	m    *metrics

	mu     sync.Mutex
	byName map[string]*Entry
	byID   map[string]*Entry
	total  int64
}

var _ Store = (*Dir)(nil)

// metrics count what retention removed and the writes that failed. The store's size and
// count are the metrics package's (coldtrace_trace_store_bytes and _traces, from a walk of
// the directory).
type metrics struct {
	removed *prometheus.CounterVec
	failed  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		removed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coldtrace_trace_store_removed_total",
			Help: "Traces removed by retention, by reason: age or size."}, []string{"reason"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coldtrace_trace_store_write_failures_total",
			Help: "Traces that could not be written, by reason: no_space (the disk or a quota is full) or other."}, []string{"reason"}),
	}
	for _, r := range []string{"age", "size"} {
		m.removed.WithLabelValues(r)
	}
	for _, r := range []string{"no_space", "other"} {
		m.failed.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.removed, m.failed)
	}
	return m
}

// OpenDir opens the store in root, creating it if needed. It indexes the traces already
// there, makes them and their directories root's alone (earlier agents wrote 0644 and
// 0755), removes the temporary files of writes that a crash interrupted, and applies the
// bounds.
func OpenDir(root string, opts Options) (*Dir, error) {
	if opts.MaxBytes < 0 || opts.MaxAge < 0 {
		return nil, fmt.Errorf("trace store %s: negative bounds (%d bytes, %v)", root, opts.MaxBytes, opts.MaxAge)
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if err := os.MkdirAll(root, dirPerm); err != nil {
		return nil, fmt.Errorf("trace store: %w", err)
	}
	d := &Dir{root: root, opts: opts, m: newMetrics(opts.Registerer), byName: map[string]*Entry{}, byID: map[string]*Entry{}}
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.IsDir() {
			return os.Chmod(p, dirPerm)
		}
		rel, _ := filepath.Rel(root, p)
		name, ok := strings.CutSuffix(filepath.ToSlash(rel), suffix)
		switch {
		case strings.HasPrefix(de.Name(), "."):
			return os.Remove(p) // a write that did not finish
		case !ok || !de.Type().IsRegular() || CheckName(name) != nil:
			return nil // not ours
		}
		if err := os.Chmod(p, filePerm); err != nil {
			return err
		}
		e, err := readEntry(p, name)
		if err != nil {
			// Still counted against the bounds, so that it is removed in its turn.
			fmt.Fprintf(d.opts.Log, "coldtrace: trace store: %v\n", err)
		}
		d.add(e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("trace store %s: %w", root, err)
	}
	d.mu.Lock()
	d.prune(time.Now())
	d.mu.Unlock()
	return d, nil
}

// Put writes t atomically to root/name.json.gz, then removes the oldest traces beyond the
// bounds. A full disk fails the write cleanly: nothing partial is left and the store goes on.
func (d *Dir) Put(_ context.Context, name string, t *trace.Trace) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	p := d.path(name)
	err := os.MkdirAll(filepath.Dir(p), dirPerm)
	if err == nil {
		err = trace.WriteFileMode(p, t, filePerm)
	}
	if err != nil {
		reason := "other"
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			reason = "no_space"
		}
		d.m.failed.WithLabelValues(reason).Inc()
		return "", err
	}
	e, err := readEntry(p, name)
	if err != nil {
		return "", err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.opts.MaxBytes > 0 && e.Size > d.opts.MaxBytes {
		// Alone above the bound: the others stay.
		if old := d.byName[name]; old != nil {
			d.forget(old) // its file was replaced
		}
		os.Remove(p)
		d.m.removed.WithLabelValues("size").Inc()
		return "", fmt.Errorf("trace %s: its %d bytes exceed the store's bound of %d", name, e.Size, d.opts.MaxBytes)
	}
	d.add(e)
	d.prune(time.Now())
	return p, nil
}

// List describes the traces that f matches, in the order of their start.
func (d *Dir) List(_ context.Context, f Filter) ([]Entry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.prune(time.Now())
	var out []Entry
	for _, e := range d.byName {
		if e.ID != "" && f.Match(*e) {
			out = append(out, *e)
		}
	}
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(a.Start.Compare(b.Start), strings.Compare(a.Name, b.Name))
	})
	return out, nil
}

// Open opens the stored trace whose ID is id.
func (d *Dir) Open(_ context.Context, id string) (io.ReadCloser, error) {
	d.mu.Lock()
	e := d.byID[id]
	d.mu.Unlock()
	if e == nil {
		return nil, fmt.Errorf("trace %q: %w", id, ErrNotFound)
	}
	f, err := os.Open(d.path(e.Name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("trace %q: %w", id, ErrNotFound) // removed meanwhile
	}
	return f, err
}

// Remove removes the trace stored under name, if any.
func (d *Dir) Remove(name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := os.Remove(d.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if e := d.byName[name]; e != nil {
		d.forget(e)
	}
	return nil
}

func (d *Dir) path(name string) string { return filepath.Join(d.root, filepath.FromSlash(name)+suffix) }

// add indexes e, replacing the entry of the same name; called with d.mu held or before
// the store is shared.
func (d *Dir) add(e *Entry) {
	if old := d.byName[e.Name]; old != nil {
		d.forget(old)
	}
	d.byName[e.Name] = e
	if e.ID != "" {
		d.byID[e.ID] = e
	}
	d.total += e.Size
}

func (d *Dir) forget(e *Entry) {
	delete(d.byName, e.Name)
	if d.byID[e.ID] == e {
		delete(d.byID, e.ID)
	}
	d.total -= e.Size
}

// prune removes the traces older than MaxAge, then the oldest until the total fits
// MaxBytes; called with d.mu held.
func (d *Dir) prune(now time.Time) {
	if d.opts.MaxAge == 0 && (d.opts.MaxBytes == 0 || d.total <= d.opts.MaxBytes) {
		return
	}
	all := make([]*Entry, 0, len(d.byName))
	for _, e := range d.byName {
		all = append(all, e)
	}
	slices.SortFunc(all, func(a, b *Entry) int {
		return cmp.Or(a.Written.Compare(b.Written), strings.Compare(a.Name, b.Name))
	})
	for _, e := range all {
		var reason string
		switch {
		case d.opts.MaxAge > 0 && now.Sub(e.Written) > d.opts.MaxAge:
			reason = "age"
		case d.opts.MaxBytes > 0 && d.total > d.opts.MaxBytes:
			reason = "size"
		default:
			return
		}
		if err := os.Remove(d.path(e.Name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(d.opts.Log, "coldtrace: trace store: %v\n", err)
			continue // counted still: it is still on the disk
		}
		d.forget(e)
		d.m.removed.WithLabelValues(reason).Inc()
	}
}

// readEntry describes the trace file at p from the head of its JSON: the fields an entry
// needs come first in a trace (see trace.Trace), so only the first kilobytes are
// decompressed. A file that cannot be read still gets an entry, without an ID.
func readEntry(p, name string) (*Entry, error) {
	e := &Entry{Name: name}
	f, err := os.Open(p)
	if err != nil {
		return e, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return e, err
	}
	e.Size, e.Written = fi.Size(), fi.ModTime()
	if err := readHead(f, e); err != nil {
		return e, fmt.Errorf("%s: %w", p, err)
	}
	return e, nil
}

func readHead(r io.Reader, e *Entry) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(zr)
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fmt.Errorf("not a trace: %v", cmp.Or(err, errors.New("not a JSON object")))
	}
	var id string
	fields := map[string]any{"id": &id, "workload": &e.Workload, "start": &e.Start,
		"duration_ns": &e.Duration, "outcome": &e.Outcome, "incomplete": &e.Incomplete}
	for len(fields) > 0 && dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		dst, ok := fields[key]
		if !ok {
			dst = new(json.RawMessage)
		}
		if err := dec.Decode(dst); err != nil {
			return fmt.Errorf("field %s: %w", key, err)
		}
		delete(fields, key)
	}
	if id == "" {
		return errors.New("the trace has no id")
	}
	e.ID = id
	return nil
}
