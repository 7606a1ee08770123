// Package exporttest starts the backends that coldtrace's exporters are tested against,
// a real Jaeger and a receiver of Pyroscope's push API, and checks what they received
// against the trace that was sent.
package exporttest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/export"
	"github.com/coldtrace/coldtrace/export/otlp"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

// Jaeger is a Jaeger all-in-one (v2, the OpenTelemetry Collector based one) that a test
// started on loopback ports with in-memory storage.
type Jaeger struct {
	GRPC, HTTP string // the OTLP receivers, HOST:PORT
	Query      string // the query API's base URL
}

// freePort is a loopback address for one of Jaeger's servers.
func freePort(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
}

// StartJaeger runs Jaeger under a temporary directory until the test ends.
func StartJaeger(t testing.TB) *Jaeger {
	t.Helper()
	bin := testenv.GoTool(t, "jaeger", "jaeger")
	j := &Jaeger{GRPC: freePort(t), HTTP: freePort(t)}
	query, queryGRPC := freePort(t), freePort(t)
	j.Query = "http://" + query
	dir := t.TempDir()
	config := filepath.Join(dir, "jaeger.yaml")
	err := os.WriteFile(config, fmt.Appendf(nil, `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: %s
    grpc:
      endpoint: %s
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 1000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
      http:
        endpoint: %s
processors:
  batch:
    timeout: 50ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`, query, queryGRPC, j.GRPC, j.HTTP), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "jaeger.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", config)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logf, logf
	// Jaeger traces itself to localhost:4317 unless told not to.
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("jaeger's log:\n%s", b)
		}
	})
	// Ready when the query API answers and both receivers take connections: the collector
	// starts its extensions (the query API) before its pipelines (the receivers).
	began := time.Now()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		select {
		case err := <-done:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("jaeger exited: %v\n%s", err, b)
		default:
		}
		if resp, err := http.Get(j.Query + "/api/services"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && listening(j.GRPC) && listening(j.HTTP) {
				t.Logf("jaeger ready in %v", time.Since(began).Round(time.Millisecond))
				return j
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("jaeger's query API did not answer within 2 minutes")
		}
	}
}

func listening(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// Span is a span as Jaeger's query API (/api/traces) returns it: times in µs.
type Span struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	StartTime int64      `json:"startTime"`
	Duration  int64      `json:"duration"`
	Tags      []KeyValue `json:"tags"`
	ProcessID string     `json:"processID"`
}

type KeyValue struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

type Trace struct {
	TraceID   string `json:"traceID"`
	Spans     []Span `json:"spans"`
	Processes map[string]struct {
		ServiceName string     `json:"serviceName"`
		Tags        []KeyValue `json:"tags"`
	} `json:"processes"`
}

// Traces asks the query API for the traces of a service (within the last day), as a user
// of Jaeger's UI finds them.
func (j *Jaeger) Traces(t testing.TB, service string) []Trace {
	t.Helper()
	now := time.Now()
	q := url.Values{"service": {service}, "limit": {"100"},
		"start": {fmt.Sprint(now.Add(-24 * time.Hour).UnixMicro())}, "end": {fmt.Sprint(now.Add(time.Hour).UnixMicro())}}
	resp, err := http.Get(j.Query + "/api/traces?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Data   []Trace `json:"data"`
		Errors []any   `json:"errors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/api/traces?%s: %s, %v, errors %v", q.Encode(), resp.Status, err, body.Errors)
	}
	return body.Data
}

// WaitTrace polls the query API until the trace of the given id has n spans: the
// collector's batch processor stores spans a little after they arrive.
func (j *Jaeger) WaitTrace(t testing.TB, service, traceID string, n int) Trace {
	t.Helper()
	var last Trace
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		for _, tr := range j.Traces(t, service) {
			if tr.TraceID == traceID {
				if last = tr; len(tr.Spans) >= n {
					return tr
				}
			}
		}
	}
	t.Fatalf("jaeger has %d spans of trace %s of service %q after a minute, want %d", len(last.Spans), traceID, service, n)
	return last
}

func tag(kvs []KeyValue, key string) any {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value
		}
	}
	return nil
}

// CheckJaeger reads tr's spans back from Jaeger and checks them against the trace.
func CheckJaeger(t testing.TB, j *Jaeger, tr *trace.Trace) Trace {
	t.Helper()
	us := func(d trace.Duration) int64 { return tr.Start.Add(d).UnixNano() / 1e3 }
	// What the trace says there must be: the root, its phases, each layer's download and
	// unpack, each download of the workload, its largest file loads, its driver calls.
	want := 1 + len(tr.Phases) + len(tr.GPU.Calls)
	var layers []trace.Layer
	if tr.Pull != nil {
		layers = tr.Pull.Layers
	}
	for _, l := range layers {
		if l.Fetched > 0 {
			want++
		}
		if l.UnpackEnd > 0 {
			want++
		}
	}
	downloads := 0
	for _, c := range tr.Conns {
		if c.Role != "registry" && c.Dir == "connect" {
			downloads++
		}
	}
	loads := 0
	for _, f := range tr.Files {
		if (f.Kind == trace.KindWeights || f.Kind == trace.KindLibrary) && len(f.Ranges) > 0 {
			loads++
		}
	}
	want += downloads + min(loads, otlp.MaxFileSpans)
	service := export.Service(tr)
	got := j.WaitTrace(t, service, otlp.TraceID(tr).String(), want)
	if len(got.Spans) != want {
		t.Errorf("jaeger has %d spans, the trace makes %d", len(got.Spans), want)
	}

	byID := map[string]Span{}
	var root Span
	for _, s := range got.Spans {
		byID[s.SpanID] = s
		if len(s.References) == 0 {
			root = s
		}
	}
	parent := func(s Span) string {
		if len(s.References) != 1 || s.References[0].RefType != "CHILD_OF" {
			t.Errorf("span %s: references %+v, want one CHILD_OF", s.OperationName, s.References)
			return ""
		}
		return byID[s.References[0].SpanID].OperationName
	}
	// Jaeger keeps microseconds: a span's start is truncated, its duration the nanosecond
	// duration truncated; allow the one microsecond that either may lose.
	near := func(a, b int64) bool { return a-b <= 1 && b-a <= 1 }
	if root.OperationName != "cold start "+service || root.StartTime != tr.Start.UnixMicro() || !near(root.Duration, int64(tr.Duration/time.Microsecond)) {
		t.Errorf("root span %q at %d for %d µs; want %q at %d for %d µs", root.OperationName, root.StartTime, root.Duration,
			"cold start "+service, tr.Start.UnixMicro(), tr.Duration/time.Microsecond)
	}
	if v := tag(root.Tags, "coldtrace.outcome"); v != string(tr.Outcome) {
		t.Errorf("root outcome tag %v, want %s", v, tr.Outcome)
	}
	proc := got.Processes[root.ProcessID]
	if proc.ServiceName != service || tag(proc.Tags, "host.name") != tr.Host.Hostname {
		t.Errorf("process %+v; want service %s, host.name %s", proc, service, tr.Host.Hostname)
	}
	if w := tr.Workload; w.Image != "" {
		if tag(proc.Tags, "container.id") != w.ContainerID || tag(proc.Tags, "container.image.name") != service {
			t.Errorf("process %+v; want container.id %s, container.image.name %s", proc, w.ContainerID, service)
		}
		if d, _ := tag(proc.Tags, "container.image.repo_digests").(string); !strings.Contains(d, w.ImageDigest) {
			t.Errorf("container.image.repo_digests %q, want the image digest %s", d, w.ImageDigest)
		}
	}

	spans := map[string][]Span{}
	for _, s := range got.Spans {
		spans[s.OperationName] = append(spans[s.OperationName], s)
	}
	check := func(name, wantParent string, start, end trace.Duration) {
		t.Helper()
		ss := spans[name]
		if len(ss) != 1 {
			t.Errorf("%d spans named %q, want 1", len(ss), name)
			return
		}
		s := ss[0]
		if p := parent(s); p != wantParent {
			t.Errorf("span %q: parent %q, want %q", name, p, wantParent)
		}
		if s.StartTime != us(start) || !near(s.Duration, int64((end-start)/time.Microsecond)) {
			t.Errorf("span %q at %d for %d µs; the trace says %d for %d µs", name, s.StartTime, s.Duration, us(start), (end-start)/time.Microsecond)
		}
	}
	for _, ph := range tr.Phases {
		check(string(ph.Name), root.OperationName, ph.Start, ph.End)
	}
	for _, l := range layers {
		if l.Fetched > 0 {
			check("pull layer "+strconv.Itoa(l.Index), "pull", tr.Pull.Start, l.Fetched)
		}
		if l.UnpackEnd > 0 {
			check("unpack layer "+strconv.Itoa(l.Index), "unpack", l.UnpackStart, l.UnpackEnd)
		}
	}
	for _, c := range tr.Conns {
		if c.Role != "registry" && c.Dir == "connect" {
			check("download "+cmp.Or(c.URL, c.Remote), "fetch", c.Open, max(c.LastRecv, c.Open))
		}
	}
	t.Logf("jaeger: %d spans of trace %s, %d phases, %d layers, %d downloads, %d file loads", len(got.Spans), got.TraceID, len(tr.Phases), len(layers), downloads, min(loads, otlp.MaxFileSpans))
	return got
}
