package report

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/google/pprof/profile"

	"github.com/coldtrace/coldtrace/export"
	"github.com/coldtrace/coldtrace/trace"
)

// The pprof sample types: every sample carries both values, in this order.
const (
	PprofCritical = "critical_path" // nanoseconds of the critical path; they add up to the trace's duration
	PprofBytes    = "bytes"         // bytes moved; they add up to the phases' bytes
)

// Pprof writes t as a gzipped pprof profile (see Profile).
func Pprof(w io.Writer, t *trace.Trace) error {
	p, err := Profile(t)
	if err != nil {
		return err
	}
	return p.Write(w)
}

// Profile turns a cold start into a pprof profile whose stacks read workload; phase;
// layer or origin; file (a connection's peer for fetch, a driver call or device for gpu),
// for flame graphs next to CPU profiles. Each critical-path segment's time goes to the
// things of its phase active at each instant, split evenly among those active together,
// and to the phase itself where none was; each phase's bytes go to its things by their own
// counts, the rest to the phase. So the critical_path values add up to the trace's
// duration and the bytes values to the sum of the phases' bytes.
func Profile(t *trace.Trace) (*profile.Profile, error) {
	b := &pprofBuilder{
		p: &profile.Profile{
			SampleType: []*profile.ValueType{
				{Type: PprofCritical, Unit: "nanoseconds"},
				{Type: PprofBytes, Unit: "bytes"},
			},
			DefaultSampleType: PprofCritical,
			PeriodType:        &profile.ValueType{Type: PprofCritical, Unit: "nanoseconds"},
			Period:            1,
			DurationNanos:     int64(t.Duration),
			Comments:          []string{"coldtrace cold start " + t.ID + ": " + workloadName(t) + ", " + string(t.Outcome)},
		},
		samples: map[string]*profile.Sample{},
		locs:    map[string]*profile.Location{},
	}
	if !t.Start.IsZero() {
		b.p.TimeNanos = t.Start.UnixNano()
	}
	// The root is the workload's stable name (the image's repository, the program), so
	// that the starts of one workload merge in a flame graph across versions and runs.
	root := export.Service(t)
	items := phaseItems(t)
	for _, s := range t.Critical {
		b.attribute(root, s, items[s.Phase])
	}
	if len(t.Critical) == 0 {
		b.add([]string{root}, int64(t.Duration), 0) // no phases: the time is the workload's alone
	}
	for _, ph := range phases(t) {
		left := ph.Bytes
		for _, it := range items[ph.Name] {
			n := min(it.bytes, left) // a phase's things never claim more than the phase moved
			b.add(stack(root, ph.Name, it.frames), 0, n)
			left -= n
		}
		b.add(stack(root, ph.Name, nil), 0, left)
	}
	if err := b.p.CheckValid(); err != nil {
		return nil, fmt.Errorf("report: building the pprof profile: %w", err)
	}
	return b.p, nil
}

// item is one thing a phase did: its frames below the phase, when it was active and
// the bytes it moved.
type item struct {
	frames []string
	active []trace.Interval
	bytes  int64
}

// phaseItems lists the things of each phase that the critical path and the bytes go to.
func phaseItems(t *trace.Trace) map[trace.PhaseName][]item {
	m := map[trace.PhaseName][]item{}
	if p := t.Pull; p != nil {
		for _, l := range p.Layers {
			name := layerFrame(l.Index, l.Digest)
			if l.Fetched > p.Start {
				// Layers download side by side from the pull's request to their commit.
				m[trace.PhasePull] = append(m[trace.PhasePull], item{[]string{name}, []trace.Interval{{Start: p.Start, End: l.Fetched}}, l.Bytes})
			}
			if l.UnpackEnd > l.UnpackStart {
				m[trace.PhaseUnpack] = append(m[trace.PhaseUnpack], item{[]string{name}, []trace.Interval{{Start: l.UnpackStart, End: l.UnpackEnd}}, l.Size})
			}
		}
	}
	for _, f := range t.Files {
		var ph trace.PhaseName
		switch f.Kind {
		case trace.KindWeights:
			ph = trace.PhaseLoad
		case trace.KindLibrary:
			ph = trace.PhaseInit
		default:
			continue
		}
		ivs := make([]trace.Interval, len(f.Ranges))
		for i, r := range f.Ranges {
			ivs[i] = trace.Interval{Start: r.First, End: r.Last}
		}
		m[ph] = append(m[ph], item{[]string{fileOrigin(f), f.Path}, trace.Union(ivs), fileBytes(f)})
	}
	for _, c := range t.Conns {
		if c.Role == "registry" || c.Dir != "connect" {
			continue
		}
		peer := c.Remote
		if c.URL != "" {
			peer = c.URL
		}
		m[trace.PhaseFetch] = append(m[trace.PhaseFetch], item{[]string{peer}, []trace.Interval{{Start: c.Open, End: max(c.LastRecv, c.Open)}}, c.BytesRecv})
	}
	for _, c := range t.GPU.Calls {
		m[trace.PhaseGPU] = append(m[trace.PhaseGPU], item{[]string{"driver", c.Name}, []trace.Interval{{Start: c.Start, End: c.End}}, 0})
	}
	for _, x := range t.GPU.Ioctls {
		m[trace.PhaseGPU] = append(m[trace.PhaseGPU], item{[]string{x.Device, fmt.Sprintf("ioctl 0x%08x", x.Request)}, []trace.Interval{{Start: x.First, End: x.Last}}, 0})
	}
	// The bytes of a phase go to its biggest things first.
	for ph := range m {
		slices.SortStableFunc(m[ph], func(a, b item) int { return cmp.Compare(b.bytes, a.bytes) })
	}
	return m
}

// layerFrame names an image layer by its index and short digest.
func layerFrame(index int, digest string) string {
	if _, hex, ok := strings.Cut(digest, ":"); ok && len(hex) > 12 {
		digest = hex[:12]
	}
	return fmt.Sprintf("layer %d %s", index, digest)
}

// fileOrigin is the frame above a file: the image layer that holds it, the container's
// writable layer, a volume, or the host for files of a command traced outside a container.
func fileOrigin(f trace.File) string {
	switch {
	case f.Layer == nil:
		return "host"
	case f.Layer.Where == "image":
		return layerFrame(f.Layer.Index, f.Layer.Digest)
	case f.Layer.Where == "rw":
		return "container layer"
	}
	return f.Layer.Where
}

// stack is a sample's frames from the root down.
func stack(root string, ph trace.PhaseName, frames []string) []string {
	return append([]string{root, string(ph)}, frames...)
}

type pprofBuilder struct {
	p       *profile.Profile
	samples map[string]*profile.Sample // by stack
	locs    map[string]*profile.Location
}

// attribute splits the segment's time among the items active in it; instants where none
// is active go to the phase itself.
func (b *pprofBuilder) attribute(root string, s trace.Segment, items []item) {
	cuts := []trace.Duration{s.Start, s.End}
	for _, it := range items {
		for _, iv := range it.active {
			if iv.Start > s.Start && iv.Start < s.End {
				cuts = append(cuts, iv.Start)
			}
			if iv.End > s.Start && iv.End < s.End {
				cuts = append(cuts, iv.End)
			}
		}
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	for i := 1; i < len(cuts); i++ {
		from, to := cuts[i-1], cuts[i]
		var on []item
		for _, it := range items {
			if slices.ContainsFunc(it.active, func(iv trace.Interval) bool { return iv.Start <= from && iv.End >= to }) {
				on = append(on, it)
			}
		}
		d := int64(to - from)
		if len(on) == 0 {
			b.add(stack(root, s.Phase, nil), d, 0)
			continue
		}
		share, rem := d/int64(len(on)), d%int64(len(on))
		for j, it := range on {
			v := share
			if int64(j) < rem {
				v++
			}
			b.add(stack(root, s.Phase, it.frames), v, 0)
		}
	}
}

// add adds values to the sample of a stack given root first.
func (b *pprofBuilder) add(frames []string, critical, bytes int64) {
	if critical == 0 && bytes == 0 {
		return
	}
	key := strings.Join(frames, "\x00")
	s := b.samples[key]
	if s == nil {
		s = &profile.Sample{Value: []int64{0, 0}}
		// pprof lists a sample's locations leaf first; the frames of two stacks that
		// share a name at the same depth share a location.
		for i := len(frames) - 1; i >= 0; i-- {
			s.Location = append(s.Location, b.loc(frames[i]))
		}
		b.samples[key] = s
		b.p.Sample = append(b.p.Sample, s)
	}
	s.Value[0] += critical
	s.Value[1] += bytes
}

// loc returns the location of a frame name, making it and its function the first time.
func (b *pprofBuilder) loc(name string) *profile.Location {
	if l := b.locs[name]; l != nil {
		return l
	}
	fn := &profile.Function{ID: uint64(len(b.p.Function) + 1), Name: name, SystemName: name}
	if strings.HasPrefix(name, "/") {
		fn.Filename = name // viewers that show a file column show the path there too
	}
	l := &profile.Location{ID: uint64(len(b.p.Location) + 1), Line: []profile.Line{{Function: fn}}}
	b.p.Function = append(b.p.Function, fn)
	b.p.Location = append(b.p.Location, l)
	b.locs[name] = l
	return l
}
