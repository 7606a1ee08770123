package metrics

import (
	"io/fs"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// storeEvery bounds how often the trace store is walked: a scrape in between reports the
// last walk, so that frequent scrapes of a node with many traces cost no more.
const storeEvery = 30 * time.Second

var (
	storeBytesDesc  = prometheus.NewDesc(Prefix+"trace_store_bytes", "Bytes of the trace files in the agent's data directory.", nil, nil)
	storeTracesDesc = prometheus.NewDesc(Prefix+"trace_store_traces", "Trace files in the agent's data directory.", nil, nil)
)

// store sizes the traces under DataDir/traces.
type store struct {
	dir string

	mu            sync.Mutex
	walked        time.Time
	bytes, traces float64
}

func newStore(dataDir string) *store { return &store{dir: filepath.Join(dataDir, "traces")} }

func (s *store) Describe(ch chan<- *prometheus.Desc) {
	ch <- storeBytesDesc
	ch <- storeTracesDesc
}

func (s *store) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.walked) >= storeEvery {
		s.walked = time.Now()
		s.bytes, s.traces = 0, 0
		// A directory that is not there yet holds nothing; files that vanish mid-walk
		// (a trace store pruning) are skipped.
		filepath.WalkDir(s.dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() {
				s.bytes += float64(fi.Size())
				s.traces++
			}
			return nil
		})
	}
	ch <- prometheus.MustNewConstMetric(storeBytesDesc, prometheus.GaugeValue, s.bytes)
	ch <- prometheus.MustNewConstMetric(storeTracesDesc, prometheus.GaugeValue, s.traces)
}
