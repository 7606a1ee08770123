// Package export hands recorded cold starts to the engines people already run (profiles
// to Pyroscope, spans to an OTLP backend) without ever holding up a recording: the
// recording's goroutine only puts the trace on a bounded queue, a worker exports it, and
// what cannot be queued or exported is dropped and counted. The exporters themselves are
// the subpackages otlp and pyroscope.
package export

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coldtrace/coldtrace/trace"
)

// Defaults for a Queue.
const (
	DefaultQueueSize = 64               // cold starts waiting; a node starts far fewer between two exports
	DefaultTimeout   = 10 * time.Second // one export; a hung backend holds the worker no longer
)

// The reasons a trace was dropped, the values of the metric's reason label.
const (
	DropQueueFull = "queue_full" // the backend is slower than the cold starts come
	DropFailed    = "failed"     // the export failed or timed out
	DropShutdown  = "shutdown"   // still queued when the agent stopped
)

// Metrics count exports and drops per exporter.
type Metrics struct {
	exported *prometheus.CounterVec
	dropped  *prometheus.CounterVec
}

// NewMetrics registers the exporters' counters on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		exported: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coldtrace_exports_total",
			Help: "Cold starts exported, by exporter (otlp, pyroscope).",
		}, []string{"exporter"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coldtrace_exports_dropped_total",
			Help: "Cold starts not exported, by exporter and reason (queue_full, failed, shutdown).",
		}, []string{"exporter", "reason"}),
	}
	reg.MustRegister(m.exported, m.dropped)
	return m
}

// Dropped is the counter of one exporter's drops for one reason.
func (m *Metrics) Dropped(exporter, reason string) prometheus.Counter {
	return m.dropped.WithLabelValues(exporter, reason)
}

// Exported is the counter of one exporter's exports.
func (m *Metrics) Exported(exporter string) prometheus.Counter {
	return m.exported.WithLabelValues(exporter)
}

// Func exports one trace; it must return when ctx is done.
type Func func(ctx context.Context, t *trace.Trace) error

// Queue exports traces one at a time on its own goroutine.
type Queue struct {
	name    string
	export  Func
	timeout time.Duration
	metrics *Metrics
	log     io.Writer

	mu     sync.Mutex // guards closed against Put's send on ch
	closed bool
	ch     chan *trace.Trace
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// NewQueue starts the worker of an exporter called name. size bounds the traces waiting
// (DefaultQueueSize when 0), timeout one export (DefaultTimeout when 0); failures are
// written to log.
func NewQueue(name string, export Func, size int, timeout time.Duration, m *Metrics, log io.Writer) *Queue {
	if size <= 0 {
		size = DefaultQueueSize
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	q := &Queue{name: name, export: export, timeout: timeout, metrics: m, log: log,
		ch: make(chan *trace.Trace, size), done: make(chan struct{})}
	q.ctx, q.cancel = context.WithCancel(context.Background())
	// The counters exist from the start, so that a dashboard sees 0 rather than nothing.
	m.Exported(name)
	for _, r := range []string{DropQueueFull, DropFailed, DropShutdown} {
		m.Dropped(name, r)
	}
	go q.run()
	return q
}

// Put queues t for export, or drops it when the queue is full or closed. It never blocks:
// it is the sink the recording calls (watcher.Options.Sinks).
func (q *Queue) Put(t *trace.Trace) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		q.metrics.Dropped(q.name, DropShutdown).Inc()
		return
	}
	select {
	case q.ch <- t:
	default:
		q.metrics.Dropped(q.name, DropQueueFull).Inc()
	}
}

func (q *Queue) run() {
	defer close(q.done)
	for t := range q.ch {
		if q.ctx.Err() != nil {
			q.metrics.Dropped(q.name, DropShutdown).Inc()
			continue
		}
		ctx, cancel := context.WithTimeout(q.ctx, q.timeout)
		err := q.export(ctx, t)
		cancel()
		switch {
		case err == nil:
			q.metrics.Exported(q.name).Inc()
		case q.ctx.Err() != nil:
			q.metrics.Dropped(q.name, DropShutdown).Inc()
		default:
			q.metrics.Dropped(q.name, DropFailed).Inc()
			fmt.Fprintf(q.log, "coldtrace: %s export of %s: %v\n", q.name, t.ID, err)
		}
	}
}

// Close stops taking traces, gives the worker grace to export those queued, then cancels
// what is left (counted as dropped at shutdown) and waits for the worker.
func (q *Queue) Close(grace time.Duration) {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.ch)
	}
	q.mu.Unlock()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-q.done:
	case <-timer.C:
	}
	q.cancel()
	<-q.done
}
