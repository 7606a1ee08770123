// Package dashboards builds coldtrace's Grafana dashboards from Go with the Grafana
// Foundation SDK. `make dashboards` writes them as JSON next to this file (the files
// users import); `make check-dashboards` fails when the committed JSON is stale.
// docs/dashboards.md says what each panel answers.
//
// Every query selects the agent's series with the variables $namespace, $workload and
// $node (the node is a target label that the scrape configuration sets, see
// docs/metrics.md); multi-value variables match every value with ".*", so series without
// such a label match too.
package dashboards

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/grafana/grafana-foundation-sdk/go/bargauge"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// Board is one dashboard and the file it is written to.
type Board struct {
	File  string
	Build func() *dashboard.DashboardBuilder
}

// All lists the dashboards.
func All() []Board {
	return []Board{
		{"coldtrace-fleet.json", fleet},
		{"coldtrace-workload.json", workload},
		{"coldtrace-cache.json", cacheAgent},
		{"coldtrace-agent.json", agentHealth},
	}
}

// Write writes every dashboard's JSON into dir.
func Write(dir string) error {
	for _, b := range All() {
		d, err := b.Build().Build()
		if err != nil {
			return fmt.Errorf("%s: %w", b.File, err)
		}
		// Panel ids in layout order: Grafana links to a panel by its id.
		for i, p := range d.Panels {
			id := uint32(i + 1)
			if p.Panel != nil {
				p.Panel.Id = &id
			} else if p.RowPanel != nil {
				p.RowPanel.Id = id
			}
		}
		var out bytes.Buffer
		enc := json.NewEncoder(&out)
		enc.SetEscapeHTML(false) // PromQL's > and & as they are
		enc.SetIndent("", "  ")
		if err := enc.Encode(d); err != nil {
			return fmt.Errorf("%s: %w", b.File, err)
		}
		if err := os.WriteFile(filepath.Join(dir, b.File), out.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ds is the datasource every panel and variable uses: the $datasource variable's choice.
var ds = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

// Selectors of the variables, for the per-workload, per-tenant and per-node metrics.
const (
	sel       = `namespace=~"$namespace", workload=~"$workload", node=~"$node"`
	tenantSel = `tenant=~"$namespace", node=~"$node"`
	nodeSel   = `node=~"$node"`
)

// board starts a dashboard with the datasource variable and the node variable.
func board(uid, title, description string) *dashboard.DashboardBuilder {
	return dashboard.NewDashboardBuilder(title).
		Uid(uid).
		Description(description).
		Tags([]string{"coldtrace"}).
		Time("now-6h", "now").
		Refresh("1m").
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").Label("Data source").Type("prometheus")).
		WithVariable(labelVar("node", "Node", "coldtrace_build_info", "node", true))
}

// labelVar is a variable over the values of a label of a metric's series.
func labelVar(name, label, metric, labelName string, all bool) *dashboard.QueryVariableBuilder {
	q := fmt.Sprintf("label_values(%s, %s)", metric, labelName)
	v := dashboard.NewQueryVariableBuilder(name).
		Label(label).
		Datasource(ds).
		Query(dashboard.StringOrMap{String: &q}).
		Definition(q).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
		Sort(dashboard.VariableSortAlphabeticalAsc)
	if all {
		v = v.Multi(true).IncludeAll(true).AllValue(".*")
	}
	return v
}

// namespaceVar and workloadVar select the workloads of the per-trace metrics.
func namespaceVar() *dashboard.QueryVariableBuilder {
	return labelVar("namespace", "Namespace", `coldtrace_cold_starts_total{node=~"$node"}`, "namespace", true)
}

func workloadVar(all bool) *dashboard.QueryVariableBuilder {
	return labelVar("workload", "Workload", `coldtrace_cold_starts_total{namespace=~"$namespace", node=~"$node"}`, "workload", all)
}

// query is one PromQL target.
func query(expr, legend string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().Datasource(ds).Expr(expr).LegendFormat(legend)
}

// instant is a target evaluated once, at the end of the dashboard's range.
func instant(expr, legend string) *prometheus.DataqueryBuilder {
	return query(expr, legend).Instant().Format(prometheus.PromQueryFormatTimeSeries)
}

// graph is a time series panel.
func graph(title, description, unit string, targets ...*prometheus.DataqueryBuilder) *timeseries.PanelBuilder {
	p := timeseries.NewPanelBuilder().Title(title).Description(description).Datasource(ds).Unit(unit).
		Height(8).Span(12).FillOpacity(10).
		Legend(common.NewVizLegendOptionsBuilder().DisplayMode(common.LegendDisplayModeTable).Placement(common.LegendPlacementBottom).ShowLegend(true).Calcs([]string{"mean", "max"}))
	for i, t := range targets {
		p = p.WithTarget(t.RefId(refID(i)))
	}
	return p
}

// stacked is a graph whose series add up.
func stacked(title, description, unit string, targets ...*prometheus.DataqueryBuilder) *timeseries.PanelBuilder {
	return graph(title, description, unit, targets...).FillOpacity(60).
		Stacking(common.NewStackingConfigBuilder().Mode(common.StackingModeNormal))
}

// bars is a horizontal bar gauge of instant values, one bar per series.
func bars(title, description, unit string, targets ...*prometheus.DataqueryBuilder) *bargauge.PanelBuilder {
	p := bargauge.NewPanelBuilder().Title(title).Description(description).Datasource(ds).Unit(unit).
		Height(8).Span(12).Orientation(common.VizOrientationHorizontal).DisplayMode(common.BarGaugeDisplayModeGradient).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Values(false))
	for i, t := range targets {
		p = p.WithTarget(t.RefId(refID(i)))
	}
	return p
}

// single is a stat panel of instant values.
func single(title, description, unit string, targets ...*prometheus.DataqueryBuilder) *stat.PanelBuilder {
	p := stat.NewPanelBuilder().Title(title).Description(description).Datasource(ds).Unit(unit).
		Height(5).Span(6).GraphMode(common.BigValueGraphModeNone).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Values(false))
	for i, t := range targets {
		p = p.WithTarget(t.RefId(refID(i)))
	}
	return p
}

// perStart divides a sum of counters by the cold starts in the same window and
// selection: a mean per start. by groups both sides.
func perStart(expr, by string) string {
	return fmt.Sprintf(`%s / on (%s) group_left () sum by (%s) (rate(coldtrace_cold_starts_total{%s}[$__rate_interval]))`, expr, by, by, sel)
}

// quantile is a quantile of a histogram's observations in the window, by the labels by
// (with le).
func quantile(q float64, metric, selector, by, window string) string {
	return fmt.Sprintf(`histogram_quantile(%g, sum by (%s) (rate(%s_bucket{%s}[%s])))`, q, join(by, "le"), metric, selector, window)
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + ", " + b
}

// refID names a panel's i-th target as Grafana does: A, B, C...
func refID(i int) string { return string(rune('A' + i)) }
