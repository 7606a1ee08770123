package otlp

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/trace"
)

const sec = time.Second

// start is a container cold start with a pull, a download, a weights load and a driver call.
func start() *trace.Trace {
	return &trace.Trace{
		ID: "01JA", Start: time.Date(2026, 11, 28, 9, 30, 0, 0, time.UTC), Duration: 20 * sec, Outcome: trace.OutcomeReady,
		Workload: trace.Workload{Image: "registry.local:5000/team/vllm:v1", ImageDigest: "sha256:abc", ContainerID: "c1",
			Pod: "vllm-0", Namespace: "serving", Container: "vllm", Labels: map[string]string{"io.kubernetes.pod.uid": "uid-1"}},
		Host:  trace.Host{Hostname: "gpu-7", Arch: "x86_64", Kernel: "6.18.0"},
		Pull:  &trace.Pull{Start: 0, End: 6 * sec, Layers: []trace.Layer{{Index: 0, Digest: "sha256:l0", Bytes: 100, Fetched: 4 * sec, UnpackStart: 4 * sec, UnpackEnd: 6 * sec}}},
		Conns: []trace.Conn{{Remote: "10.0.0.1:80", Dir: "connect", Role: "peer", URL: "http://hub/m.safetensors", Open: 7 * sec, LastRecv: 9 * sec, BytesRecv: 50}},
		Files: []trace.File{{Path: "/m.safetensors", Kind: trace.KindWeights, Size: 50, MappedBytes: 50,
			Ranges: []trace.Range{{Off: 0, Len: 50, First: 10 * sec, Last: 12 * sec, Via: trace.AccessMmap}}}},
		GPU: trace.GPU{Calls: []trace.Call{{Name: "cuInit", PID: 1, TID: 1, Start: 13 * sec, End: 14 * sec}}},
		Phases: []trace.Phase{
			{Name: trace.PhasePull, End: 4 * sec}, {Name: trace.PhaseUnpack, Start: 4 * sec, End: 6 * sec},
			{Name: trace.PhaseFetch, Start: 7 * sec, End: 9 * sec}, {Name: trace.PhaseLoad, Start: 10 * sec, End: 12 * sec},
			{Name: trace.PhaseGPU, Start: 13 * sec, End: 14 * sec},
		},
	}
}

// The spans form one tree under the root, at the trace's wall-clock times, with the same
// ids every time.
func TestSpans(t *testing.T) {
	tr := start()
	spans := Spans(tr)
	if len(spans) != 1+5+2+1+1+1 {
		t.Fatalf("%d spans", len(spans))
	}
	names := map[string]string{} // span id -> name
	for _, s := range spans {
		names[s.SpanContext().SpanID().String()] = s.Name()
		if s.SpanContext().TraceID() != TraceID(tr) {
			t.Errorf("span %s in trace %s", s.Name(), s.SpanContext().TraceID())
		}
	}
	want := map[string][3]any{ // name: parent, start, end
		"pull layer 0":                      {"pull", 0 * sec, 4 * sec},
		"unpack layer 0":                    {"unpack", 4 * sec, 6 * sec},
		"download http://hub/m.safetensors": {"fetch", 7 * sec, 9 * sec},
		"load /m.safetensors":               {"load", 10 * sec, 12 * sec},
		"cuInit":                            {"gpu", 13 * sec, 14 * sec},
		"fetch":                             {"cold start registry.local:5000/team/vllm", 7 * sec, 9 * sec},
	}
	for _, s := range spans {
		w, ok := want[s.Name()]
		if !ok {
			continue
		}
		delete(want, s.Name())
		if p := names[s.Parent().SpanID().String()]; p != w[0] {
			t.Errorf("%s: parent %q, want %q", s.Name(), p, w[0])
		}
		if !s.StartTime().Equal(tr.Start.Add(w[1].(time.Duration))) || !s.EndTime().Equal(tr.Start.Add(w[2].(time.Duration))) {
			t.Errorf("%s: %v to %v", s.Name(), s.StartTime(), s.EndTime())
		}
	}
	if len(want) > 0 {
		t.Errorf("missing spans %v", want)
	}
	if spans[0].Parent().IsValid() || spans[0].EndTime().Sub(spans[0].StartTime()) != tr.Duration {
		t.Errorf("first span %s is not the root of the whole cold start", spans[0].Name())
	}
	again := Spans(tr)
	for i := range spans {
		if !spans[i].SpanContext().Equal(again[i].SpanContext()) {
			t.Fatalf("span %d: ids differ between two exports", i)
		}
	}
}

// OTLP/JSON has hex ids, 64-bit integers as strings and the resource's conventions.
func TestJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := JSON(&buf, start()); err != nil {
		t.Fatal(err)
	}
	var req struct {
		ResourceSpans []struct {
			Resource struct {
				Attributes []struct {
					Key   string         `json:"key"`
					Value map[string]any `json:"value"`
				} `json:"attributes"`
			} `json:"resource"`
			ScopeSpans []struct {
				Spans []struct {
					TraceID, SpanID, ParentSpanID, StartTimeUnixNano, EndTimeUnixNano string
					Attributes                                                        []struct {
						Key   string         `json:"key"`
						Value map[string]any `json:"value"`
					}
				} `json:"spans"`
			} `json:"scopeSpans"`
		} `json:"resourceSpans"`
	}
	if err := json.Unmarshal(buf.Bytes(), &req); err != nil {
		t.Fatal(err)
	}
	rs := req.ResourceSpans[0]
	attrs := map[string]any{}
	for _, a := range rs.Resource.Attributes {
		attrs[a.Key] = a.Value["stringValue"]
	}
	for k, v := range map[string]string{"service.name": "registry.local:5000/team/vllm", "k8s.pod.name": "vllm-0", "k8s.namespace.name": "serving",
		"container.id": "c1", "host.name": "gpu-7", "k8s.node.name": "gpu-7", "k8s.pod.uid": "uid-1", "host.arch": "amd64"} {
		if attrs[k] != v {
			t.Errorf("resource %s = %v, want %s", k, attrs[k], v)
		}
	}
	hex := regexp.MustCompile(`^[0-9a-f]+$`)
	for _, s := range rs.ScopeSpans[0].Spans {
		if len(s.TraceID) != 32 || len(s.SpanID) != 16 || !hex.MatchString(s.TraceID+s.SpanID+s.ParentSpanID) {
			t.Errorf("ids %q %q %q are not OTLP/JSON's hex", s.TraceID, s.SpanID, s.ParentSpanID)
		}
		if _, err := strconv.ParseInt(s.StartTimeUnixNano, 10, 64); err != nil {
			t.Errorf("start %q: %v", s.StartTimeUnixNano, err)
		}
		for _, a := range s.Attributes {
			if v, ok := a.Value["intValue"]; ok {
				if _, isString := v.(string); !isString {
					t.Errorf("%s: intValue %v is not a string", a.Key, v)
				}
			}
		}
	}
}

// Bad endpoints are refused with what is wanted.
func TestNewBadEndpoint(t *testing.T) {
	for _, e := range []string{"", "localhost:4317", "tcp://host:1", "http://"} {
		if _, err := New(e); err == nil {
			t.Errorf("New(%q) accepted", e)
		}
	}
}
