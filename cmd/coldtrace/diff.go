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
		Usage:     "report per-phase regressions between two sets of traces; exits 1 on a significant one",
		ArgsUsage: "OLD... -- NEW...",
		Description: `Compares each phase's share of the critical path, and the time to ready, between
the old and the new traces (for example two versions of an image) with a one-sided
Mann-Whitney U test. A regression is flagged when it is significant at --alpha (shared
by all the comparisons: Bonferroni) and the median grows by at least --min-change and
--min-seconds. The exit status is 1 when something regressed, so that CI can gate on
it. Give at least 5 runs a side: with fewer, no difference can be significant.

Example:
   coldtrace diff --alpha 0.01 old/*.json.gz -- new/*.json.gz`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "format", Value: "text", Usage: "output format: text or json"},
			&cli.Float64Flag{Name: "alpha", Value: 0.05, Usage: "significance level over all comparisons"},
			&cli.Float64Flag{Name: "min-change", Value: 0.10, Usage: "smallest relative growth of the median that counts"},
			&cli.Float64Flag{Name: "min-seconds", Value: 0.05, Usage: "smallest growth of the median in seconds that counts"},
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
	old, err := readTraces(c, args[:sep])
	if err != nil {
		return err
	}
	newer, err := readTraces(c, args[sep+1:])
	if err != nil {
		return err
	}
	d, err := advisor.Diff(old, newer, advisor.DiffOptions{
		Alpha: c.Float64("alpha"), MinChange: c.Float64("min-change"), MinSeconds: c.Float64("min-seconds"), Force: c.Bool("force"),
	})
	if err != nil {
		return err
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
	if d.Regressed() {
		return cli.Exit("", 1)
	}
	return nil
}
