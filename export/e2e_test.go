package export_test

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	pushv1 "github.com/grafana/pyroscope/api/gen/proto/go/push/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coldtrace/coldtrace/export"
	"github.com/coldtrace/coldtrace/export/otlp"
	"github.com/coldtrace/coldtrace/export/pyroscope"
	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/exporttest"
	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/recorder"
	"github.com/coldtrace/coldtrace/report"
	"github.com/coldtrace/coldtrace/trace"
)

// recordContainer records the real cold start of a small container image: a fresh pull
// from a loopback registry, the unpack, the entrypoint reading libraries, downloading a
// shard from a loopback origin, mapping weights and listening. It returns the trace as
// read back from its file, and the origin's port.
func recordContainer(t *testing.T) (*trace.Trace, int) {
	t.Helper()
	testenv.RequireBPF(t)
	ctrd := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{})
	shard := origin.StartHTTP(t, ctrtest.ShardURLPath, origin.Random(1<<20), 0)
	im := ctrtest.PushColdStart(t, reg, shard.Port(), ctrtest.Sizes{Libs: 200, LibSize: 2048, Weights: 16 << 20, Tensors: 32})
	tr, err := recorder.RecordImage(context.Background(), recorder.ImageOptions{
		Image: im.Ref, Address: ctrd.Address, Namespace: "default", PlainHTTP: true, Fresh: true,
		Args: im.Args, HostNetwork: true, Timeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Outcome != trace.OutcomeReady || tr.Pull == nil {
		t.Fatalf("recording: outcome %s (%s), pull %v", tr.Outcome, tr.Error, tr.Pull)
	}
	file := filepath.Join(t.TempDir(), "trace.json.gz")
	if err := trace.WriteFile(file, tr); err != nil {
		t.Fatal(err)
	}
	if tr, err = trace.ReadFile(file); err != nil {
		t.Fatal(err)
	}
	return tr, shard.Port()
}

// backends are a Jaeger and a Pyroscope push receiver with exporters to them.
type backends struct {
	jaeger    *exporttest.Jaeger
	otlp      *otlp.Exporter
	pyroscope *pyroscope.Pusher
	pushes    <-chan *pushv1.PushRequest
}

// startBackends starts the backends, with OTLP over proto: "grpc" or "http".
func startBackends(t *testing.T, proto string) backends {
	t.Helper()
	b := backends{jaeger: exporttest.StartJaeger(t)}
	var url string
	url, b.pushes = exporttest.StartPushReceiver(t)
	endpoint := "grpc://" + b.jaeger.GRPC
	if proto == "http" {
		endpoint = "http://" + b.jaeger.HTTP
	}
	var err error
	if b.otlp, err = otlp.New(endpoint); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.otlp.Shutdown(context.Background()) })
	if b.pyroscope, err = pyroscope.New(url); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestExportRecordedColdStart sends a real container cold start through the agent's
// path (the sinks' queues) to a real Jaeger over OTLP/gRPC and to a receiver of
// Pyroscope's push API, then checks what each got against the trace file: the span tree
// and every span's time as Jaeger's query API returns them, and the profile's labels,
// sample types and totals as the pprof library parses them. The same trace's OTLP/JSON
// (report --format otlp-json) posted to Jaeger's OTLP/HTTP receiver must read back alike.
func TestExportRecordedColdStart(t *testing.T) {
	tr, shardPort := recordContainer(t)
	b := startBackends(t, "grpc")
	j, o, p, pushes := b.jaeger, b.otlp, b.pyroscope, b.pushes
	m := export.NewMetrics(prometheus.NewRegistry())
	queues := []*export.Queue{
		export.NewQueue("otlp", o.Export, 0, 0, m, testWriter{t}),
		export.NewQueue("pyroscope", p.Export, 0, 0, m, testWriter{t}),
	}
	for _, q := range queues {
		q.Put(tr)
	}
	for _, q := range queues {
		q.Close(time.Minute)
	}
	for _, name := range []string{"otlp", "pyroscope"} {
		if n := testutil.ToFloat64(m.Exported(name)); n != 1 {
			t.Fatalf("%s: exported %v cold starts, want 1", name, n)
		}
	}

	got := exporttest.CheckJaeger(t, j, tr)
	// The recording's own download and weights load are among the spans.
	names := map[string]bool{}
	for _, s := range got.Spans {
		names[s.OperationName] = true
	}
	for _, want := range []string{"load " + ctrtest.WeightsPath, "download http://127.0.0.1:" + strconv.Itoa(shardPort) + ctrtest.ShardURLPath} {
		if !names[want] {
			t.Errorf("no span %q among %v", want, names)
		}
	}
	select {
	case req := <-pushes:
		exporttest.CheckPush(t, req, tr)
	default:
		t.Fatal("the Pyroscope receiver got nothing")
	}

	// The OTLP/JSON of the same cold start, under another id so that it is another trace.
	js := *tr
	js.ID += "-json"
	var body bytes.Buffer
	if err := report.Render(&body, &js, "otlp-json"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+j.HTTP+"/v1/traces", "application/json", &body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("jaeger's OTLP/HTTP receiver answered the OTLP/JSON with %s", resp.Status)
	}
	exporttest.CheckJaeger(t, j, &js)
}

// TestExportRecordedCommand sends a real `record -- CMD` cold start (a Python program that
// downloads from a loopback origin, then listens) to Jaeger over OTLP/HTTP and to the
// Pyroscope receiver, and checks both against the trace.
func TestExportRecordedCommand(t *testing.T) {
	testenv.RequireBPF(t)
	python := testenv.RequireBinary(t, "python3")
	shard := origin.StartHTTP(t, "/model.bin", origin.Random(4<<20), 0)
	tr, err := recorder.Record(context.Background(), recorder.Options{
		Command: []string{python, "-c", `import socket, urllib.request
urllib.request.urlopen("` + shard.URL() + `").read()
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()`},
		Timeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Outcome != trace.OutcomeReady {
		t.Fatalf("recording: outcome %s (%s)", tr.Outcome, tr.Error)
	}
	b := startBackends(t, "http")
	j, o, p, pushes := b.jaeger, b.otlp, b.pyroscope, b.pushes
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := o.Export(ctx, tr); err != nil {
		t.Fatal(err)
	}
	if err := p.Export(ctx, tr); err != nil {
		t.Fatal(err)
	}
	got := exporttest.CheckJaeger(t, j, tr)
	if export.Service(tr) != filepath.Base(python) {
		t.Errorf("service %q, want the program's name %s", export.Service(tr), filepath.Base(python))
	}
	found := false
	for _, s := range got.Spans {
		found = found || s.OperationName == "download "+shard.URL()
	}
	if !found {
		t.Errorf("no span for the download of %s", shard.URL())
	}
	exporttest.CheckPush(t, <-pushes, tr)
}
