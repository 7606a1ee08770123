package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/internal/origin"
)

// openFDs counts this process's descriptors open on path, as /proc shows them.
func openFDs(t testing.TB, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && l == path {
			n++
		}
	}
	return n
}

// The interleaving of the review: a call opens the download's lock file while another
// process holds it; that process publishes the file, removes its lock file and lets go.
// The call must not fetch (nor rewrite) what was published: it finds the file there.
func TestOtherProcessPublishesWhileWaiting(t *testing.T) {
	body := origin.Random(1 << 20)
	o := origin.StartHTTP(t, "/blob", body, 0)
	root := t.TempDir()
	s := openStore(t, root, Options{AllowOrigins: loopback})
	a := artifact(o, body)
	h := fmt.Sprintf("%x", sha256.Sum256(body))

	// The other process, spelled out with plain syscalls: it holds the download's lock.
	if err := os.MkdirAll(filepath.Join(root, ".partial", "a"), 0o700); err != nil {
		t.Fatal(err)
	}
	lockPath := filepath.Join(root, ".partial", "a", h+".lock")
	lf, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	type staged struct {
		r   Result
		err error
	}
	done := make(chan staged, 1)
	go func() {
		r, err := s.Stage(context.Background(), "a", a, nil)
		done <- staged{r, err}
	}()
	for deadline := time.Now().Add(30 * time.Second); openFDs(t, lockPath) < 2; time.Sleep(time.Millisecond) {
		select {
		case st := <-done:
			t.Fatalf("Stage returned while another process held the download: %+v, %v", st.r, st.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("Stage did not open the download's lock file within 30 s")
		}
	}
	// The other process publishes the file, removes its lock file and lets go.
	pub := blobPath(root, "a", body)
	os.MkdirAll(filepath.Dir(pub), 0o755)
	if err := os.WriteFile(pub+".tmp", body, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(pub+".tmp", pub); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(pub)
	os.Remove(lockPath)
	lf.Close()

	st := <-done
	if st.err != nil || st.r.Action != Hit || st.r.Fetched != 0 {
		t.Fatalf("Stage: %+v, %v, want a hit on the other process's file", st.r, st.err)
	}
	if n := len(o.Requests()); n != 0 {
		t.Errorf("the origin got %d requests, want none", n)
	}
	sameFile(t, pub, body)
	if after, _ := os.Stat(pub); !os.SameFile(before, after) || after.Size() != before.Size() {
		t.Error("the published file was replaced or rewritten")
	}
	absent(t, partialPath(root, "a", body))
}

// Two processes (two Stores on one root) stage the same files at once while a pod reads
// the published path: the pod sees either no file or the whole right one, and both calls
// end with the verified file.
func TestTwoProcessesStageTogether(t *testing.T) {
	const rounds = 20
	root := t.TempDir()
	stores := []*Store{openStore(t, root, Options{AllowOrigins: loopback}), openStore(t, root, Options{AllowOrigins: loopback})}
	var reads, short atomic.Int64
	for i := range rounds {
		body := origin.Random(512 << 10)
		o := origin.StartHTTP(t, "/blob", body, 8<<20)
		a := artifact(o, body)
		pub := blobPath(root, "a", body)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { // the pod
			for {
				select {
				case <-stop:
					return
				default:
				}
				b, err := os.ReadFile(pub)
				if err != nil {
					continue
				}
				reads.Add(1)
				if !bytes.Equal(b, body) {
					short.Add(1)
					t.Errorf("round %d: a reader saw %d bytes, not the %d of the artifact", i, len(b), len(body))
				}
			}
		})
		errs := make(chan error, 2)
		for _, s := range stores {
			go func() {
				_, err := s.Stage(context.Background(), "a", a, nil)
				errs <- err
			}()
		}
		for range stores {
			if err := <-errs; err != nil {
				t.Errorf("round %d: %v", i, err)
			}
		}
		close(stop)
		wg.Wait()
		sameFile(t, pub, body)
		if got := o.BodyBytes(); got != a.Size {
			t.Errorf("round %d: the origin sent %d bytes, want the file once (%d)", i, got, a.Size)
		}
	}
	t.Logf("%d rounds; the reader read the published file %d times, %d of them wrong", rounds, reads.Load(), short.Load())
}
