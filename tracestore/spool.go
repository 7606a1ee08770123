package tracestore

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coldtrace/coldtrace/trace"
)

// SpoolOptions bound a Spooled store's local spool.
type SpoolOptions struct {
	// Dir is the spool's directory (root's alone, like a Dir); MaxBytes bounds it: when
	// the bucket is away that long, the oldest traces are dropped first, and counted
	// (coldtrace_trace_store_removed_total{store="spool",reason="size"}).
	Dir      string
	MaxBytes int64
	// MinBackoff and MaxBackoff bound the wait between failed uploads, doubled at each
	// failure; zero means 1s and 1m.
	MinBackoff, MaxBackoff time.Duration
	Registerer             prometheus.Registerer
	Log                    io.Writer
}

// Spooled is a Store that writes each trace to a local spool first and uploads it to a
// bucket in the background, retrying with backoff while the bucket is away. A trace
// leaves the spool once uploaded, so an agent that restarts sends what the last one had
// not. List and Open read the bucket.
type Spooled struct {
	*Bucket
	spool   *Dir
	opts    SpoolOptions
	uploads *prometheus.CounterVec
	wake    chan struct{}
	stop    context.CancelFunc
	done    chan struct{}
}

// NewSpooled opens the spool in opts.Dir and starts uploading what it holds to dst.
func NewSpooled(dst *Bucket, opts SpoolOptions) (*Spooled, error) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	opts.MinBackoff = cmp.Or(opts.MinBackoff, time.Second)
	opts.MaxBackoff = max(cmp.Or(opts.MaxBackoff, time.Minute), opts.MinBackoff)
	var reg prometheus.Registerer
	if opts.Registerer != nil {
		reg = prometheus.WrapRegistererWith(prometheus.Labels{"store": "spool"}, opts.Registerer)
	}
	spool, err := OpenDir(opts.Dir, Options{MaxBytes: opts.MaxBytes, Registerer: reg, Log: opts.Log})
	if err != nil {
		return nil, err
	}
	s := &Spooled{Bucket: dst, spool: spool, opts: opts, wake: make(chan struct{}, 1), done: make(chan struct{}),
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coldtrace_trace_uploads_total",
			Help: "Uploads of traces to the trace store's bucket, by result: ok or error (retried later)."}, []string{"result"})}
	s.uploads.WithLabelValues("ok")
	s.uploads.WithLabelValues("error")
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(s.uploads)
	}
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go s.run(ctx)
	return s, nil
}

// Put spools t and returns the URL it will have in the bucket.
func (s *Spooled) Put(ctx context.Context, name string, t *trace.Trace) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	key := s.Key(name, t)
	if _, err := s.spool.Put(ctx, key, t); err != nil {
		return "", err
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return s.url(key), nil
}

// Close stops the uploads; what is left in the spool waits for the next agent.
func (s *Spooled) Close() error {
	s.stop()
	<-s.done
	return nil
}

func (s *Spooled) run(ctx context.Context) {
	defer close(s.done)
	backoff := s.opts.MinBackoff
	for {
		wait := backoff
		if err := s.drain(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			fmt.Fprintf(s.opts.Log, "coldtrace: trace store: %v (next try in %v)\n", err, backoff)
			backoff = min(2*backoff, s.opts.MaxBackoff)
		} else {
			backoff, wait = s.opts.MinBackoff, -1
		}
		// A new trace does not cut a backoff short: the bucket is still away.
		var next <-chan struct{} = s.wake
		var timer <-chan time.Time
		if wait > 0 {
			next, timer = nil, time.After(wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-next:
		case <-timer:
		}
	}
}

// drain uploads the spooled traces, oldest first, until the spool is empty or an upload
// fails.
func (s *Spooled) drain(ctx context.Context) error {
	es, err := s.spool.List(ctx, Filter{})
	if err != nil {
		return err
	}
	for _, e := range es {
		body, err := s.read(ctx, e.ID)
		if err != nil {
			continue // dropped from the spool meanwhile
		}
		uctx, cancel := context.WithTimeout(ctx, time.Minute)
		err = s.upload(uctx, e.Name, body)
		cancel()
		if err != nil {
			s.uploads.WithLabelValues("error").Inc()
			return err
		}
		s.uploads.WithLabelValues("ok").Inc()
		if err := s.spool.Remove(e.Name); err != nil {
			return err
		}
	}
	return nil
}

func (s *Spooled) read(ctx context.Context, id string) ([]byte, error) {
	r, err := s.spool.Open(ctx, id)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}
