package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/advisor"
	"github.com/coldtrace/coldtrace/trace"
)

// writeRuns writes one trace per time to ready (a pull then an init, 1:4) under dir and
// returns their paths.
func writeRuns(t *testing.T, dir, side string, secs ...float64) []string {
	var paths []string
	for i, s := range secs {
		pull := time.Duration(s / 5 * float64(time.Second))
		end := time.Duration(s * float64(time.Second))
		tr := &trace.Trace{
			Format: trace.Format, Version: trace.Version, ID: fmt.Sprintf("%s%d", side, i),
			Workload: trace.Workload{Image: "registry.example/app:v1"},
			Outcome:  trace.OutcomeReady, Duration: end, Ready: &trace.Ready{At: end, Kind: "listen"},
			Phases: []trace.Phase{
				{Name: trace.PhasePull, End: pull, Busy: pull, Critical: pull},
				{Name: trace.PhaseInit, Start: pull, End: end, Busy: end - pull, Critical: end - pull},
			},
			Critical: []trace.Segment{{Phase: trace.PhasePull, End: pull}, {Phase: trace.PhaseInit, Start: pull, End: end}},
		}
		p := filepath.Join(dir, tr.ID+".json")
		if err := trace.WriteFile(p, tr); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// TestDiffExitStatus runs coldtrace diff on the case (3 warm runs against 3 cold
// ones, 16x) and its neighbours: each verdict has its exit status, its line and its JSON.
func TestDiffExitStatus(t *testing.T) {
	bin := build(t)
	warm := []float64{0.35, 0.36, 0.38}
	cases := []struct {
		name     string
		old, new []float64
		status   int
		verdict  advisor.Verdict
		line     string
	}{
		{"16x, 3 runs a side", warm, []float64{5.61, 5.70, 5.93}, 1, advisor.VerdictLarge, "large regression: every new run took at least 2x as long"},
		{"30%, 3 runs a side", warm, []float64{0.47, 0.48, 0.50}, 3, advisor.VerdictInconclusive, "inconclusive: with 3 old and 3 new runs the smallest p-value"},
		{"30%, 5 runs a side", append(warm, 0.36, 0.37), []float64{0.47, 0.48, 0.50, 0.49, 0.48}, 1, advisor.VerdictRegression, "significant regression"},
		{"same, 5 runs a side", append(warm, 0.36, 0.37), []float64{0.36, 0.35, 0.37, 0.38, 0.36}, 0, advisor.VerdictNone, "no significant regression"},
	}
	for i, c := range cases {
		dir := t.TempDir()
		args := append(append(writeRuns(t, dir, "old", c.old...), "--"), writeRuns(t, dir, "new", c.new...)...)
		for _, format := range []string{"text", "json"} {
			cmd := exec.Command(bin, append([]string{"diff", "--format", format}, args...)...)
			out, err := cmd.Output()
			status := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				status = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if status != c.status {
				t.Errorf("case %d %s (%s): exit %d, want %d\n%s", i, c.name, format, status, c.status, out)
			}
			if format == "text" {
				if !strings.Contains(string(out), "\n"+c.line) {
					t.Errorf("case %d %s: output lacks %q:\n%s", i, c.name, c.line, out)
				}
				continue
			}
			var d advisor.DiffReport
			if err := json.Unmarshal(out, &d); err != nil || d.Verdict != c.verdict || (c.status != 0 && c.verdict != advisor.VerdictRegression && d.Reason == "") {
				t.Errorf("case %d %s: JSON verdict %q, reason %q (%v), want %q with its reason", i, c.name, d.Verdict, d.Reason, err, c.verdict)
			}
		}
	}
	// Traces that cannot be compared are bad usage, not a regression.
	err := exec.Command(bin, "diff", "/nonexistent/a.json", "--", "/nonexistent/b.json").Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Errorf("diff of missing traces: %v, want exit 2", err)
	}
	if b, _ := exec.Command(bin, "diff", "--help").CombinedOutput(); !strings.Contains(string(b), "3  inconclusive") {
		t.Errorf("diff --help does not give the exit statuses:\n%s", b)
	}
}
