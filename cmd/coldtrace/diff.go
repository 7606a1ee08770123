package main

import (
	"fmt"
	"slices"

	"github.com/urfave/cli/v2"

	"github.com/coldtrace/coldtrace/advisor"
)

func diffCommand() *cli.Command {
	return &cli.Command{
		Name:      "diff",
		Usage:     "report per-phase regressions between two sets of traces; exits 1 on a regression, 3 when too few runs to tell",
		ArgsUsage: "OLD... -- NEW...",
		Description: `Compares each phase's share of the critical path, and the time to ready, between
the old and the new traces (for example two versions of an image) with a one-sided
Mann-Whitney U test. A regression is flagged when it is significant at --alpha (shared
by all the comparisons: Bonferroni) and the median grows by at least --min-change and
--min-seconds.

With few runs the test cannot conclude: the smallest p-value it can give with 3 runs a
side is 0.05 (1 ordering in 20), never below the level of one comparison. The report
then says "inconclusive" and how many runs would do; give at least 5 runs a side (more
at a smaller --alpha). A change so large that every new run took --large-factor times as
long as every old run (with 3 runs a side or more) is still a "large regression".

Exit status, for CI to gate on:
   0  no regression, and the runs were enough to find one
   1  a regression: significant, or large
   2  bad usage or unreadable traces
   3  inconclusive: too few runs for any difference to be significant, and none large

Example:
   coldtrace diff --alpha 0.01 old/*.json.gz -- new/*.json.gz`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "format", Value: "text", Usage: "output format: text or json"},
			&cli.Float64Flag{Name: "alpha", Value: 0.05, Usage: "significance level over all comparisons"},
			&cli.Float64Flag{Name: "min-change", Value: 0.10, Usage: "smallest relative growth of the median that counts"},
			&cli.Float64Flag{Name: "min-seconds", Value: 0.05, Usage: "smallest growth of the median in seconds that counts"},
			&cli.Float64Flag{Name: "large-factor", Value: 2, Usage: "a large regression: every new run took at least this many times as long as every old run"},
			&cli.BoolFlag{Name: "force", Usage: "accept traces of different workloads within one side"},
			sinceFlag,
		},
		Action: diff,
	}
}

func diff(c *cli.Context) error {
	args, err := interspersed(c)
	if err != nil {
		return err
	}
	sep := slices.Index(args, "--")
	if sep < 0 {
		return cli.Exit("separate the old traces from the new ones with --: coldtrace diff OLD... -- NEW...", 2)
	}
	// Status 1 is the gate's "regression": traces that cannot be compared are bad usage.
	old, err := readTraces(c, args[:sep])
	if err != nil {
		return usage(err)
	}
	newer, err := readTraces(c, args[sep+1:])
	if err != nil {
		return usage(err)
	}
	d, err := advisor.Diff(old, newer, advisor.DiffOptions{
		Alpha: c.Float64("alpha"), MinChange: c.Float64("min-change"), MinSeconds: c.Float64("min-seconds"),
		LargeFactor: c.Float64("large-factor"), Force: c.Bool("force"),
	})
	if err != nil {
		return usage(err)
	}
	switch c.String("format") {
	case "text":
		err = d.Format(c.App.Writer)
	case "json":
		err = d.WriteJSON(c.App.Writer)
	default:
		return cli.Exit(fmt.Sprintf("unknown --format %q: text or json", c.String("format")), 2)
	}
	if err != nil {
		return err
	}
	switch {
	case d.Regressed():
		return cli.Exit("", 1)
	case d.Verdict == advisor.VerdictInconclusive:
		return cli.Exit("", 3)
	}
	return nil
}

// usage makes err exit with status 2.
func usage(err error) error { return cli.Exit(err.Error(), 2) }
