package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/coldtrace/coldtrace/advisor"
	"github.com/coldtrace/coldtrace/nodeapi"
	"github.com/coldtrace/coldtrace/trace"
)

func adviseCommand() *cli.Command {
	return &cli.Command{
		Name:      "advise",
		Usage:     "recommend what to change, with estimated savings, and write a prefetch manifest",
		ArgsUsage: "TRACE|URL...",
		Description: `Reads cold-start traces of one workload (files, or trace stores: file://DIR, s3://BUCKET/PREFIX) (several runs give intervals) and prints
the phase statistics, each phase's gap to the host's limits, contention on the link
(the image pull with the model download, and with other image pulls on the node: how
long, which images, the pull's share of the link and what it would gain alone), what-if
predictions and recommendations ranked by the seconds they save, each with its evidence
and the action to take.

-o writes the prefetch manifest (YAML, or JSON for a .json name) that "coldtrace warm"
and the agent consume; --budget bounds its hot set. --export writes the hot set in the
prefetch-list format of a lazy-pull snapshotter.

Example:
   coldtrace advise run1.json.gz run2.json.gz run3.json.gz -o manifest.yaml --budget 10GiB
   coldtrace advise runs/*.json.gz --export estargz --export-out record.json
   coldtrace advise 's3://bucket/traces/workload/REPO?endpoint=http://minio:9000&path_style=true' --since 24h

   coldtrace advise --from 'http://node1:9470/?namespace=prod&pod=llm-0' --token-file token -o manifest.yaml`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the prefetch manifest to `FILE` (.yaml or .json)"},
			&cli.StringFlag{Name: "budget", Usage: "bound the manifest's hot set to `BYTES` (10GiB, 500MB, 4096)"},
			&cli.StringFlag{Name: "format", Value: "text", Usage: "output format: text or json"},
			&cli.StringFlag{Name: "export", Usage: "export the hot set as `FORMAT`: " + strings.Join(advisor.ExportFormats, ", ")},
			&cli.StringFlag{Name: "export-out", Usage: "write the export to `FILE` (- for standard output)"},
			&cli.BoolFlag{Name: "force", Usage: "accept traces of different workloads together"},
			&cli.Float64Flag{Name: "link-gbps", Usage: "network link speed in Gbit/s (default: from the traces' hosts, else 10)"},
			&cli.StringFlag{Name: "disk-rate", Usage: "local disk read throughput in `BYTES` per second (default 1GB, 150MB for spinning disks)"},
			&cli.StringFlag{Name: "name", Usage: "the manifest's metadata.name (default: from the workload)"},
			&cli.StringFlag{Name: "tenant", Usage: "the manifest's tenant (a Kubernetes namespace name)"},
			&cli.Uint64Flag{Name: "seed", Usage: "seed of the bootstrap intervals"},
			&cli.StringSliceFlag{Name: "from", Usage: "also read the traces that an agent's API at `URL` lists (repeatable): http://NODE:9470/?namespace=NS&pod=POD&workload=IMAGE&since=24h, or one trace at http://NODE:9470/api/v1/traces/ID"},
			&cli.StringFlag{Name: "token-file", Usage: "the agents' API token is in `FILE` (their Secret's token)"},
			sinceFlag,
			&cli.StringFlag{Name: "push", Usage: "attach the manifest to the image `REGISTRY/REPO@sha256:DIGEST` in its registry (see coldtrace manifest)"},
		},
		Action: advise,
	}
}

func advise(c *cli.Context) error {
	args, err := interspersed(c)
	if err != nil {
		return err
	}
	traces, err := gatherTraces(c, args)
	if err != nil {
		return err
	}
	opt := advisor.Options{Force: c.Bool("force"), Name: c.String("name"), Tenant: c.String("tenant"), Seed: c.Uint64("seed")}
	opt.Limits.Link = c.Float64("link-gbps") * 1e9 / 8
	if opt.Budget, err = flagBytes(c, "budget"); err != nil {
		return err
	}
	disk, err := flagBytes(c, "disk-rate")
	if err != nil {
		return err
	}
	opt.Limits.Disk = float64(disk)
	if c.String("export") != "" && c.String("export-out") == "" {
		return cli.Exit("--export needs --export-out FILE (- for standard output)", 2)
	}

	a, err := advisor.Analyze(traces, opt)
	if err != nil {
		return err
	}
	switch c.String("format") {
	case "text":
		err = a.Format(c.App.Writer)
		if err == nil {
			err = formatFleet(c, traces, opt)
		}
	case "json":
		err = a.WriteJSON(c.App.Writer)
	default:
		return cli.Exit(fmt.Sprintf("unknown --format %q: text or json", c.String("format")), 2)
	}
	if err != nil || (c.String("output") == "" && c.String("export") == "" && c.String("push") == "") {
		return err
	}

	m, err := advisor.BuildManifest(traces, opt)
	if err != nil {
		return err
	}
	if out := c.String("output"); out != "" {
		if err := m.WriteFile(out); err != nil {
			return err
		}
		fmt.Fprintf(c.App.ErrWriter, "wrote %s: %d hot-set entries, %d artifacts, %d images\n", out, len(m.Spec.HotSet), len(m.Spec.Artifacts), len(m.Spec.Images))
	}
	if image := c.String("push"); image != "" {
		if err := pushManifest(c, m, image); err != nil {
			return err
		}
	}
	if f := c.String("export"); f != "" {
		return writeTo(c.String("export-out"), c.App.Writer, func(w io.Writer) error {
			left, err := advisor.Export(w, m, f)
			for _, l := range left {
				fmt.Fprintf(c.App.ErrWriter, "coldtrace: export %s: left out %s\n", f, l)
			}
			return err
		})
	}
	return nil
}

// interspersed returns the command's arguments after parsing the flags among them:
// urfave/cli v2 stops at the first argument, and "advise TRACE... -o FILE" reads
// naturally. A "--" is kept, for diff to split on. Each flag found among the arguments is
// handed to the command's own flag, value by value in the order given, so that a
// repeatable flag adds every value (its text form, "[a b]", would be one value).
func interspersed(c *cli.Context) ([]string, error) {
	set := flag.NewFlagSet(c.Command.Name, flag.ContinueOnError)
	set.SetOutput(io.Discard)
	var given []occurrence
	for _, f := range c.Command.Flags {
		// The flag's own value, in a scratch set, says whether it takes no argument.
		scratch := flag.NewFlagSet("", flag.ContinueOnError)
		if err := f.Apply(scratch); err != nil {
			return nil, err
		}
		b, ok := scratch.Lookup(f.Names()[0]).Value.(interface{ IsBoolFlag() bool })
		for _, n := range f.Names() {
			set.Var(&occurrences{name: f.Names()[0], isBool: ok && b.IsBoolFlag(), to: &given}, n, "")
		}
	}
	var out []string
	for args := c.Args().Slice(); len(args) > 0; {
		if args[0] == "--" || !strings.HasPrefix(args[0], "-") || args[0] == "-" {
			out, args = append(out, args[0]), args[1:]
			continue
		}
		if err := set.Parse(args); err != nil {
			return nil, cli.Exit(err.Error(), 2)
		}
		rest := set.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			out = append(out, "--") // Parse swallowed the separator after the flags
		}
		args = rest
	}
	for _, g := range given {
		if err := c.Set(g.name, g.value); err != nil {
			return nil, cli.Exit(fmt.Sprintf("invalid value %q for flag --%s: %v", g.value, g.name, err), 2)
		}
	}
	return out, nil
}

// occurrence is one flag given among the arguments, by its canonical name.
type occurrence struct{ name, value string }

// occurrences is a flag.Value that appends each value given to the flag to a list.
type occurrences struct {
	name   string
	isBool bool
	to     *[]occurrence
}

func (o *occurrences) Set(v string) error {
	*o.to = append(*o.to, occurrence{o.name, v})
	return nil
}

func (o *occurrences) String() string   { return "" }
func (o *occurrences) IsBoolFlag() bool { return o.isBool }

// gatherTraces reads the traces in the files at paths and at the agents' APIs of --from.
func gatherTraces(c *cli.Context, paths []string) ([]*trace.Trace, error) {
	from := c.StringSlice("from")
	if len(from) == 0 {
		return readTraces(c, paths)
	}
	var out []*trace.Trace
	if len(paths) > 0 {
		var err error
		if out, err = readTraces(c, paths); err != nil {
			return nil, err
		}
	}
	var token []byte
	if f := c.String("token-file"); f != "" {
		var err error
		if token, err = os.ReadFile(f); err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
	}
	client := &http.Client{Timeout: time.Minute}
	for _, u := range from {
		ts, err := nodeapi.Fetch(c.Context, client, u, strings.TrimSpace(string(token)))
		if err != nil {
			return nil, fmt.Errorf("--from: %w", err)
		}
		fmt.Fprintf(c.App.ErrWriter, "coldtrace: %d traces from %s\n", len(ts), u)
		out = append(out, ts...)
	}
	if len(out) == 0 {
		return nil, cli.Exit("no traces given: the agents listed none", 2)
	}
	return out, nil
}

// writeTo writes through write to the file at path, or to stdout for "-".
func writeTo(path string, stdout io.Writer, write func(io.Writer) error) error {
	if path == "-" {
		return write(stdout)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		// No partial or empty file: overlaybd, for one, takes an empty list file as the
		// order to record a trace into it.
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

func flagBytes(c *cli.Context, name string) (int64, error) {
	if c.String(name) == "" {
		return 0, nil
	}
	n, err := parseBytes(c.String(name))
	if err != nil {
		return 0, cli.Exit(fmt.Sprintf("--%s: %v", name, err), 2)
	}
	return n, nil
}

var byteUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

// parseBytes reads a byte count with an optional decimal (kB, MB, GB, TB) or binary
// (KiB, MiB, GiB, TiB) unit: "10GiB", "1.5GB", "4096".
func parseBytes(s string) (int64, error) {
	num := strings.TrimRight(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ")
	unit, ok := byteUnits[strings.ToLower(strings.TrimSpace(s[len(num):]))]
	v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if !ok || err != nil || v < 0 || v*unit >= 1<<63 {
		return 0, fmt.Errorf("%q is not a byte count (like 10GiB, 500MB or 4096)", s)
	}
	return int64(v * unit), nil
}
