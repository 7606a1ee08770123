package tracestore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// sample is a valid trace of a pod's container; pad random bytes make it incompressible,
// so that its stored size is known within the gzip framing.
func sample(id, ns, pod, image string, start time.Time, pad int) *trace.Trace {
	b := make([]byte, pad) // hex: 2*pad characters that gzip brings back to about pad bytes
	rand.Read(b)
	return &trace.Trace{ID: id, Start: start, Duration: time.Second, Outcome: trace.OutcomeReady,
		Workload: trace.Workload{Image: image, ImageDigest: "sha256:" + strings.Repeat("0", 63) + id[len(id)-1:],
			ContainerID: "c-" + id, Pod: pod, Namespace: ns, Container: "app"},
		Warnings: []string{hex.EncodeToString(b)}}
}

func put(t *testing.T, d *Dir, name string, tr *trace.Trace) string {
	t.Helper()
	p, err := d.Put(context.Background(), name, tr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// onDisk lists the trace files under root, by name, as the directory has them.
func onDisk(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if !de.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	slices.Sort(out)
	return out
}

func TestDirPermissions(t *testing.T) {
	root := filepath.Join(t.TempDir(), "traces")
	// What an earlier agent left: a world-readable directory and trace, and the temporary
	// file of a write that a crash interrupted.
	old := filepath.Join(root, "k8s.io")
	if err := os.MkdirAll(old, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := trace.WriteFile(filepath.Join(old, "old.json.gz"), sample("t-old", "prod", "p0", "img", t0, 100)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(old, ".new.json.gz.123"), []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDir(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	put(t, d, "default/new", sample("t-new", "prod", "p1", "img", t0, 100))

	if got, want := onDisk(t, root), []string{"default/new.json.gz", "k8s.io/old.json.gz"}; !slices.Equal(got, want) {
		t.Errorf("files %q, want %q", got, want)
	}
	filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		fi, _ := de.Info()
		want := fs.FileMode(filePerm)
		if de.IsDir() {
			want = fs.ModeDir | dirPerm
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
		return nil
	})
	for _, id := range []string{"t-old", "t-new"} {
		rc, err := d.Open(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := trace.Read(rc)
		rc.Close()
		if err != nil || tr.ID != id {
			t.Errorf("Open(%s): trace %v, %v", id, tr, err)
		}
	}
	if _, err := d.Open(context.Background(), "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open of an unknown ID: %v, want ErrNotFound", err)
	}
	for _, bad := range []string{"", "/abs", "a/../b", "a//b", "ns/.hidden", "a/"} {
		if _, err := d.Put(context.Background(), bad, sample("t-x", "", "", "", t0, 0)); err == nil {
			t.Errorf("Put(%q) was accepted", bad)
		}
	}
}

// TestDirRetention bounds the store by size, then by age: the oldest go first, the
// metrics count them, and the directory holds exactly what the index says.
func TestDirRetention(t *testing.T) {
	root := t.TempDir()
	reg := prometheus.NewPedanticRegistry()
	// Four traces of about 10 kB each (incompressible): three fit in 35 kB, four do not.
	d, err := OpenDir(root, Options{MaxBytes: 35000, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	for i, n := range []string{"a", "b", "c", "d"} {
		p := put(t, d, "ns/"+n, sample("t-"+n, "prod", "p", "img", t0.Add(time.Duration(i)*time.Minute), 10000))
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() < 10000 || fi.Size() > 11000 {
			t.Fatalf("a padded trace takes %d bytes, want about 10000", fi.Size())
		}
		size = max(size, fi.Size())
		// The next write's mtime must be later: file times move with the kernel's tick.
		os.Chtimes(p, t0, time.Now().Add(time.Duration(10*i-100)*time.Second))
	}
	if got, want := onDisk(t, root), []string{"ns/b.json.gz", "ns/c.json.gz", "ns/d.json.gz"}; !slices.Equal(got, want) {
		t.Errorf("after the size bound: files %q, want %q", got, want)
	}
	if n := testutil.ToFloat64(d.m.removed.WithLabelValues("size")); n != 1 {
		t.Errorf("removed for size: %v, want 1", n)
	}
	if d.total > 35000 || d.total < 3*10000 {
		t.Errorf("store bytes %v, want the three traces' size", d.total)
	}
	if _, err := d.Put(context.Background(), "ns/huge", sample("t-huge", "", "", "", t0, 80000)); err == nil || !strings.Contains(err.Error(), "exceed") {
		t.Errorf("a trace larger than the bound: %v", err)
	}

	if got, want := onDisk(t, root), []string{"ns/b.json.gz", "ns/c.json.gz", "ns/d.json.gz"}; !slices.Equal(got, want) {
		t.Errorf("after a trace above the bound: files %q, want %q", got, want)
	}

	// Age: b was written 90 s "ago", c 80 s, d 70 s. A store bounded to 75 s keeps d only.
	d2, err := OpenDir(root, Options{MaxAge: 75 * time.Second, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := onDisk(t, root), []string{"ns/d.json.gz"}; !slices.Equal(got, want) {
		t.Errorf("after the age bound: files %q, want %q", got, want)
	}
	if n := testutil.ToFloat64(d2.m.removed.WithLabelValues("age")); n != 2 {
		t.Errorf("removed for age: %v, want 2", n)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP coldtrace_trace_store_removed_total Traces removed by retention, by reason: age or size.
# TYPE coldtrace_trace_store_removed_total counter
coldtrace_trace_store_removed_total{reason="age"} 0
coldtrace_trace_store_removed_total{reason="size"} 2
`), "coldtrace_trace_store_removed_total"); err != nil {
		t.Error(err)
	}
}

func TestDirList(t *testing.T) {
	d, err := OpenDir(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	put(t, d, "k8s.io/c3", sample("t3", "prod", "llm-1", "reg/llm:v1", t0.Add(2*time.Hour), 0))
	put(t, d, "k8s.io/c1", sample("t1", "prod", "llm-0", "reg/llm:v1", t0, 0))
	put(t, d, "k8s.io/c2", sample("t2", "dev", "web-0", "reg/web:v2", t0.Add(time.Hour), 0))
	// A file that is not a trace is not listed, and does not stop the store.
	if err := os.WriteFile(filepath.Join(d.root, "k8s.io", "junk.json.gz"), []byte("not gzip"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err = OpenDir(d.root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		f    Filter
		want []string
	}{
		{Filter{}, []string{"t1", "t2", "t3"}},
		{Filter{Namespace: "prod"}, []string{"t1", "t3"}},
		{Filter{Namespace: "prod", Pod: "llm-1"}, []string{"t3"}},
		{Filter{Workload: "reg/web:v2"}, []string{"t2"}},
		{Filter{Workload: "sha256:" + strings.Repeat("0", 63) + "1"}, []string{"t1"}},
		{Filter{Since: t0.Add(time.Hour)}, []string{"t2", "t3"}},
		{Filter{Until: t0.Add(time.Hour)}, []string{"t1"}},
		{Filter{Namespace: "none"}, nil},
	} {
		es, err := d.List(context.Background(), c.f)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range es {
			got = append(got, e.ID)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("List(%+v) = %q, want %q", c.f, got, c.want)
		}
	}
	es, _ := d.List(context.Background(), Filter{Pod: "llm-0"})
	if e := es[0]; e.Name != "k8s.io/c1" || e.Workload.ContainerID != "c-t1" || e.Outcome != trace.OutcomeReady || e.Duration != time.Second || e.Size == 0 {
		t.Errorf("entry %+v", e)
	}
}

// TestDirFullDisk fills a small tmpfs: the write that does not fit fails with ENOSPC,
// counted, leaving no partial file and the store intact; once there is room again the
// next write succeeds.
func TestDirFullDisk(t *testing.T) {
	testenv.RequireRoot(t)
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, 0) })
	reg := prometheus.NewRegistry()
	d, err := OpenDir(filepath.Join(mnt, "traces"), Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	put(t, d, "ns/small", sample("t-small", "", "", "", t0, 1000))
	// What fills the disk is not ours: the store cannot make room by itself.
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 40<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = d.Put(context.Background(), "ns/big", sample("t-big", "", "", "", t0, 40000))
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Put on a full disk: %v, want ENOSPC", err)
	}
	if n := testutil.ToFloat64(d.m.failed.WithLabelValues("no_space")); n != 1 {
		t.Errorf("write failures for no space: %v, want 1", n)
	}
	if got, want := onDisk(t, d.root), []string{"ns/small.json.gz"}; !slices.Equal(got, want) {
		t.Errorf("files after the failed write %q, want %q", got, want)
	}
	if es, _ := d.List(context.Background(), Filter{}); len(es) != 1 || es[0].ID != "t-small" {
		t.Errorf("listing after the failed write: %+v", es)
	}
	os.Remove(filler)
	put(t, d, "ns/big", sample("t-big", "", "", "", t0, 40000))
	if es, _ := d.List(context.Background(), Filter{}); len(es) != 2 {
		t.Errorf("after room was made: %d traces, want 2", len(es))
	}
}
