package rate

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Four workers taking 64 KiB at a time from a 4 MiB/s limiter move 2 MiB in about half a
// second, not faster: the wall clock is the ground truth.
func TestLimiterShared(t *testing.T) {
	l := New(4 << 20)
	start := time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 8 {
				if err := l.Wait(context.Background(), 64<<10); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	// 2 MiB less the 0.4 MiB burst at 4 MiB/s is 0.4 s at least.
	if el < 350*time.Millisecond {
		t.Fatalf("2 MiB at 4 MiB/s took %v, want at least 0.35 s", el)
	}
	t.Logf("2 MiB at 4 MiB/s: %v", el)
}

func TestLimiterCancel(t *testing.T) {
	l := New(1 << 10)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := l.Wait(ctx, 1<<20); err == nil {
		t.Fatal("a wait of 1024 s returned nil before its context ended")
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("cancel took %v", el)
	}
}

func TestNilUnlimited(t *testing.T) {
	var l *Limiter = New(0)
	if l != nil {
		t.Fatal("New(0) is not nil")
	}
	if err := l.Wait(context.Background(), 1<<30); err != nil {
		t.Fatal(err)
	}
}
