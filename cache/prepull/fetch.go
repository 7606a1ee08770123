package prepull

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/remotes"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/coldtrace/coldtrace/internal/rate"
)

// resolver wraps a registry resolver so that every blob read is counted, rate-limited and
// paused while a foreign pull is live.
type resolver struct {
	remotes.Resolver
	limit *rate.Limiter
	y     *yielder
	// progress, when set, is told the bytes received so far, after each read.
	progress func(received int64)

	mu      sync.Mutex
	bytes   int64
	yielded time.Duration
}

func (r *resolver) stats() (int64, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bytes, r.yielded
}

func (r *resolver) Fetcher(ctx context.Context, ref string) (remotes.Fetcher, error) {
	f, err := r.Resolver.Fetcher(ctx, ref)
	if err != nil {
		return nil, err
	}
	return remotes.FetcherFunc(func(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
		// containerd opened the blob's ingest before asking for it: it is the agent's own.
		r.y.add(desc.Digest.String(), 1)
		b := &reader{r: r, ctx: ctx, desc: desc, fetch: f}
		// Yield before the request too: a blob not yet requested costs the link nothing.
		if err := b.open(); err != nil {
			r.y.add(desc.Digest.String(), -1)
			return nil, err
		}
		return b, nil
	}), nil
}

func (r *resolver) pause(ctx context.Context, drop func()) error {
	d, err := r.y.wait(ctx, drop)
	r.mu.Lock()
	r.yielded += d
	r.mu.Unlock()
	return err
}

// step bounds each read, so that a pause or the rate limit takes effect within 32 KiB.
const step = 32 << 10

// reader is one blob's body; containerd closes it after committing the blob.
//
// When it pauses for a foreign pull it drops the connection, and reopens it from where it
// stopped with a range request (the docker fetcher's body is an io.Seeker that does so)
// once the foreign pull is over. Merely not reading would not free the link: the registry
// keeps sending until the socket buffers on both ends are full, megabytes on a fast link.
type reader struct {
	r      *resolver
	ctx    context.Context
	desc   ocispec.Descriptor
	fetch  remotes.Fetcher
	rc     io.ReadCloser // nil while dropped
	got    int64
	closed bool
}

// open waits out foreign pulls and (re)opens the blob at the offset reached.
func (b *reader) open() error {
	if err := b.r.pause(b.ctx, b.drop); err != nil {
		return err
	}
	if b.rc != nil {
		return nil
	}
	rc, err := b.fetch.Fetch(b.ctx, b.desc)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", b.desc.Digest, err)
	}
	if b.got > 0 {
		if _, err := rc.(io.Seeker).Seek(b.got, io.SeekStart); err != nil {
			rc.Close()
			return fmt.Errorf("fetch %s from byte %d: %w", b.desc.Digest, b.got, err)
		}
	}
	b.rc = rc
	return nil
}

// drop closes the connection of a body that can be reopened at an offset.
func (b *reader) drop() {
	if _, ok := b.rc.(io.Seeker); ok {
		b.rc.Close()
		b.rc = nil
	}
}

func (b *reader) Read(p []byte) (int, error) {
	if err := b.open(); err != nil {
		return 0, err
	}
	p = p[:min(len(p), step)]
	if err := b.r.limit.Wait(b.ctx, len(p)); err != nil {
		return 0, err
	}
	n, err := b.rc.Read(p)
	b.got += int64(n)
	b.r.mu.Lock()
	b.r.bytes += int64(n)
	total := b.r.bytes
	b.r.mu.Unlock()
	if b.r.progress != nil && n > 0 {
		b.r.progress(total)
	}
	if err != nil && err != io.EOF {
		err = fmt.Errorf("blob %s: received %d of %d bytes: %w", b.desc.Digest, b.got, b.desc.Size, err)
	}
	return n, err
}

func (b *reader) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	b.r.y.add(b.desc.Digest.String(), -1)
	if b.rc == nil {
		return nil
	}
	return b.rc.Close()
}
