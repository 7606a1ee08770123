package exporttest

import (
	"context"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/pprof/profile"
	pushv1 "github.com/grafana/pyroscope/api/gen/proto/go/push/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/push/v1/pushv1connect"

	"github.com/coldtrace/coldtrace/export"
	"github.com/coldtrace/coldtrace/export/pyroscope"
	"github.com/coldtrace/coldtrace/report"
	"github.com/coldtrace/coldtrace/trace"
)

// pushReceiver takes Pyroscope's push API with Pyroscope's own generated Connect handler,
// as a Pyroscope server mounts it.
type pushReceiver struct{ got chan *pushv1.PushRequest }

func (r pushReceiver) Push(_ context.Context, req *connect.Request[pushv1.PushRequest]) (*connect.Response[pushv1.PushResponse], error) {
	r.got <- req.Msg
	return connect.NewResponse(&pushv1.PushResponse{}), nil
}

// StartPushReceiver serves Pyroscope's push API on loopback until the test ends and
// returns its URL and the requests it gets.
func StartPushReceiver(t testing.TB) (string, <-chan *pushv1.PushRequest) {
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

// validLabel is the legacy Prometheus label name Pyroscope's validation accepts unchanged.
var validLabel = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// CheckPush checks a push as Pyroscope's distributor would take it (labels, then the
// profile parsed with the pprof library) and its totals against the trace.
func CheckPush(t testing.TB, req *pushv1.PushRequest, tr *trace.Trace) {
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
