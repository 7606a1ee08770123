package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// cacheAgent is the cache agent's work: what it pre-pulled, staged and warmed.
func cacheAgent() *dashboard.DashboardBuilder {
	return board("coldtrace-cache", "coldtrace / Cache agent",
		"The cache agent applying prefetch manifests: pre-pulls, staged artifacts, page-cache warming, hits, fallbacks, refusals, what stays resident.").
		WithVariable(labelVar("namespace", "Tenant", `coldtrace_cache_items_total{node=~"$node"}`, "tenant", true)).
		WithRow(dashboard.NewRowBuilder("Actions")).
		WithPanel(graph("Actions by result",
			"Images pre-pulled, artifacts staged and files warmed, by result: done (moved now), present (a hit), refused, failed.", "short",
			query(`sum by (action, result) (increase(coldtrace_cache_items_total{`+tenantSel+`}[$__rate_interval]))`, "{{action}} {{result}}")).
			DrawStyle(common.GraphDrawStyleBars).FillOpacity(80)).
		WithPanel(graph("Bytes moved", "Bytes per second pre-pulled from registries, staged from origins and warmed into the page cache.", "Bps",
			query(`sum by (action) (rate(coldtrace_cache_bytes_total{`+tenantSel+`}[$__rate_interval]))`, "{{action}}"))).
		WithPanel(graph("Hit ratio", "Share of the items each action found already there.", "percentunit",
			query(`sum by (action) (rate(coldtrace_cache_items_total{`+tenantSel+`, result="present"}[$__rate_interval])) / sum by (action) (rate(coldtrace_cache_items_total{`+tenantSel+`}[$__rate_interval]))`, "{{action}}"))).
		WithPanel(graph("Action duration p90", "p90 time per image pre-pull, artifact staging and file warming.", "s",
			query(quantile(0.9, "coldtrace_cache_action_duration_seconds", nodeSel, "action", "$__rate_interval"), "{{action}}"))).
		WithRow(dashboard.NewRowBuilder("Trouble and result")).
		WithPanel(graph("Fallbacks", "Cached entries found missing or corrupt and fetched again from their origin, by reason.", "short",
			query(`sum by (tenant, reason) (increase(coldtrace_cache_fallbacks_total{`+tenantSel+`}[$__rate_interval]))`, "{{tenant}} {{reason}}")).
			DrawStyle(common.GraphDrawStyleBars).FillOpacity(80)).
		WithPanel(graph("Refusals", "Manifests and entries refused, by reason: unreadable manifest, other tenant, path outside the roots, changed file, unusable entry.", "short",
			query(`sum by (tenant, reason) (increase(coldtrace_cache_refusals_total{`+tenantSel+`}[$__rate_interval]))`, "{{tenant}} {{reason}}")).
			DrawStyle(common.GraphDrawStyleBars).FillOpacity(80)).
		WithPanel(bars("Hot set resident", "Share of each manifest's hot set in the page cache after its last warm (mincore), lowest node first.", "percentunit",
			instant(`min by (tenant, manifest) (coldtrace_cache_hotset_resident_ratio{`+tenantSel+`})`, "{{tenant}}/{{manifest}}")).
			Min(0).Max(1))
}
