package metrics

import (
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// ZeroFirst wraps reg so that every counter, histogram and summary registered through it
// is scraped once at zero before its first value. Prometheus' increase() and rate() take
// a series' first sample as its start, so a counter first scraped at 1 never shows that
// first increase, and on a node most workloads start once and most failures happen once.
// A second Prometheus scraping the same agent (an HA pair) may miss the zero.
func ZeroFirst(reg prometheus.Registerer) prometheus.Registerer {
	return &zeroRegisterer{reg: reg, wrapped: map[prometheus.Collector]prometheus.Collector{}}
}

type zeroRegisterer struct {
	reg     prometheus.Registerer
	mu      sync.Mutex
	wrapped map[prometheus.Collector]prometheus.Collector
}

func (z *zeroRegisterer) Register(c prometheus.Collector) error {
	w := &zeroFirst{c: c, seen: map[string]bool{}}
	if err := z.reg.Register(w); err != nil {
		return err
	}
	z.mu.Lock()
	z.wrapped[c] = w
	z.mu.Unlock()
	return nil
}

func (z *zeroRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := z.Register(c); err != nil {
			panic(err)
		}
	}
}

func (z *zeroRegisterer) Unregister(c prometheus.Collector) bool {
	z.mu.Lock()
	w := z.wrapped[c]
	delete(z.wrapped, c)
	z.mu.Unlock()
	return w != nil && z.reg.Unregister(w)
}

// zeroFirst is a collector whose cumulative series are collected at zero the first time.
type zeroFirst struct {
	c    prometheus.Collector
	mu   sync.Mutex
	seen map[string]bool // series collected at zero, by description and labels
}

func (z *zeroFirst) Describe(ch chan<- *prometheus.Desc) { z.c.Describe(ch) }

func (z *zeroFirst) Collect(ch chan<- prometheus.Metric) {
	inner := make(chan prometheus.Metric)
	go func() { z.c.Collect(inner); close(inner) }()
	z.mu.Lock()
	defer z.mu.Unlock()
	for m := range inner {
		var pb dto.Metric
		if m.Write(&pb) != nil || pb.Counter == nil && pb.Histogram == nil && pb.Summary == nil {
			ch <- m // gauges say what is now; nothing to zero
			continue
		}
		var k strings.Builder
		k.WriteString(m.Desc().String())
		for _, l := range pb.Label {
			k.WriteString("\xff" + l.GetName() + "\xfe" + l.GetValue())
		}
		if z.seen[k.String()] {
			ch <- m
			continue
		}
		z.seen[k.String()] = true
		ch <- zeroed{desc: m.Desc(), pb: &pb}
	}
}

// zeroed is a cumulative series at zero: its labels and buckets, no counts.
type zeroed struct {
	desc *prometheus.Desc
	pb   *dto.Metric
}

func (z zeroed) Desc() *prometheus.Desc { return z.desc }

func (z zeroed) Write(out *dto.Metric) error {
	out.Label = z.pb.Label
	zero, none := 0.0, uint64(0)
	switch {
	case z.pb.Counter != nil:
		out.Counter = &dto.Counter{Value: &zero}
	case z.pb.Histogram != nil:
		h := &dto.Histogram{SampleCount: &none, SampleSum: &zero}
		for _, b := range z.pb.Histogram.Bucket {
			h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: b.UpperBound, CumulativeCount: &none})
		}
		out.Histogram = h
	default:
		out.Summary = &dto.Summary{SampleCount: &none, SampleSum: &zero}
	}
	return nil
}
