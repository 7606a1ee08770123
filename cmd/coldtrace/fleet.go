package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/coldtrace/coldtrace/advisor"
	"github.com/coldtrace/coldtrace/trace"
)

// formatFleet prints, for runs from more than one node class, how the classes differ;
// where their hot sets differ materially and -o is given, it also writes one manifest per
// class beside the one for all: FILE.class1.yaml, and so on.
func formatFleet(c *cli.Context, traces []*trace.Trace, opt advisor.Options) error {
	one := true
	for _, t := range traces[1:] {
		one = one && advisor.ClassOf(t.Host) == advisor.ClassOf(traces[0].Host)
	}
	if one {
		return nil // nothing to compare, and no second hot set to build
	}
	f, err := advisor.AnalyzeFleet(traces, opt)
	if err != nil || len(f.Classes) < 2 {
		return err
	}
	w := c.App.Writer
	fmt.Fprintf(w, "\nnode classes:\n")
	for i, cl := range f.Classes {
		fmt.Fprintf(w, " %d. %s: %d runs, median ready %.2f s, %d hot-set entries\n", i+1, cl.Class, cl.Runs, cl.Ready, len(cl.Manifest.Spec.HotSet))
	}
	for _, d := range f.Differences {
		fmt.Fprintf(w, "    differs: %s\n", d)
	}
	out := c.String("output")
	if !f.Split {
		fmt.Fprintf(w, "    one manifest serves every class: their hot sets share at least %.0f%% of their bytes\n", 100*advisor.MinOverlap)
		return nil
	}
	if out == "" {
		fmt.Fprintf(w, "    the hot sets differ: -o FILE writes one manifest per class\n")
		return nil
	}
	ext := filepath.Ext(out)
	for i, cl := range f.Classes {
		p := fmt.Sprintf("%s.class%d%s", strings.TrimSuffix(out, ext), i+1, ext)
		if err := cl.Manifest.WriteFile(p); err != nil {
			return err
		}
		fmt.Fprintf(w, "    wrote %s for %s\n", p, cl.Class)
	}
	return nil
}
