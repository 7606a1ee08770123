package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/coldtrace/coldtrace/export"
	"github.com/coldtrace/coldtrace/export/otlp"
	"github.com/coldtrace/coldtrace/export/pyroscope"
	"github.com/coldtrace/coldtrace/trace"
)

// exportGrace is how long a stopping agent lets the exporters send what is queued.
const exportGrace = 5 * time.Second

func exportFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "pyroscope-url", Usage: "push each cold start's profile to the Pyroscope server at `URL` (http://HOST:4040), and profile the agent itself there"},
		&cli.StringFlag{Name: "otlp-endpoint", Usage: "send each cold start as an OpenTelemetry trace to `ENDPOINT`: grpc://HOST:4317 (OTLP/gRPC) or http://HOST:4318 (OTLP/HTTP)"},
	}
}

// exporters sets up the exporters the flags ask for: the sinks that queue each written
// trace for them, and a stop that flushes and closes them.
func exporters(c *cli.Context, reg prometheus.Registerer) (sinks []func(*trace.Trace), stop func(), err error) {
	var stops []func()
	stop = func() {
		for _, s := range stops {
			s()
		}
	}
	var m *export.Metrics
	queue := func(name string, f export.Func) {
		if m == nil {
			m = export.NewMetrics(reg)
		}
		q := export.NewQueue(name, f, 0, 0, m, os.Stderr)
		sinks = append(sinks, q.Put)
		stops = append(stops, func() { q.Close(exportGrace) })
	}
	if u := c.String("pyroscope-url"); u != "" {
		p, err := pyroscope.New(u)
		if err != nil {
			return nil, stop, fmt.Errorf("--pyroscope-url: %w", err)
		}
		self, err := pyroscope.Self(u, 0)
		if err != nil {
			return nil, stop, fmt.Errorf("--pyroscope-url: profiling the agent: %w", err)
		}
		stops = append(stops, func() { self.Stop() })
		queue("pyroscope", p.Export)
	}
	if e := c.String("otlp-endpoint"); e != "" {
		o, err := otlp.New(e)
		if err != nil {
			return nil, stop, fmt.Errorf("--otlp-endpoint: %w", err)
		}
		queue("otlp", o.Export)
		stops = append(stops, func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			o.Shutdown(ctx)
		})
	}
	return sinks, stop, nil
}
