package advisor

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/coldtrace/coldtrace/manifest"
	"github.com/coldtrace/coldtrace/trace"
)

// NodeClass is what a node has that can change a cold start: its accelerators, their
// driver and the kernel. Runs on nodes of one class are comparable.
type NodeClass struct {
	GPU    string `json:"gpu,omitempty"` // model and count: "2x NVIDIA H100 80GB HBM3"
	Driver string `json:"driver,omitempty"`
	Kernel string `json:"kernel,omitempty"`
}

func (c NodeClass) String() string {
	return fmt.Sprintf("gpu=%s driver=%s kernel=%s", cmp.Or(c.GPU, "none"), cmp.Or(c.Driver, "none"), cmp.Or(c.Kernel, "?"))
}

// ClassOf is the class of the node that h describes.
func ClassOf(h trace.Host) NodeClass {
	c := NodeClass{Driver: h.Driver, Kernel: h.Kernel}
	models := map[string]int{}
	for _, g := range h.GPUs {
		models[g.Model]++
	}
	var gpus []string
	for m, n := range models {
		gpus = append(gpus, fmt.Sprintf("%dx %s", n, m))
	}
	slices.Sort(gpus)
	c.GPU = strings.Join(gpus, ", ")
	return c
}

// ClassAdvice is the advice for the runs of one node class.
type ClassAdvice struct {
	Class NodeClass `json:"class"`
	Runs  int       `json:"runs"`
	// Ready is the median time to ready, in seconds.
	Ready    float64            `json:"ready_s"`
	Manifest *manifest.Manifest `json:"-"`
}

// Fleet compares the node classes that a workload's runs came from.
type Fleet struct {
	// Classes, the most runs first.
	Classes []ClassAdvice `json:"classes"`
	// Differences says where the classes differ, in words.
	Differences []string `json:"differences,omitempty"`
	// Split says that hot sets differ materially (overlap below MinOverlap): one manifest
	// per class serves better than one for all.
	Split bool `json:"split"`
}

// MinOverlap is the share of hot-set bytes two classes must have in common for one
// manifest to serve both; ReadyGap the relative gap of median times to ready worth naming.
const (
	MinOverlap = 0.8
	ReadyGap   = 0.2
)

// AnalyzeFleet groups traces by node class, builds each class's manifest under opt, and
// compares each class with the one that has the most runs.
func AnalyzeFleet(traces []*trace.Trace, opt Options) (*Fleet, error) {
	byClass := map[NodeClass][]*trace.Trace{}
	for _, t := range traces {
		c := ClassOf(t.Host)
		byClass[c] = append(byClass[c], t)
	}
	f := &Fleet{}
	for c, ts := range byClass {
		m, err := BuildManifest(ts, opt)
		if err != nil {
			return nil, fmt.Errorf("node class %s: %w", c, err)
		}
		ready := make([]float64, len(ts))
		for i, t := range ts {
			ready[i] = newRun(t, opt.Limits).ready()
		}
		f.Classes = append(f.Classes, ClassAdvice{Class: c, Runs: len(ts), Ready: median(ready), Manifest: m})
	}
	slices.SortFunc(f.Classes, func(a, b ClassAdvice) int {
		return cmp.Or(b.Runs-a.Runs, strings.Compare(a.Class.String(), b.Class.String()))
	})
	base := f.Classes[0]
	for _, c := range f.Classes[1:] {
		if gap := c.Ready/base.Ready - 1; base.Ready > 0 && (gap > ReadyGap || gap < -ReadyGap) {
			f.Differences = append(f.Differences, fmt.Sprintf("%s: median ready %.2f s, %+.0f%% against %s (%.2f s)",
				c.Class, c.Ready, 100*gap, base.Class, base.Ready))
		}
		if o := overlap(base.Manifest.Spec.HotSet, c.Manifest.Spec.HotSet); o < MinOverlap {
			f.Split = true
			f.Differences = append(f.Differences, fmt.Sprintf("%s: its hot set shares %.0f%% of its bytes with %s's", c.Class, 100*o, base.Class))
		}
	}
	return f, nil
}

// overlap is the share of bytes two hot sets have in common: the bytes of the ranges both
// hold, over the bytes of their union.
func overlap(a, b []manifest.HotEntry) float64 {
	type file struct{ layer, path string }
	byFile := func(hs []manifest.HotEntry) map[file][]manifest.Range {
		m := map[file][]manifest.Range{}
		for _, e := range hs {
			m[file{e.Layer, e.Path}] = e.Ranges // sorted and disjoint
		}
		return m
	}
	fa, fb := byFile(a), byFile(b)
	var both, total int64
	for _, e := range a {
		total += e.Bytes()
		both += intersection(fa[file{e.Layer, e.Path}], fb[file{e.Layer, e.Path}])
	}
	for _, e := range b {
		total += e.Bytes()
	}
	if union := total - both; union > 0 {
		return float64(both) / float64(union)
	}
	return 1
}

// intersection is the bytes that two sorted lists of disjoint ranges share.
func intersection(a, b []manifest.Range) int64 {
	var n int64
	for i, j := 0, 0; i < len(a) && j < len(b); {
		if lo, hi := max(a[i].Off, b[j].Off), min(a[i].End(), b[j].End()); hi > lo {
			n += hi - lo
		}
		if a[i].End() < b[j].End() {
			i++
		} else {
			j++
		}
	}
	return n
}
