package cache

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsLint runs promlint over the cache's metrics, each with a series.
func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.observe("team-a", Item{Action: ActionStage, Result: ResultRefused, Reason: ReasonPath, Bytes: 1, Took: time.Millisecond})
	m.fallback("team-a", "corrupt")
	m.residentRatio("team-a", "llm", 0.5)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := testutil.GatherAndCount(reg); n != 6 {
		t.Errorf("%d series, want one of each of the 6 metrics", n)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}
