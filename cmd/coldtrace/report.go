package main

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/coldtrace/coldtrace/report"
	"github.com/coldtrace/coldtrace/trace"
)

func reportCommand() *cli.Command {
	return &cli.Command{
		Name:      "report",
		Usage:     "show a recorded trace: a table, JSON, an SVG or HTML waterfall, or Chrome/Perfetto trace events",
		ArgsUsage: "TRACE",
		Description: `report reads a trace written by record and shows its phase breakdown.

Formats:
  table   phases with their spans, critical-path share, bytes and throughput; top files,
          network peers, GPU initialisation and missing probes (the default)
  json    the whole trace, indented
  svg     a waterfall picture of the phases, files, connections and GPU calls
  html    one self-contained page with the waterfall and the tables
  chrome  trace-event JSON: open it at ui.perfetto.dev or chrome://tracing
  pprof   a gzipped pprof profile (write it with -o): stacks workload;phase;layer or
          origin;file, sample types critical_path (nanoseconds, adding up to the time to
          ready) and bytes; open it with go tool pprof -http or any flame-graph viewer
  otlp-json
          the cold start as OpenTelemetry spans, one OTLP/JSON export request: POST it to
          an OTLP/HTTP receiver's /v1/traces (Content-Type: application/json)

Examples:
  coldtrace report trace.json.gz
  coldtrace report trace.json.gz --format html -o trace.html
  coldtrace report trace.json.gz --format pprof -o start.pb.gz
  coldtrace report trace.json.gz --format otlp-json | curl -H 'Content-Type: application/json' --data-binary @- http://localhost:4318/v1/traces`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Value: "table", Usage: "table, json, svg, html, chrome, pprof or otlp-json"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write to `FILE` instead of standard output"},
		},
		Action: func(c *cli.Context) error {
			args, err := interspersed(c)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return fmt.Errorf("report takes one trace file, got %d arguments", len(args))
			}
			t, err := trace.ReadFile(args[0])
			if err != nil {
				return err
			}
			var w io.Writer = os.Stdout
			if p := c.String("output"); p != "" {
				f, err := os.Create(p)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			return report.Render(w, t, c.String("format"))
		},
	}
}
