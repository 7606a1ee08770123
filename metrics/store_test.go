package metrics

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestStore sizes the trace files under DATA_DIR/traces, in every namespace's directory,
// and nothing beside them; a missing directory holds nothing.
func TestStore(t *testing.T) {
	data := t.TempDir()
	s := newStore(data)
	if got := testutil.ToFloat64(collectOne(s, storeTracesDesc)); got != 0 {
		t.Errorf("no traces directory: %v traces", got)
	}
	for path, size := range map[string]int{"traces/default/a.json.gz": 100, "traces/k8s.io/b.json.gz": 23, "other/c": 1000} {
		p := filepath.Join(data, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.walked = s.walked.Add(-storeEvery) // as after storeEvery
	if got := testutil.ToFloat64(collectOne(s, storeBytesDesc)); got != 123 {
		t.Errorf("%v bytes, want 123", got)
	}
	if got := testutil.ToFloat64(collectOne(s, storeTracesDesc)); got != 2 {
		t.Errorf("%v traces, want 2", got)
	}
}

// collectOne is a collector of the one metric of c that d describes.
func collectOne(c prometheus.Collector, d *prometheus.Desc) prometheus.Collector {
	ch := make(chan prometheus.Metric, 16)
	c.Collect(ch)
	close(ch)
	for m := range ch {
		if m.Desc() == d {
			return constCollector{m}
		}
	}
	return nil
}

type constCollector struct{ m prometheus.Metric }

func (c constCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.Desc() }
func (c constCollector) Collect(ch chan<- prometheus.Metric) { ch <- c.m }
