// Package rate limits the cache agent's bytes per second: one Limiter shared by every worker
// of an action (pulls, page-cache warming) bounds what the action takes from the node's disk
// or link, so that it never competes with a starting container for all of it.
package rate

import (
	"context"
	"sync"
	"time"
)

// Limiter is a token bucket of bytes. A caller takes what it needs and sleeps off the debt,
// so concurrent callers share the rate. A nil Limiter does not limit.
type Limiter struct {
	mu     sync.Mutex
	rate   float64 // bytes per second
	burst  float64
	tokens float64
	last   time.Time
}

// New returns a limiter of bytesPerSec whose burst is 100 ms of the rate, or nil (no
// limit) when bytesPerSec <= 0.
func New(bytesPerSec int64) *Limiter { return NewBurst(bytesPerSec, bytesPerSec/10) }

// NewBurst returns a limiter of bytesPerSec that saves up at most burst bytes while idle,
// or nil (no limit) when bytesPerSec <= 0. It starts empty.
func NewBurst(bytesPerSec, burst int64) *Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	return &Limiter{rate: float64(bytesPerSec), burst: float64(burst), last: time.Now()}
}

// Wait takes n bytes from the bucket, sleeping while it is in debt; it returns ctx's error
// when ctx ends first (the bytes stay taken).
func (l *Limiter) Wait(ctx context.Context, n int) error {
	if l == nil {
		return ctx.Err()
	}
	l.mu.Lock()
	now := time.Now()
	l.tokens = min(l.burst, l.tokens+l.rate*now.Sub(l.last).Seconds())
	l.last = now
	l.tokens -= float64(n)
	debt := time.Duration(-l.tokens / l.rate * float64(time.Second))
	l.mu.Unlock()
	if debt <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(debt)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
