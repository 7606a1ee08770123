package dashboards

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// fleet is the cold starts of every selected workload on every selected node.
func fleet() *dashboard.DashboardBuilder {
	return board("coldtrace-fleet", "coldtrace / Fleet cold starts",
		"Where the cold starts of the fleet's containers go: time to ready, phases, pulls, contention, failures.").
		WithVariable(namespaceVar()).
		WithVariable(workloadVar(true)).
		WithRow(dashboard.NewRowBuilder("Overview")).
		WithPanel(startsByOutcome()).
		WithPanel(single("Ready share", "The share of the cold starts in the range that got ready.", "percentunit",
			instant(fmt.Sprintf(`sum(increase(coldtrace_cold_starts_total{%s, outcome="ready"}[$__range])) / sum(increase(coldtrace_cold_starts_total{%s}[$__range]))`, sel, sel), "ready"))).
		WithPanel(bars("Time to ready by workload (over the range)",
			"p50, p90 and p99 of the time from pull or create to ready, per workload, over the dashboard's range.", "s",
			instant(quantile(0.5, "coldtrace_time_to_ready_seconds", sel, "workload", "$__range"), "{{workload}} p50"),
			instant(quantile(0.9, "coldtrace_time_to_ready_seconds", sel, "workload", "$__range"), "{{workload}} p90"),
			instant(quantile(0.99, "coldtrace_time_to_ready_seconds", sel, "workload", "$__range"), "{{workload}} p99"))).
		WithPanel(graph("Time to ready", "p50, p90 and p99 of the time to ready of the selected workloads over time.", "s",
			query(quantile(0.5, "coldtrace_time_to_ready_seconds", sel, "", "$__rate_interval"), "p50"),
			query(quantile(0.9, "coldtrace_time_to_ready_seconds", sel, "", "$__rate_interval"), "p90"),
			query(quantile(0.99, "coldtrace_time_to_ready_seconds", sel, "", "$__rate_interval"), "p99"))).
		WithRow(dashboard.NewRowBuilder("Where the time goes")).
		WithPanel(phaseBreakdown()).
		WithPanel(graph("Pull throughput by workload",
			"Image bytes received per second of pulling: compare with the node's link speed; far below it, the registry or a shared link limits the pull.", "Bps",
			query(`sum by (workload) (rate(coldtrace_pull_bytes_total{`+sel+`}[$__rate_interval])) / sum by (workload) (rate(coldtrace_pull_duration_seconds_sum{`+sel+`}[$__rate_interval]))`, "{{workload}}"))).
		WithPanel(graph("Pull contention per start",
			"Seconds per cold start during which the image pull shared the link: with other pulls on the node, or with the workload's own model download.", "s",
			query(perStart(`sum by (with) (rate(coldtrace_pull_contention_seconds_total{`+sel+`}[$__rate_interval]))`, ""), "with {{with}}"))).
		WithPanel(failures())
}

// startsByOutcome counts the cold starts in the range by how they ended.
func startsByOutcome() *stat.PanelBuilder {
	return single("Cold starts", "Cold starts in the range by how they ended: ready, exited before ready, timeout, failed, interrupted.", "short",
		instant(`sum by (outcome) (increase(coldtrace_cold_starts_total{`+sel+`}[$__range]))`, "{{outcome}}")).Span(12)
}

// phaseBreakdown stacks the critical path's phases: the mean seconds per start that each
// phase held the start up; the stack is the mean time to the end of the start.
func phaseBreakdown() *timeseries.PanelBuilder {
	return stacked("Critical path by phase (seconds per start)",
		"Mean seconds per cold start that each phase held the start up (critical path): the stack adds up to the mean duration.", "s",
		query(perStart(`sum by (phase) (rate(coldtrace_phase_critical_path_seconds_total{`+sel+`}[$__rate_interval]))`, ""), "{{phase}}"))
}

// failures counts the starts that did not get ready, by workload and outcome.
func failures() *timeseries.PanelBuilder {
	return graph("Failures and timeouts", "Cold starts that did not get ready, by workload and outcome.", "short",
		query(`sum by (workload, outcome) (increase(coldtrace_cold_starts_total{`+sel+`, outcome!="ready"}[$__rate_interval]))`, "{{workload}} {{outcome}}")).
		DrawStyle(common.GraphDrawStyleBars).FillOpacity(80)
}
