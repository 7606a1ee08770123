package dashboards

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// TestQueriesSelect checks what one node cannot show in the acceptance test
// (cmd/coldtrace's TestDashboardsAgainstPrometheus, which runs every query): each query
// selects the chosen nodes, the per-workload ones the chosen namespaces and workloads,
// and each target has its own refId.
func TestQueriesSelect(t *testing.T) {
	for _, b := range All() {
		d, err := b.Build().Build()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					RefID string `json:"refId"`
					Expr  string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
			Annotations struct {
				List []struct {
					Expr string `json:"expr"`
				} `json:"list"`
			} `json:"annotations"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		var exprs []string
		for _, p := range m.Panels {
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.RefID == "" || refs[tg.RefID] {
					t.Errorf("%s: %s: refId %q is empty or repeated", b.File, p.Title, tg.RefID)
				}
				refs[tg.RefID] = true
				exprs = append(exprs, tg.Expr)
			}
		}
		for _, a := range m.Annotations.List {
			exprs = append(exprs, a.Expr)
		}
		for _, e := range exprs {
			if !strings.Contains(e, `node=~"$node"`) {
				t.Errorf("%s: %s does not select $node", b.File, e)
			}
			for _, m := range selectorRE.FindAllStringSubmatch(e, -1) {
				if !strings.Contains(m[2], `node=~"$node"`) {
					t.Errorf("%s: %s{%s} does not select $node", b.File, m[1], m[2])
				}
				for _, w := range perWorkload {
					if strings.HasPrefix(m[1], w) && !strings.Contains(m[2], sel) {
						t.Errorf("%s: %s{%s} does not select $namespace and $workload", b.File, m[1], m[2])
					}
				}
			}
		}
	}
}

// selectorRE matches a metric and its label matchers.
var selectorRE = regexp.MustCompile(`([a-z_:]+)\{([^}]*)\}`)

// perWorkload begin the names of the metrics labelled by namespace and workload.
var perWorkload = []string{"coldtrace_cold_starts", "coldtrace_time_to_ready", "coldtrace_phase_", "coldtrace_pull_",
	"coldtrace_model_", "coldtrace_page_cache", "coldtrace_file_read", "coldtrace_gpu_", "coldtrace_image_first"}
