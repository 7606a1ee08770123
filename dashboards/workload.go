package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// workload is one workload's cold starts over time, with its deploys.
func workload() *dashboard.DashboardBuilder {
	return board("coldtrace-workload", "coldtrace / One workload",
		"One workload's cold starts: phases over time with its deploys, cold against warmed starts, bytes read against bytes pulled, GPU initialisation.").
		WithVariable(namespaceVar()).
		WithVariable(workloadVar(false)).
		Annotation(dashboard.NewAnnotationQueryBuilder().
			Name("Deploys").
			Datasource(ds).
			Enable(true).
			IconColor("#5794F2").
			// The series of a digest holds the time of its first start; it is returned for
			// the ten minutes after, which Grafana draws as one region from the deploy.
			Expr(`max by (namespace, workload, digest) (coldtrace_image_first_start_timestamp_seconds{` + sel + `}) > time() - 600`).
			Step("60s").
			TitleFormat("{{workload}} deployed").
			TextFormat("image {{digest}}").
			TagKeys("namespace,workload")).
		WithRow(dashboard.NewRowBuilder("Phases")).
		WithPanel(startsByOutcome()).
		WithPanel(single("Time to ready p50", "Median time to ready over the range, by whether the start pulled its image.", "s",
			instant(quantile(0.5, "coldtrace_time_to_ready_seconds", sel, "image", "$__range"), "{{image}}")).Span(12)).
		WithPanel(phaseBreakdown()).
		WithPanel(graph("Busy seconds by phase (per start)",
			"Mean seconds per cold start each phase was active; phases overlap, so these add up to more than the duration.", "s",
			query(perStart(`sum by (phase) (rate(coldtrace_phase_busy_seconds_total{`+sel+`}[$__rate_interval]))`, ""), "{{phase}}"))).
		WithRow(dashboard.NewRowBuilder("Cold and warmed")).
		WithPanel(graph("Cold vs warmed starts: time to ready",
			"p50 and p90 time to ready of the starts that pulled their image (cold) and of those that found it on the node (pre-pulled or cached).", "s",
			query(quantile(0.5, "coldtrace_time_to_ready_seconds", sel, "image", "$__rate_interval"), "{{image}} p50"),
			query(quantile(0.9, "coldtrace_time_to_ready_seconds", sel, "image", "$__rate_interval"), "{{image}} p90"))).
		WithPanel(graph("Bytes per start: read vs pulled",
			"Mean bytes per cold start pulled from the registry, downloaded from model origins, read from files by kind, and read from storage on page-cache misses. Far more pulled than read: a lazy-pull snapshotter or a smaller image helps.", "bytes",
			query(perStart(`sum(rate(coldtrace_pull_bytes_total{`+sel+`}[$__rate_interval]))`, ""), "pulled"),
			query(perStart(`sum(rate(coldtrace_model_download_bytes_total{`+sel+`}[$__rate_interval]))`, ""), "downloaded"),
			query(perStart(`sum by (kind) (rate(coldtrace_file_read_bytes_total{`+sel+`}[$__rate_interval]))`, ""), "read: {{kind}}"),
			query(perStart(`sum(rate(coldtrace_page_cache_miss_bytes_total{`+sel+`}[$__rate_interval]))`, ""), "page-cache misses"))).
		WithRow(dashboard.NewRowBuilder("Pull and GPU")).
		WithPanel(graph("Pull duration", "p50 and p90 of the image pull's duration, request to last layer.", "s",
			query(quantile(0.5, "coldtrace_pull_duration_seconds", sel, "", "$__rate_interval"), "p50"),
			query(quantile(0.9, "coldtrace_pull_duration_seconds", sel, "", "$__rate_interval"), "p90"))).
		WithPanel(graph("GPU init", "p50 and p90 of the GPU phase (first device open to the last driver call) of the starts that used an accelerator.", "s",
			query(quantile(0.5, "coldtrace_gpu_init_duration_seconds", sel, "", "$__rate_interval"), "p50"),
			query(quantile(0.9, "coldtrace_gpu_init_duration_seconds", sel, "", "$__rate_interval"), "p90")))
}
