// Package otlp turns a cold start into an OpenTelemetry trace and sends it to an OTLP
// backend (Jaeger, Tempo, any OpenTelemetry Collector), over gRPC or HTTP; JSON writes the
// same spans in OTLP/JSON.
package otlp

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/coldtrace/coldtrace/export"
	"github.com/coldtrace/coldtrace/trace"
)

// Scope is the instrumentation scope of the spans.
var Scope = instrumentation.Scope{Name: "github.com/coldtrace/coldtrace/export/otlp"}

// MaxFileSpans bounds the file loads that get a span of their own: the largest ones.
const MaxFileSpans = 10

// Attribute keys of our own, where OpenTelemetry's conventions have none.
const (
	AttrTraceID     = attribute.Key("coldtrace.trace.id")
	AttrOutcome     = attribute.Key("coldtrace.outcome")
	AttrIncomplete  = attribute.Key("coldtrace.incomplete")
	AttrPhase       = attribute.Key("coldtrace.phase")
	AttrCritical    = attribute.Key("coldtrace.critical_ns")
	AttrBusy        = attribute.Key("coldtrace.busy_ns")
	AttrBytes       = attribute.Key("coldtrace.bytes")
	AttrLayerIndex  = attribute.Key("coldtrace.layer.index")
	AttrLayerDigest = attribute.Key("coldtrace.layer.digest")
)

// TraceID is the OpenTelemetry trace id of a cold start, derived from its coldtrace id, so
// that exporting a trace twice (or as OTLP/JSON and to a backend) gives the same trace.
func TraceID(t *trace.Trace) oteltrace.TraceID {
	sum := sha256.Sum256([]byte("coldtrace trace " + t.ID))
	return oteltrace.TraceID(sum[:16])
}

// Spans returns the cold start as OpenTelemetry spans, ordered by start (the root
// first): a root span from time zero to the end of the recording; a span per phase
// under it; under the phases, each layer's download and unpack, each model download
// (a connection the workload opened to a peer), the MaxFileSpans largest file loads and
// the GPU driver calls. Their times are the cold start's wall-clock times.
func Spans(t *trace.Trace) []sdktrace.ReadOnlySpan {
	col := &collector{}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSpanProcessor(col),
		sdktrace.WithResource(Resource(t)),
		sdktrace.WithIDGenerator(&ids{trace: TraceID(t), seed: t.ID}),
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
	)
	defer tp.Shutdown(context.Background())
	tr := tp.Tracer(Scope.Name)
	at := func(d trace.Duration) time.Time { return t.Start.Add(d) }
	span := func(ctx context.Context, name string, start, end trace.Duration, attrs ...attribute.KeyValue) context.Context {
		ctx, s := tr.Start(ctx, name, oteltrace.WithTimestamp(at(start)), oteltrace.WithAttributes(attrs...))
		s.End(oteltrace.WithTimestamp(at(max(end, start))))
		return ctx
	}

	ctx, root := tr.Start(context.Background(), "cold start "+export.Service(t),
		oteltrace.WithTimestamp(t.Start), oteltrace.WithSpanKind(oteltrace.SpanKindInternal),
		oteltrace.WithAttributes(AttrTraceID.String(t.ID), AttrOutcome.String(string(t.Outcome)), AttrIncomplete.Bool(t.Incomplete)))
	if t.Ready != nil {
		root.AddEvent("ready", oteltrace.WithTimestamp(at(t.Ready.At)),
			oteltrace.WithAttributes(attribute.String("coldtrace.ready.kind", t.Ready.Kind), attribute.String("coldtrace.ready.addr", t.Ready.Addr)))
	}
	if t.Outcome != trace.OutcomeReady {
		root.SetStatus(codes.Error, cmp.Or(t.Error, string(t.Outcome)))
	}

	parents := map[trace.PhaseName]context.Context{}
	for _, p := range t.Phases {
		parents[p.Name] = span(ctx, string(p.Name), p.Start, p.End, AttrPhase.String(string(p.Name)),
			AttrCritical.Int64(int64(p.Critical)), AttrBusy.Int64(int64(p.Busy)), AttrBytes.Int64(p.Bytes))
	}
	// under is the phase's span, or the root where the trace has no such phase.
	under := func(p trace.PhaseName) context.Context { return cmp.Or(parents[p], ctx) }

	if p := t.Pull; p != nil {
		for _, l := range p.Layers {
			attrs := []attribute.KeyValue{AttrLayerIndex.Int(l.Index), AttrLayerDigest.String(l.Digest), AttrBytes.Int64(l.Bytes)}
			if l.Fetched > 0 {
				span(under(trace.PhasePull), fmt.Sprintf("pull layer %d", l.Index), p.Start, l.Fetched, attrs...)
			}
			if l.UnpackEnd > 0 {
				span(under(trace.PhaseUnpack), fmt.Sprintf("unpack layer %d", l.Index), l.UnpackStart, l.UnpackEnd, attrs[:2]...)
			}
		}
	}
	for _, c := range t.Conns {
		if c.Role == "registry" || c.Dir != "connect" {
			continue
		}
		attrs := []attribute.KeyValue{AttrBytes.Int64(c.BytesRecv)}
		if host, port, err := net.SplitHostPort(c.Remote); err == nil {
			p, _ := strconv.Atoi(port)
			attrs = append(attrs, semconv.NetworkPeerAddress(host), semconv.NetworkPeerPort(p))
		}
		if c.URL != "" {
			attrs = append(attrs, semconv.URLFull(c.URL))
		}
		span(under(trace.PhaseFetch), "download "+cmp.Or(c.URL, c.Remote), c.Open, max(c.LastRecv, c.Open), attrs...)
	}
	for _, f := range largestLoads(t) {
		ph := trace.PhaseLoad
		if f.Kind == trace.KindLibrary {
			ph = trace.PhaseInit
		}
		first, last := f.Ranges[0].First, f.Ranges[0].Last
		for _, r := range f.Ranges {
			first, last = min(first, r.First), max(last, r.Last)
		}
		attrs := []attribute.KeyValue{semconv.FilePath(f.Path), semconv.FileSize(int(f.Size)),
			AttrBytes.Int64(f.BytesRead + f.MappedBytes), attribute.Int64("coldtrace.cache_miss_pages", f.CacheMisses)}
		if f.Layer != nil && f.Layer.Digest != "" {
			attrs = append(attrs, AttrLayerDigest.String(f.Layer.Digest))
		}
		span(under(ph), "load "+f.Path, first, last, attrs...)
	}
	for _, c := range t.GPU.Calls {
		span(under(trace.PhaseGPU), c.Name, c.Start, c.End,
			attribute.Int("process.pid", c.PID), attribute.Int("thread.id", c.TID), attribute.Int64("coldtrace.gpu.return", c.Return))
	}
	root.End(oteltrace.WithTimestamp(at(t.Duration)))

	spans := col.spans
	slices.SortStableFunc(spans, func(a, b sdktrace.ReadOnlySpan) int {
		if c := a.StartTime().Compare(b.StartTime()); c != 0 {
			return c
		}
		return cmp.Compare(depth(spans, a), depth(spans, b))
	})
	return spans
}

// largestLoads are the weights and library files that moved the most bytes, at most
// MaxFileSpans of them.
func largestLoads(t *trace.Trace) []trace.File {
	var fs []trace.File
	for _, f := range t.Files {
		if (f.Kind == trace.KindWeights || f.Kind == trace.KindLibrary) && len(f.Ranges) > 0 {
			fs = append(fs, f)
		}
	}
	slices.SortStableFunc(fs, func(a, b trace.File) int {
		return cmp.Compare(b.BytesRead+b.MappedBytes, a.BytesRead+a.MappedBytes)
	})
	return fs[:min(len(fs), MaxFileSpans)]
}

// depth counts a span's ancestors among spans, so that a parent sorts before a child
// that starts with it.
func depth(spans []sdktrace.ReadOnlySpan, s sdktrace.ReadOnlySpan) int {
	n := 0
	for s.Parent().IsValid() {
		i := slices.IndexFunc(spans, func(p sdktrace.ReadOnlySpan) bool { return p.SpanContext().SpanID() == s.Parent().SpanID() })
		if i < 0 {
			break
		}
		s, n = spans[i], n+1
	}
	return n
}

// Resource describes what started and where, in OpenTelemetry's semantic conventions
// (service.*, container.*, k8s.*, host.*, os.*, process.*).
func Resource(t *trace.Trace) *resource.Resource {
	w := t.Workload
	attrs := []attribute.KeyValue{semconv.ServiceName(export.Service(t)), semconv.OSTypeLinux}
	add := func(v string, kv func(string) attribute.KeyValue) {
		if v != "" {
			attrs = append(attrs, kv(v))
		}
	}
	add(w.ContainerID, semconv.ContainerID)
	add(w.Container, semconv.K8SContainerName)
	add(w.Pod, semconv.K8SPodName)
	add(w.Namespace, semconv.K8SNamespaceName)
	add(w.Labels["io.kubernetes.pod.uid"], semconv.K8SPodUID)
	add(t.Host.Hostname, semconv.HostName)
	add(t.Host.Kernel, semconv.OSVersion)
	if w.Pod != "" {
		add(t.Host.Hostname, semconv.K8SNodeName) // the kubelet's node name is its hostname unless overridden
	}
	if w.Image != "" {
		attrs = append(attrs, semconv.ContainerImageName(export.Service(t)))
		if tag := imageTag(w.Image); tag != "" {
			attrs = append(attrs, semconv.ContainerImageTags(tag))
		}
		if w.ImageDigest != "" {
			attrs = append(attrs, semconv.ContainerImageRepoDigests(export.Service(t)+"@"+w.ImageDigest))
		}
	}
	if len(w.Command) > 0 {
		attrs = append(attrs, semconv.ProcessCommandArgs(w.Command...))
	}
	switch t.Host.Arch {
	case "x86_64", "amd64":
		attrs = append(attrs, semconv.HostArchAMD64)
	case "aarch64", "arm64":
		attrs = append(attrs, semconv.HostArchARM64)
	}
	return resource.NewWithAttributes(semconv.SchemaURL, attrs...)
}

// imageTag is the tag of an image reference, if it has one.
func imageTag(ref string) string {
	name, _, _ := strings.Cut(ref, "@")
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		return name[i+1:]
	}
	return ""
}

// collector keeps the spans the SDK ends, in the order they end.
type collector struct{ spans []sdktrace.ReadOnlySpan }

func (c *collector) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (c *collector) OnEnd(s sdktrace.ReadOnlySpan)                   { c.spans = append(c.spans, s) }
func (c *collector) Shutdown(context.Context) error                  { return nil }
func (c *collector) ForceFlush(context.Context) error                { return nil }

// ids gives the trace its derived id and each span an id derived from the trace's
// coldtrace id and the span's rank, so that the same trace always gets the same ids.
type ids struct {
	trace oteltrace.TraceID
	seed  string
	mu    sync.Mutex
	n     uint64
}

func (g *ids) NewIDs(context.Context) (oteltrace.TraceID, oteltrace.SpanID) {
	return g.trace, g.NewSpanID(context.Background(), g.trace)
}

func (g *ids) NewSpanID(context.Context, oteltrace.TraceID) oteltrace.SpanID {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n++
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], g.n)
	sum := sha256.Sum256(append([]byte("coldtrace span "+g.seed), buf[:]...))
	return oteltrace.SpanID(sum[:8])
}
