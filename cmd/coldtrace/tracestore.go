package main

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/coldtrace/coldtrace/trace"
	"github.com/coldtrace/coldtrace/tracestore"
)

func traceStoreFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "trace-store", Usage: "keep traces at `URL`: file://DIR (default: DATA_DIR/traces) or s3://BUCKET/PREFIX[?endpoint=URL&region=NAME&path_style=true] (AWS credential chain), through a spool in DATA_DIR/spool"},
		&cli.StringFlag{Name: "trace-spool", Value: "1GiB", Usage: "bound the spool of traces not yet uploaded to `BYTES`; the oldest are dropped first"},
		&cli.StringFlag{Name: "node-name", EnvVars: []string{"NODE_NAME"}, Usage: "the node's `NAME` in the keys of uploaded traces (default: the host name)"},
	}
}

// openTraceStore opens the agent's trace store, a directory bounded by opts (DATA_DIR/traces
// by default) or a bucket behind a spool, and the function that closes it.
func openTraceStore(c *cli.Context, opts tracestore.Options) (tracestore.Store, func(), error) {
	u := c.String("trace-store")
	switch {
	case u == "" || strings.HasPrefix(u, "file://"):
		dir := cmp.Or(strings.TrimPrefix(u, "file://"), filepath.Join(c.String("data-dir"), "traces"))
		d, err := tracestore.OpenDir(dir, opts)
		return d, func() {}, err
	case !strings.HasPrefix(u, "s3://"):
		return nil, nil, cli.Exit(fmt.Sprintf("--trace-store %q: file://DIR or s3://BUCKET/PREFIX", u), 2)
	}
	spool, err := flagBytes(c, "trace-spool")
	if err != nil {
		return nil, nil, err
	}
	host, _ := os.Hostname()
	b, err := tracestore.OpenBucket(c.Context, u, cmp.Or(c.String("node-name"), host))
	if err != nil {
		return nil, nil, err
	}
	s, err := tracestore.NewSpooled(b, tracestore.SpoolOptions{Dir: filepath.Join(c.String("data-dir"), "spool"),
		MaxBytes: spool, Registerer: opts.Registerer, Log: opts.Log})
	if err != nil {
		return nil, nil, err
	}
	return s, func() { s.Close() }, nil
}

var sinceFlag = &cli.DurationFlag{Name: "since", Usage: "read only the traces that started in the last `DURATION` from trace stores (URL arguments)"}

// readTraces reads trace files, and the traces of trace stores (file://DIR,
// s3://BUCKET/PREFIX) that started within --since, one at a time.
func readTraces(c *cli.Context, args []string) ([]*trace.Trace, error) {
	if len(args) == 0 {
		return nil, cli.Exit("no traces given", 2)
	}
	var f tracestore.Filter
	if d := c.Duration("since"); d > 0 {
		f.Since = time.Now().Add(-d)
	}
	var out []*trace.Trace
	for _, a := range args {
		if !tracestore.IsURL(a) {
			t, err := trace.ReadFile(a)
			if err != nil {
				return nil, err
			}
			out = append(out, t)
			continue
		}
		n := len(out)
		err := tracestore.Each(c.Context, a, f, func(t *trace.Trace) error {
			out = append(out, t)
			return nil
		})
		if err != nil {
			return nil, err
		}
		if len(out) == n {
			return nil, fmt.Errorf("%s: no traces there (since %v)", a, c.Duration("since"))
		}
	}
	return out, nil
}
