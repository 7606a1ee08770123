package otlp

import (
	"context"
	"fmt"
	"net/url"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/coldtrace/coldtrace/trace"
)

// Exporter sends each cold start as one OTLP request.
type Exporter struct {
	exp sdktrace.SpanExporter
}

// New makes an exporter for endpoint: http://HOST:PORT or https://HOST:PORT for OTLP/HTTP
// (to /v1/traces unless the URL has a path), grpc://HOST:PORT for OTLP/gRPC in plain text,
// grpcs://HOST:PORT for OTLP/gRPC over TLS. It does not connect yet. The exporter does not
// retry: the queue in front of it bounds each export's time and counts a failure as a drop.
func New(endpoint string) (*Exporter, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("otlp endpoint %q: want http://HOST:PORT, https://HOST:PORT, grpc://HOST:PORT or grpcs://HOST:PORT", endpoint)
	}
	ctx := context.Background()
	var exp sdktrace.SpanExporter
	switch u.Scheme {
	case "http", "https":
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(endpoint), otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false})}
		if u.Path == "" || u.Path == "/" {
			opts = append(opts, otlptracehttp.WithURLPath("/v1/traces"))
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	case "grpc", "grpcs":
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(u.Host), otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false})}
		if u.Scheme == "grpc" {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	default:
		return nil, fmt.Errorf("otlp endpoint %q: unknown scheme %q (http, https, grpc or grpcs)", endpoint, u.Scheme)
	}
	if err != nil {
		return nil, fmt.Errorf("otlp endpoint %q: %w", endpoint, err)
	}
	return &Exporter{exp: exp}, nil
}

// Export sends t's spans (Spans) in one request; it returns when ctx is done.
func (e *Exporter) Export(ctx context.Context, t *trace.Trace) error {
	return e.exp.ExportSpans(ctx, Spans(t))
}

// Shutdown closes the exporter's connections.
func (e *Exporter) Shutdown(ctx context.Context) error { return e.exp.Shutdown(ctx) }
