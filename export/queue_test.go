package export_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coldtrace/coldtrace/export"
	"github.com/coldtrace/coldtrace/export/otlp"
	"github.com/coldtrace/coldtrace/export/pyroscope"
	"github.com/coldtrace/coldtrace/trace"
)

// tiny is a small valid cold start; what it holds does not matter to the queue.
func tiny(i int) *trace.Trace {
	return &trace.Trace{
		ID: fmt.Sprintf("queue-%d", i), Start: time.Now(), Duration: time.Second, Outcome: trace.OutcomeReady,
		Workload: trace.Workload{Command: []string{"/bin/serve"}},
		Phases:   []trace.Phase{{Name: trace.PhaseInit, End: time.Second, Busy: time.Second, Critical: time.Second}},
		Critical: []trace.Segment{{Phase: trace.PhaseInit, End: time.Second}},
	}
}

// exporters are the real exporters, each pointed at a backend address (HOST:PORT).
var exporters = map[string]func(t *testing.T, addr string) export.Func{
	"otlp-http": func(t *testing.T, addr string) export.Func { return otlpExporter(t, "http://"+addr) },
	"otlp-grpc": func(t *testing.T, addr string) export.Func { return otlpExporter(t, "grpc://"+addr) },
	"pyroscope": func(t *testing.T, addr string) export.Func {
		p, err := pyroscope.New("http://" + addr)
		if err != nil {
			t.Fatal(err)
		}
		return p.Export
	},
}

func otlpExporter(t *testing.T, endpoint string) export.Func {
	e, err := otlp.New(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Shutdown(context.Background()) })
	return e.Export
}

// hangingBackend accepts connections and never answers: an HTTP server whose handler
// blocks for plain HTTP, a listener that never speaks for gRPC (whose HTTP/2 handshake
// then never completes). Each request or connection is reported on the channel.
func hangingBackend(t *testing.T, grpc bool) (string, <-chan struct{}) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{}, 100)
	release := make(chan struct{})
	t.Cleanup(func() { close(release); ln.Close() })
	if grpc {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				got <- struct{}{}
				go func() { <-release; c.Close() }()
			}
		}()
		return ln.Addr().String(), got
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- struct{}{}
		<-release
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), got
}

// downBackend is an address where nothing listens.
func downBackend(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// putAll queues n traces as the recording would and returns the longest Put.
func putAll(q *export.Queue, from, n int) time.Duration {
	var longest time.Duration
	for i := from; i < from+n; i++ {
		start := time.Now()
		q.Put(tiny(i))
		longest = max(longest, time.Since(start))
	}
	return longest
}

// A backend that hangs holds one export until its timeout; the recording's Puts never
// wait, the queue holds what it can, and every trace that is not exported is counted
// once, by reason.
func TestQueueBackendHangs(t *testing.T) {
	for name, mk := range exporters {
		t.Run(name, func(t *testing.T) {
			addr, got := hangingBackend(t, name == "otlp-grpc")
			m := export.NewMetrics(prometheus.NewRegistry())
			const size, extra, timeout = 2, 10, 3 * time.Second
			q := export.NewQueue(name, mk(t, addr), size, timeout, m, testWriter{t})
			putAll(q, 0, 1)
			select { // the worker is inside the first export, held by the backend
			case <-got:
			case <-time.After(30 * time.Second):
				t.Fatal("the first export never reached the backend")
			}
			start := time.Now()
			longest := putAll(q, 1, size+extra)
			// Had a Put waited for the backend, it would have taken the export's timeout.
			if took := time.Since(start); took >= timeout {
				t.Errorf("%d Puts took %v with the backend hung: they waited for it", size+extra, took)
			}
			t.Logf("longest Put with the backend hung: %v", longest)
			if n := testutil.ToFloat64(m.Dropped(name, export.DropQueueFull)); n != extra {
				t.Errorf("dropped for a full queue: %v, want %d (queue %d, one export in flight)", n, extra, size)
			}
			// The hung export ends at its timeout, counted as failed, and the worker moves on.
			for deadline := time.Now().Add(30 * timeout); testutil.ToFloat64(m.Dropped(name, export.DropFailed)) == 0; time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the hung export did not time out after %v", 30*timeout)
				}
			}
			q.Close(0)
			var dropped float64
			for _, r := range []string{export.DropQueueFull, export.DropFailed, export.DropShutdown} {
				dropped += testutil.ToFloat64(m.Dropped(name, r))
			}
			if exported := testutil.ToFloat64(m.Exported(name)); exported != 0 || dropped != 1+size+extra {
				t.Errorf("exported %v, dropped %v; want 0 and every one of the %d", exported, dropped, 1+size+extra)
			}
		})
	}
}

// A backend that is down fails each export at once, and each is counted as failed.
func TestQueueBackendDown(t *testing.T) {
	for name, mk := range exporters {
		t.Run(name, func(t *testing.T) {
			m := export.NewMetrics(prometheus.NewRegistry())
			q := export.NewQueue(name, mk(t, downBackend(t)), 0, 0, m, testWriter{t})
			const n = 5
			putAll(q, 0, n)
			start := time.Now()
			q.Close(time.Minute) // returns once the worker has tried each
			if took := time.Since(start); took > export.DefaultTimeout {
				t.Errorf("%d exports to a backend that is down took %v", n, took)
			}
			if failed, exported := testutil.ToFloat64(m.Dropped(name, export.DropFailed)), testutil.ToFloat64(m.Exported(name)); failed != n || exported != 0 {
				t.Errorf("failed %v, exported %v; want %d and 0", failed, exported, n)
			}
		})
	}
}

// testWriter sends the queue's log lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}
