package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/manifest"
)

// diskBytes sums the sizes of the regular files under root: what the quota bounds.
func diskBytes(t testing.TB, root string) int64 {
	t.Helper()
	var n int64
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && !strings.HasSuffix(p, ".json") {
			fi, _ := d.Info()
			n += fi.Size()
		}
		return err
	})
	return n
}

func TestQuotaEvictsLeastRecentlyUsed(t *testing.T) {
	const mib = 1 << 20
	root := t.TempDir()
	s := openStore(t, root, Options{AllowOrigins: loopback, Quota: 3 * mib})
	stage := func(tenant string) (manifest.Artifact, []byte) {
		body := origin.Random(mib)
		a := artifact(origin.StartHTTP(t, "/blob", body, 0), body)
		mustStage(t, s, tenant, a)
		return a, body
	}
	a, bodyA := stage("a")
	_, bodyB := stage("b")
	_, bodyC := stage("a")
	if _, err := s.Lookup("a", a.Digest, a.Size, false); err != nil { // A is now used after B and C
		t.Fatal(err)
	}
	_, bodyD := stage("b")
	absent(t, blobPath(root, "b", bodyB))
	for _, p := range []string{blobPath(root, "a", bodyA), blobPath(root, "a", bodyC), blobPath(root, "b", bodyD)} {
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
	if got := diskBytes(t, root); got > 3*mib {
		t.Errorf("%d bytes on disk, over the quota", got)
	}
	if st := s.Stats(); st.Evictions != 1 || st.EvictedBytes != mib {
		t.Errorf("stats %+v, want one eviction of %d bytes", st, mib)
	}

	big := origin.Random(4 * mib)
	_, err := s.Stage(context.Background(), "a", artifact(origin.StartHTTP(t, "/blob", big, 0), big), nil)
	if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "more than the whole quota") {
		t.Errorf("Stage of a file larger than the quota: %v", err)
	}
	if st := s.Stats(); st.Evictions != 1 {
		t.Errorf("a refused file evicted others: %+v", st)
	}
}

// A download in flight holds its quota: another Stage cannot take it, and cannot evict
// the partial file.
func TestQuotaKeepsDownloadInFlight(t *testing.T) {
	const mib = 1 << 20
	root := t.TempDir()
	s := openStore(t, root, Options{AllowOrigins: loopback, Quota: 2 * mib})
	slow := origin.Random(2 * mib)
	so := origin.StartHTTP(t, "/blob", slow, 4*mib)
	started := make(chan struct{})
	done := make(chan error)
	go func() {
		var once bool
		_, err := s.Stage(context.Background(), "a", artifact(so, slow), func(int64, int64) {
			if !once {
				once = true
				close(started)
			}
		})
		done <- err
	}()
	<-started
	other := origin.Random(mib)
	_, err := s.Stage(context.Background(), "b", artifact(origin.StartHTTP(t, "/blob", other, 0), other), nil)
	if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "quota full") {
		t.Errorf("Stage beside a download holding the whole quota: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sameFile(t, blobPath(root, "a", slow), slow)
	absent(t, blobPath(root, "b", other))
}

// A full disk while staging: the partial file is removed, nothing is published, the error
// says so, and the next (smaller) file stages fine.
func TestDiskFull(t *testing.T) {
	testenv.RequireRoot(t)
	const mib = 1 << 20
	root := t.TempDir()
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "size=8m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
	s := openStore(t, root, Options{AllowOrigins: loopback})

	big := origin.Random(12 * mib)
	a := artifact(origin.StartHTTP(t, "/blob", big, 0), big)
	_, err := s.Stage(context.Background(), "a", a, nil)
	if !errors.Is(err, ErrFull) || !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("Stage: %v, want a disk-full error", err)
	}
	for _, want := range []string{"disk is full", partialPath(root, "a", big), "of " + strconv.Itoa(len(big)) + " bytes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error %q does not say %q", err, want)
		}
	}
	t.Log(err)
	absent(t, blobPath(root, "a", big))
	absent(t, partialPath(root, "a", big))
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		t.Fatal(err)
	}
	if used := (st.Blocks - st.Bfree) * uint64(st.Bsize); used > 64<<10 {
		t.Errorf("%d bytes of the tmpfs still used", used)
	}

	small := origin.Random(2 * mib)
	r := mustStage(t, s, "a", artifact(origin.StartHTTP(t, "/blob", small, 0), small))
	sameFile(t, r.Path, small)
}

// Eviction leaves a partial download that another process is writing: its calls in flight
// are not this process's to know of.
func TestQuotaKeepsOtherProcessDownload(t *testing.T) {
	const mib = 1 << 20
	slow := origin.Random(2 * mib)
	o := origin.StartHTTP(t, "/blob", slow, mib)
	root := t.TempDir()
	args, _ := json.Marshal(helperArgs{Root: root, Tenant: "a", Artifact: artifact(o, slow)})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(args))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	partial := partialPath(root, "a", slow)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if fi, err := os.Stat(partial); err == nil && fi.Size() >= 256<<10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the helper wrote no 256 KiB within a minute")
		}
	}
	before, _ := os.Stat(partial)

	// Room for b only if the helper's partial file went.
	s := openStore(t, root, Options{AllowOrigins: loopback, Quota: 2 * mib})
	other := origin.Random(2 * mib)
	_, err := s.Stage(context.Background(), "b", artifact(origin.StartHTTP(t, "/blob", other, 0), other), nil)
	if !errors.Is(err, ErrFull) {
		t.Errorf("Stage beside another process's download: %v, want the quota full", err)
	}
	if after, err := os.Stat(partial); err != nil || !os.SameFile(before, after) {
		t.Errorf("the other process's partial file was removed: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the helper: %v\n%s", err, stderr.String())
	}
	sameFile(t, blobPath(root, "a", slow), slow)
	if st := s.Stats(); st.Evictions != 0 {
		t.Errorf("stats %+v, want no eviction", st)
	}
}
