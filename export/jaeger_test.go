package export_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/internal/testenv"
)

// jaeger is a Jaeger all-in-one (v2, the OpenTelemetry Collector based one) that a test
// started on loopback ports with in-memory storage.
type jaeger struct {
	GRPC, HTTP string // the OTLP receivers, HOST:PORT
	Query      string // the query API's base URL
}

// jaegerBinary is the jaeger executable of the tools module hack/jaeger (go tool caches
// it once built; hack/install-deps.sh builds it ahead of the tests).
func jaegerBinary(t *testing.T) string {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(here), "..", "hack", "jaeger")
	out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "-C", dir, "tool", "-n", "jaeger").Output()
	bin := strings.TrimSpace(string(out))
	why := ""
	if err != nil {
		why = fmt.Sprintf("go -C hack/jaeger tool -n jaeger: %v", err)
	}
	testenv.Require(t, "the jaeger tool of hack/jaeger (hack/install-deps.sh builds it)", err == nil && bin != "", why)
	return bin
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startJaeger runs Jaeger under a temporary directory until the test ends.
func startJaeger(t *testing.T) *jaeger {
	t.Helper()
	bin := jaegerBinary(t)
	j := &jaeger{GRPC: freePort(t), HTTP: freePort(t)}
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
	// Ready when the query API answers; the receivers start before it.
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		select {
		case err := <-done:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("jaeger exited: %v\n%s", err, b)
		default:
		}
		if resp, err := http.Get(j.Query + "/api/services"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return j
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("jaeger's query API did not answer within 2 minutes")
		}
	}
}

// jaegerSpan is a span as Jaeger's query API (/api/traces) returns it: times in µs.
type jaegerSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	StartTime int64      `json:"startTime"`
	Duration  int64      `json:"duration"`
	Tags      []jaegerKV `json:"tags"`
	ProcessID string     `json:"processID"`
}

type jaegerKV struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

type jaegerTrace struct {
	TraceID   string       `json:"traceID"`
	Spans     []jaegerSpan `json:"spans"`
	Processes map[string]struct {
		ServiceName string     `json:"serviceName"`
		Tags        []jaegerKV `json:"tags"`
	} `json:"processes"`
}

// traces asks the query API for the traces of a service (within the last day), as a user
// of Jaeger's UI finds them.
func (j *jaeger) traces(t *testing.T, service string) []jaegerTrace {
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
		Data   []jaegerTrace `json:"data"`
		Errors []any         `json:"errors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/api/traces?%s: %s, %v, errors %v", q.Encode(), resp.Status, err, body.Errors)
	}
	return body.Data
}

// waitTrace polls the query API until the trace of the given id has n spans: the
// collector's batch processor stores spans a little after they arrive.
func (j *jaeger) waitTrace(t *testing.T, service, traceID string, n int) jaegerTrace {
	t.Helper()
	var last jaegerTrace
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		for _, tr := range j.traces(t, service) {
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

func tag(kvs []jaegerKV, key string) any {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value
		}
	}
	return nil
}
