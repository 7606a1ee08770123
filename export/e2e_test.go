package export_test

import (
	"bytes"
	"cmp"
	"context"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/pprof/profile"
	pushv1 "github.com/grafana/pyroscope/api/gen/proto/go/push/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/push/v1/pushv1connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coldtrace/coldtrace/export"
	"github.com/coldtrace/coldtrace/export/otlp"
	"github.com/coldtrace/coldtrace/export/pyroscope"
	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/recorder"
	"github.com/coldtrace/coldtrace/report"
	"github.com/coldtrace/coldtrace/trace"
)

// recordContainer records the real cold start of a small container image: a fresh pull
// from a loopback registry, the unpack, the entrypoint reading libraries, downloading a
// shard from a loopback origin, mapping weights and listening. It returns the trace as
// read back from its file.
func recordContainer(t *testing.T) *trace.Trace {
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
	return tr
}

// pushReceiver takes Pyroscope's push API with Pyroscope's own generated Connect handler,
// as a Pyroscope server mounts it.
type pushReceiver struct{ got chan *pushv1.PushRequest }

func (r pushReceiver) Push(_ context.Context, req *connect.Request[pushv1.PushRequest]) (*connect.Response[pushv1.PushResponse], error) {
	r.got <- req.Msg
	return connect.NewResponse(&pushv1.PushResponse{}), nil
}

func startPushReceiver(t *testing.T) (string, <-chan *pushv1.PushRequest) {
	t.Helper()
	r := pushReceiver{got: make(chan *pushv1.PushRequest, 10)}
	mux := http.NewServeMux()
	mux.Handle(pushv1connect.NewPusherServiceHandler(r))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String(), r.got
}

// TestExportRecordedColdStart sends a real container cold start through the agent's
// path (the sinks' queues) to a real Jaeger over OTLP/gRPC and to a receiver of
// Pyroscope's push API, then checks what each got against the trace file: the span tree
// and every span's time as Jaeger's query API returns them, and the profile's labels,
// sample types and totals as the pprof library parses them. The same trace's OTLP/JSON
// (report --format otlp-json) posted to Jaeger's OTLP/HTTP receiver must read back alike.
func TestExportRecordedColdStart(t *testing.T) {
	tr := recordContainer(t)
	j := startJaeger(t)
	pyroURL, pushes := startPushReceiver(t)

	m := export.NewMetrics(prometheus.NewRegistry())
	o, err := otlp.New("grpc://" + j.GRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Shutdown(context.Background())
	p, err := pyroscope.New(pyroURL)
	if err != nil {
		t.Fatal(err)
	}
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

	checkJaeger(t, j, tr)
	select {
	case req := <-pushes:
		checkPush(t, req, tr)
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
	checkJaeger(t, j, &js)
}

// checkJaeger reads tr's spans back from Jaeger and checks them against the trace.
func checkJaeger(t *testing.T, j *jaeger, tr *trace.Trace) {
	t.Helper()
	us := func(d trace.Duration) int64 { return tr.Start.Add(d).UnixNano() / 1e3 }
	// What the trace says there must be: the root, its phases, each layer's download and
	// unpack, each download of the workload, its largest file loads, its driver calls.
	want := 1 + len(tr.Phases) + len(tr.GPU.Calls)
	for _, l := range tr.Pull.Layers {
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
	got := j.waitTrace(t, service, otlp.TraceID(tr).String(), want)
	if len(got.Spans) != want {
		t.Errorf("jaeger has %d spans, the trace makes %d", len(got.Spans), want)
	}

	byID := map[string]jaegerSpan{}
	var root jaegerSpan
	for _, s := range got.Spans {
		byID[s.SpanID] = s
		if len(s.References) == 0 {
			root = s
		}
	}
	parent := func(s jaegerSpan) string {
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
	if proc.ServiceName != service || tag(proc.Tags, "container.id") != tr.Workload.ContainerID ||
		tag(proc.Tags, "host.name") != tr.Host.Hostname || tag(proc.Tags, "container.image.name") != service {
		t.Errorf("process %+v; want service %s, container.id %s, host.name %s", proc, service, tr.Workload.ContainerID, tr.Host.Hostname)
	}
	if d := tag(proc.Tags, "container.image.repo_digests"); d == nil || !strings.Contains(d.(string), tr.Workload.ImageDigest) {
		t.Errorf("container.image.repo_digests %v, want the image digest %s", d, tr.Workload.ImageDigest)
	}

	spans := map[string][]jaegerSpan{}
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
	for _, l := range tr.Pull.Layers {
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
	if downloads == 0 || len(spans["load "+ctrtest.WeightsPath]) != 1 {
		t.Errorf("the recording's download (%d) or the weights' load span (%d) is missing", downloads, len(spans["load "+ctrtest.WeightsPath]))
	}
	t.Logf("jaeger: %d spans of trace %s, %d phases, %d layers, %d downloads, %d file loads", len(got.Spans), got.TraceID, len(tr.Phases), len(tr.Pull.Layers), downloads, min(loads, otlp.MaxFileSpans))
}

// validLabel is the legacy Prometheus label name Pyroscope's validation accepts unchanged.
var validLabel = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// checkPush checks a push as Pyroscope's distributor would take it (labels, then the
// profile parsed with the pprof library) and its totals against the trace.
func checkPush(t *testing.T, req *pushv1.PushRequest, tr *trace.Trace) {
	t.Helper()
	if len(req.Series) != 1 || len(req.Series[0].Samples) != 1 {
		t.Fatalf("push of %d series, want one with one sample", len(req.Series))
	}
	s := req.Series[0]
	labels := map[string]string{}
	for _, l := range s.Labels {
		if !validLabel.MatchString(l.Name) || l.Value == "" {
			t.Errorf("label %q=%q would be refused or dropped", l.Name, l.Value)
		}
		if _, dup := labels[l.Name]; dup {
			t.Errorf("label %q twice", l.Name)
		}
		labels[l.Name] = l.Value
	}
	want := map[string]string{"__name__": pyroscope.ProfileName, "service_name": export.Service(tr), "node": tr.Host.Hostname, "outcome": string(tr.Outcome)}
	for k, v := range want {
		if labels[k] != v {
			t.Errorf("label %s=%q, want %q (labels %v)", k, labels[k], v, labels)
		}
	}
	prof, err := profile.ParseData(s.Samples[0].RawProfile)
	if err != nil {
		t.Fatalf("the pushed profile does not parse: %v", err)
	}
	if err := prof.CheckValid(); err != nil {
		t.Fatal(err)
	}
	if len(prof.SampleType) != 2 || prof.SampleType[0].Type != report.PprofCritical || prof.SampleType[0].Unit != "nanoseconds" ||
		prof.SampleType[1].Type != report.PprofBytes || prof.SampleType[1].Unit != "bytes" {
		t.Errorf("sample types %v %v", prof.SampleType[0], prof.SampleType[1:])
	}
	for _, st := range prof.SampleType {
		if strings.Contains(st.Type, "-") {
			t.Errorf("sample type %q: Pyroscope refuses a '-'", st.Type)
		}
	}
	if prof.TimeNanos != tr.Start.UnixNano() {
		t.Errorf("profile time %d, the cold start began at %d", prof.TimeNanos, tr.Start.UnixNano())
	}
	var critical, bytes, wantBytes int64
	for _, smp := range prof.Sample {
		critical += smp.Value[0]
		bytes += smp.Value[1]
	}
	for _, ph := range tr.Phases {
		wantBytes += ph.Bytes
	}
	if critical != int64(tr.Duration) || bytes != wantBytes {
		t.Errorf("profile totals %d ns, %d bytes; the trace: %d ns to ready, %d bytes", critical, bytes, tr.Duration, wantBytes)
	}
	t.Logf("pyroscope push: labels %v, %d samples, %d ns, %d bytes", labels, len(prof.Sample), critical, bytes)
}
