package containerd

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/internal/ctrtest"
)

// TestIngestDirWakes: the watch of containerd's ingest directory stays quiet while nothing
// is pulled and wakes while a pull downloads (a 2 MiB layer at 1 MiB/s: the pull lasts
// two seconds, so a wake that comes before its end is no accident of timing).
func TestIngestDirWakes(t *testing.T) {
	e := setup(t, 1<<20)
	ctx := context.Background()
	wake, stop := e.c.watchIngestDir(ctx)
	defer stop()
	if wake == nil {
		t.Fatal("containerd's ingest directory is not watched: the ingest log would poll all the time")
	}
	blob := make([]byte, 2<<20)
	rand.NewChaCha8([32]byte{3}).Read(blob) // incompressible: the download is 2 MiB
	ref, _ := push(t, e.reg, "test/wake:v1", layer(t, ctrtest.File{Path: "/blob", Data: blob}))
	select {
	case <-wake:
		t.Fatal("woken while nothing was pulled")
	case <-time.After(300 * time.Millisecond):
	}

	done := make(chan error, 1)
	go func() {
		_, err := e.c.Pull(ctx, ref, PullOptions{PlainHTTP: true})
		done <- err
	}()
	select {
	case <-wake:
	case err := <-done:
		t.Fatalf("the pull ended (err %v) without a wake", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
