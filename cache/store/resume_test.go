package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/manifest"
)

// helperEnv carries the Stage call of the helper process: the test binary run again, killed
// in the middle of its download.
const helperEnv = "COLDTRACE_STORE_HELPER"

type helperArgs struct {
	Root     string
	Tenant   string
	Artifact manifest.Artifact
}

func TestMain(m *testing.M) {
	if v := os.Getenv(helperEnv); v != "" {
		var h helperArgs
		if err := json.Unmarshal([]byte(v), &h); err != nil {
			panic(err)
		}
		s, err := Open(h.Root, Options{AllowOrigins: loopback})
		if err == nil {
			_, err = s.Stage(context.Background(), h.Tenant, h.Artifact, nil)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func fileSize(t testing.TB, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func absent(t testing.TB, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists: %v", p, err)
	}
}

// stageUntil starts staging a and cancels it once stopAt bytes are in; it returns the
// length of the partial file left.
func stageUntil(t testing.TB, s *Store, tenant string, a manifest.Artifact, body []byte, stopAt int64) int64 {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := s.Stage(ctx, tenant, a, func(done, _ int64) {
		if done >= stopAt {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Stage: %v, want it cancelled", err)
	}
	absent(t, blobPath(s.root, tenant, body))
	if _, err := s.Lookup(tenant, a.Digest, -1, false); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup of a partial download: %v, want not found", err)
	}
	return fileSize(t, partialPath(s.root, tenant, body))
}

// checkResumed checks, at the origin, that the last request asked for the rest from n and
// was sent only that.
func checkResumed(t testing.TB, o *origin.HTTP, r Result, size, n int64) {
	t.Helper()
	reqs := o.Requests()
	last := reqs[len(reqs)-1]
	if r.Action != Resumed || r.ResumedFrom != n || r.Fetched != size-n || r.Restarted {
		t.Errorf("Stage: %+v, want resumed from %d, fetching %d", r, n, size-n)
	}
	if want := fmt.Sprintf("bytes=%d-", n); last.Range != want || last.Status != 206 || last.Body != size-n {
		t.Errorf("the origin's last request: %+v, want Range %s answered with 206 and %d bytes", last, want, size-n)
	}
}

func TestResumeAfterCancel(t *testing.T) {
	body := origin.Random(4 << 20)
	o := origin.StartHTTP(t, "/blob", body, 16<<20)
	s := openStore(t, t.TempDir(), Options{AllowOrigins: loopback})
	a := artifact(o, body)
	n := stageUntil(t, s, "a", a, body, 1<<20)
	if n < 1<<20 || n >= a.Size {
		t.Fatalf("partial file of %d bytes", n)
	}
	r := mustStage(t, s, "a", a)
	checkResumed(t, o, r, a.Size, n)
	sameFile(t, r.Path, body)
	absent(t, partialPath(s.root, "a", body))
	absent(t, partialPath(s.root, "a", body)+".json")
	if st := s.Stats(); st.Resumes != 1 || st.Failures != 1 {
		t.Errorf("stats %+v", st)
	}
}

// A process killed in the middle of a download leaves a partial file that the next one
// continues; nothing is published before it is whole.
func TestResumeAfterKill(t *testing.T) {
	body := origin.Random(6 << 20)
	o := origin.StartHTTP(t, "/blob", body, 2<<20)
	root := t.TempDir()
	a := artifact(o, body)
	args, _ := json.Marshal(helperArgs{Root: root, Tenant: "a", Artifact: a})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(args))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	partial := partialPath(root, "a", body)
	deadline := time.Now().Add(time.Minute)
	for {
		if fi, err := os.Stat(partial); err == nil && fi.Size() >= 1<<20 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the helper wrote no 1 MiB within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	if err := cmd.Wait(); err == nil {
		t.Fatal("the helper finished before it was killed")
	}
	absent(t, blobPath(root, "a", body))
	n := fileSize(t, partial)

	s := openStore(t, root, Options{AllowOrigins: loopback})
	r := mustStage(t, s, "a", a)
	checkResumed(t, o, r, a.Size, n)
	sameFile(t, r.Path, body)
	t.Logf("killed at %d of %d bytes; the restart fetched %d", n, a.Size, r.Fetched)
}

func TestResumeRestarts(t *testing.T) {
	t.Run("partial bytes wrong", func(t *testing.T) {
		body := origin.Random(4 << 20)
		o := origin.StartHTTP(t, "/blob", body, 16<<20)
		s := openStore(t, t.TempDir(), Options{AllowOrigins: loopback})
		a := artifact(o, body)
		n := stageUntil(t, s, "a", a, body, 1<<20)
		writeByte(t, partialPath(s.root, "a", body), 1000, body[1000]^1)
		r := mustStage(t, s, "a", a)
		// The remainder, then the whole file again once the digest did not match.
		if r.Action != Fetched || !r.Restarted || r.Fetched != a.Size-n+a.Size {
			t.Errorf("Stage: %+v, want a restart fetching %d", r, a.Size-n+a.Size)
		}
		reqs := o.Requests()
		if last := reqs[len(reqs)-1]; last.Range != "" || last.Body != a.Size {
			t.Errorf("the origin's last request: %+v, want the whole file", last)
		}
		sameFile(t, r.Path, body)
		if st := s.Stats(); st.Restarts != 1 {
			t.Errorf("stats %+v", st)
		}
	})
	t.Run("range ignored", func(t *testing.T) {
		body := origin.Random(4 << 20)
		o := origin.StartHTTP(t, "/blob", body, 16<<20)
		s := openStore(t, t.TempDir(), Options{AllowOrigins: loopback})
		a := artifact(o, body)
		stageUntil(t, s, "a", a, body, 1<<20)
		o.IgnoreRange(true)
		r := mustStage(t, s, "a", a)
		reqs := o.Requests()
		if last := reqs[len(reqs)-1]; r.Action != Fetched || !r.Restarted || r.Fetched != a.Size || last.Status != 200 {
			t.Errorf("Stage: %+v, origin %+v, want a restart from a 200", r, last)
		}
		sameFile(t, r.Path, body)
	})
	t.Run("content changed", func(t *testing.T) {
		// The origin is updated in the middle of the download: If-Range on the old ETag
		// brings the whole new file, not its tail after the old head.
		old, body := origin.Random(4<<20), origin.Random(4<<20)
		o := origin.StartHTTP(t, "/blob", old, 16<<20)
		s := openStore(t, t.TempDir(), Options{AllowOrigins: loopback})
		a := artifact(o, body)
		stageUntil(t, s, "a", a, body, 1<<20)
		o.SetBody(body)
		r := mustStage(t, s, "a", a)
		reqs := o.Requests()
		last := reqs[len(reqs)-1]
		if r.Action != Fetched || !r.Restarted || r.Fetched != a.Size || last.Range == "" || last.Status != 200 {
			t.Errorf("Stage: %+v, origin %+v, want a ranged request answered whole", r, last)
		}
		sameFile(t, r.Path, body)
	})
}
