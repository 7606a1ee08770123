package otlp

import (
	"encoding/json"
	"io"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/coldtrace/coldtrace/trace"
)

// JSON writes t's spans (Spans) as one OTLP/JSON ExportTraceServiceRequest, the body an
// OTLP/HTTP receiver takes at /v1/traces with Content-Type application/json: ids in hex,
// 64-bit integers as strings, enums as numbers.
func JSON(w io.Writer, t *trace.Trace) error {
	spans := Spans(t)
	res := Resource(t)
	var out []jsonSpan
	for _, s := range spans {
		js := jsonSpan{
			TraceID: s.SpanContext().TraceID().String(), SpanID: s.SpanContext().SpanID().String(),
			Name: s.Name(), Kind: int(s.SpanKind()),
			Start: nanos(s.StartTime()), End: nanos(s.EndTime()),
			Attributes: jsonAttrs(s.Attributes()),
		}
		if s.Parent().IsValid() {
			js.ParentSpanID = s.Parent().SpanID().String()
		}
		for _, e := range s.Events() {
			js.Events = append(js.Events, jsonEvent{Time: nanos(e.Time), Name: e.Name, Attributes: jsonAttrs(e.Attributes)})
		}
		if st := s.Status(); st.Code != codes.Unset {
			// OTLP numbers its status codes Unset 0, Ok 1, Error 2; the Go API Unset 0, Error 1, Ok 2.
			js.Status = &jsonStatus{Code: map[codes.Code]int{codes.Ok: 1, codes.Error: 2}[st.Code], Message: st.Description}
		}
		out = append(out, js)
	}
	req := map[string]any{"resourceSpans": []any{map[string]any{
		"resource":  map[string]any{"attributes": jsonAttrs(res.Attributes())},
		"schemaUrl": res.SchemaURL(),
		"scopeSpans": []any{map[string]any{
			"scope": map[string]any{"name": Scope.Name},
			"spans": out,
		}},
	}}}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(req)
}

type jsonSpan struct {
	TraceID      string         `json:"traceId"`
	SpanID       string         `json:"spanId"`
	ParentSpanID string         `json:"parentSpanId,omitempty"`
	Name         string         `json:"name"`
	Kind         int            `json:"kind"`
	Start        string         `json:"startTimeUnixNano"`
	End          string         `json:"endTimeUnixNano"`
	Attributes   []jsonKeyValue `json:"attributes,omitempty"`
	Events       []jsonEvent    `json:"events,omitempty"`
	Status       *jsonStatus    `json:"status,omitempty"`
}

type jsonEvent struct {
	Time       string         `json:"timeUnixNano"`
	Name       string         `json:"name"`
	Attributes []jsonKeyValue `json:"attributes,omitempty"`
}

type jsonStatus struct {
	Code    int    `json:"code"`
	Message string `json:"message,omitempty"`
}

type jsonKeyValue struct {
	Key   string         `json:"key"`
	Value map[string]any `json:"value"`
}

func nanos(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }

func jsonAttrs(kvs []attribute.KeyValue) []jsonKeyValue {
	out := make([]jsonKeyValue, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, jsonKeyValue{Key: string(kv.Key), Value: jsonValue(kv.Value)})
	}
	return out
}

// jsonValue is an OTLP AnyValue.
func jsonValue(v attribute.Value) map[string]any {
	switch v.Type() {
	case attribute.BOOL:
		return map[string]any{"boolValue": v.AsBool()}
	case attribute.INT64:
		return map[string]any{"intValue": strconv.FormatInt(v.AsInt64(), 10)}
	case attribute.FLOAT64:
		return map[string]any{"doubleValue": v.AsFloat64()}
	case attribute.STRINGSLICE:
		var vs []any
		for _, s := range v.AsStringSlice() {
			vs = append(vs, map[string]any{"stringValue": s})
		}
		return map[string]any{"arrayValue": map[string]any{"values": vs}}
	}
	return map[string]any{"stringValue": v.String()}
}
