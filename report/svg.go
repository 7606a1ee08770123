package report

import (
	"bytes"
	"cmp"
	"fmt"
	"html"
	"io"
	"math"
	"path"
	"slices"
	"strings"

	"github.com/coldtrace/coldtrace/internal/units"
	"github.com/coldtrace/coldtrace/trace"
)

// phaseColor is the palette of every picture: one colour per phase (Tableau 10, which stays
// distinguishable for most colour-blind readers).
var phaseColor = map[trace.PhaseName]string{
	trace.PhasePull:    "#4e79a7",
	trace.PhaseUnpack:  "#76b7b2",
	trace.PhaseCreate:  "#9c755f",
	trace.PhaseInit:    "#b07aa1",
	trace.PhaseFetch:   "#f28e2b",
	trace.PhaseLoad:    "#59a14f",
	trace.PhaseGPU:     "#e15759",
	trace.PhaseCompute: "#edc948",
}

// kindColor colours a file by the phase its kind feeds.
func kindColor(k trace.FileKind) string {
	switch k {
	case trace.KindWeights:
		return phaseColor[trace.PhaseLoad]
	case trace.KindLibrary:
		return phaseColor[trace.PhaseInit]
	case trace.KindDevice:
		return phaseColor[trace.PhaseGPU]
	}
	return "#8c8c8c"
}

// connColor colours a connection by the phase its bytes belong to.
func connColor(c trace.Conn) string {
	if c.Role == "registry" {
		return phaseColor[trace.PhasePull]
	}
	return phaseColor[trace.PhaseFetch]
}

// Layout of the waterfall, in pixels.
const (
	svgWidth  = 1280
	labelW    = 320 // the label column left of the chart
	padRight  = 40
	chartW    = svgWidth - labelW - padRight
	laneH     = 24
	barH      = 14
	maxLanes  = 8  // files, connections and call names each
	laneLabel = 26 // runes of a lane label that fit beside its note
	fontStack = "'Inter', 'Segoe UI', 'Helvetica Neue', Helvetica, Arial, sans-serif"
)

// SVG writes a waterfall of t as a standalone SVG image.
func SVG(w io.Writer, t *trace.Trace) error {
	var buf bytes.Buffer
	writeSVG(&buf, t, true)
	_, err := w.Write(buf.Bytes())
	return err
}

// canvas is the chart being drawn: a time scale and the body written so far.
type canvas struct {
	body   bytes.Buffer
	extent trace.Duration // the time at the right edge of the chart
	y      int            // top of the next row
	lanes  int            // lanes drawn, to shade every other one
}

// x maps trace time to a horizontal position, clamped to the chart.
func (c *canvas) x(d trace.Duration) float64 {
	return labelW + float64(chartW)*float64(min(max(d, 0), c.extent))/float64(c.extent)
}

// bar draws [start, end) at least one pixel wide, so that instants stay visible.
func (c *canvas) bar(start, end trace.Duration, y, h int, fill string, opacity float64, title string) {
	x0, x1 := c.x(start), c.x(end)
	fmt.Fprintf(&c.body, `<rect x="%.1f" y="%d" width="%.1f" height="%d" rx="2" fill="%s"`, x0, y, max(x1-x0, 1), h, fill)
	if opacity < 1 {
		fmt.Fprintf(&c.body, ` fill-opacity="%.2f"`, opacity)
	}
	fmt.Fprintf(&c.body, "><title>%s</title></rect>\n", esc(title))
}

// text writes s at (x, y) with extra attributes (anchor, size, colour).
func (c *canvas) text(x float64, y int, s, attrs string) {
	fmt.Fprintf(&c.body, `<text x="%.1f" y="%d" %s>%s</text>`+"\n", x, y, attrs, esc(s))
}

// heading starts a group of lanes with its name and a rule across the picture.
func (c *canvas) heading(name string) {
	c.y += 10
	fmt.Fprintf(&c.body, `<line x1="16" x2="%d" y1="%d" y2="%d" stroke="#d0d0d0"/>`+"\n", svgWidth-padRight, c.y, c.y)
	c.text(16, c.y+16, strings.ToUpper(name), `font-size="11" font-weight="700" fill="#777" letter-spacing="1"`)
	c.y += 22
}

// lane opens the group of one row, with its label on the left and a note (a share, a
// size) right-aligned against the chart.
func (c *canvas) lane(class, attrs, label, note, title string, swatch string) {
	fmt.Fprintf(&c.body, `<g class="lane %s"%s>`+"\n", class, attrs)
	c.lanes++
	if c.lanes%2 == 1 {
		fmt.Fprintf(&c.body, `<rect x="16" y="%d" width="%d" height="%d" fill="#f6f6f6"/>`+"\n", c.y, svgWidth-padRight-16, laneH)
	}
	x := 24.0
	if swatch != "" {
		fmt.Fprintf(&c.body, `<rect x="22" y="%d" width="10" height="10" rx="2" fill="%s"/>`+"\n", c.y+7, swatch)
		x = 40
	}
	fmt.Fprintf(&c.body, `<text x="%.1f" y="%d" font-size="13" fill="#222">%s<title>%s</title></text>`+"\n", x, c.y+16, esc(label), esc(title))
	if note != "" {
		c.text(labelW-10, c.y+16, note, `font-size="12" fill="#777" text-anchor="end"`)
	}
}

func (c *canvas) endLane() {
	c.body.WriteString("</g>\n")
	c.y += laneH
}

func writeSVG(out *bytes.Buffer, t *trace.Trace, standalone bool) {
	c := &canvas{extent: extent(t)}
	ps := phases(t)

	// Title block: what started, how long it took, how it ended and where.
	c.text(16, 32, clip(workloadName(t), 90)+" · "+fmtDur(t.Duration), `font-size="20" font-weight="700" fill="#222"`)
	c.text(16, 54, statusText(t), `font-size="13" fill="#444"`)
	c.y = 58
	if h := hostText(t.Host); h != "" {
		c.text(16, c.y+16, clip(h, 180), `font-size="12" fill="#777"`)
		c.y += 16
	}
	if t.Incomplete || t.LostEvents > 0 {
		c.text(16, c.y+18, fmt.Sprintf("⚠ incomplete trace: %d events lost; times and bytes are lower bounds", t.LostEvents),
			`font-size="13" font-weight="700" fill="#c0392b"`)
		c.y += 20
	}

	// Axis labels; the grid lines are drawn once the height is known.
	axisY := c.y + 24
	step := tickStep(c.extent)
	for d := trace.Duration(0); d <= c.extent; d += step {
		anchor := "middle"
		if d == 0 {
			anchor = "start"
		}
		c.text(c.x(d), axisY, fmtTick(d, c.extent), `font-size="11" fill="#777" text-anchor="`+anchor+`"`)
	}
	c.y = axisY + 8

	// The critical path: which phase the cold start waited on at every instant.
	if len(t.Critical) > 0 {
		critical := phaseShares(ps)
		c.text(24, c.y+19, "critical path", `font-size="13" font-weight="700" fill="#222"`)
		c.body.WriteString(`<g class="critical">` + "\n")
		for _, s := range t.Critical {
			c.bar(s.Start, s.End, c.y+4, 22, phaseColor[s.Phase], 1,
				fmt.Sprintf("%s on the critical path: %s → %s (%s; %s in all)", s.Phase, fmtDur(s.Start), fmtDur(s.End), fmtDur(s.End-s.Start), critical[s.Phase]))
			if w := c.x(s.End) - c.x(s.Start); w > 8*float64(len(s.Phase))+8 {
				c.text((c.x(s.Start)+c.x(s.End))/2, c.y+19, string(s.Phase), `font-size="11" font-weight="700" fill="#fff" text-anchor="middle"`)
			}
		}
		c.body.WriteString("</g>\n")
		c.y += 30
	}

	if len(ps) > 0 {
		c.heading("phases")
		sh := phaseShares(ps)
		for _, p := range ps {
			col := phaseColor[p.Name]
			desc := fmt.Sprintf("%s: %s → %s, span %s, busy %s, critical %s (%s)", p.Name, fmtDur(p.Start), fmtDur(p.End),
				fmtDur(p.Span()), fmtDur(p.Busy), fmtDur(p.Critical), sh[p.Name])
			if p.Bytes > 0 {
				desc += ", " + units.Bytes(p.Bytes)
			}
			c.lane("phase", fmt.Sprintf(` data-phase="%s"`, p.Name), string(p.Name), sh[p.Name], desc, col)
			// Without activity intervals a phase busy for its whole span is drawn solid;
			// otherwise where it was busy is unknown and only the span is drawn.
			opacity := 0.28
			if len(p.Activity) == 0 && p.Busy == p.Span() {
				opacity = 1
			}
			c.bar(p.Start, p.End, c.y+(laneH-barH)/2, barH, col, opacity, desc)
			if x := c.x(p.End) + 6; x < labelW+chartW-40 {
				c.text(x, c.y+16, fmtDur(p.Span()), `font-size="11" fill="#777"`)
			}
			for _, a := range p.Activity {
				c.bar(a.Start, a.End, c.y+(laneH-barH)/2, barH, col, 1,
					fmt.Sprintf("%s active %s → %s (%s)", p.Name, fmtDur(a.Start), fmtDur(a.End), fmtDur(a.End-a.Start)))
			}
			c.endLane()
		}
	} else {
		c.y += 10
		c.text(24, c.y+16, "no phases recorded", `font-size="13" fill="#777" font-style="italic"`)
		c.y += laneH
	}

	fileLanes(c, t)
	connLanes(c, t)
	gpuLanes(c, t)

	// Ready marker across everything drawn so far.
	bottom := c.y + 6
	if t.Ready != nil {
		x := c.x(t.Ready.At)
		fmt.Fprintf(&c.body, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#222" stroke-width="1.5" stroke-dasharray="5,3"><title>%s</title></line>`+"\n",
			x, x, axisY-14, bottom, esc("ready: "+readyText(t)))
		anchor, dx := "end", -4.0
		if x < labelW+80 {
			anchor, dx = "start", 4
		}
		c.text(x+dx, axisY-16, "ready "+fmtDur(t.Ready.At), `font-size="12" font-weight="700" fill="#222" text-anchor="`+anchor+`"`)
	}

	c.y = bottom + 12
	legend(c, ps)
	height := c.y + 12

	if standalone {
		out.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
		fmt.Fprintf(out, `<svg xmlns="http://www.w3.org/2000/svg" `)
	} else {
		out.WriteString(`<svg `) // HTML5 infers the namespace of inline SVG
	}
	fmt.Fprintf(out, `width="%d" height="%d" viewBox="0 0 %d %d" font-family="%s" role="img">`+"\n", svgWidth, height, svgWidth, height, fontStack)
	fmt.Fprintf(out, "<title>%s</title>\n", esc(workloadName(t)+": "+statusText(t)))
	fmt.Fprintf(out, `<rect width="%d" height="%d" fill="#fff"/>`+"\n", svgWidth, height)
	for d := trace.Duration(0); d <= c.extent; d += step {
		fmt.Fprintf(out, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#e4e4e4"/>`+"\n", c.x(d), c.x(d), axisY+4, bottom)
	}
	out.Write(c.body.Bytes())
	out.WriteString("</svg>\n")
}

// statusText is the subtitle: how the cold start ended.
func statusText(t *trace.Trace) string {
	if t.Ready != nil {
		return clip("ready at "+readyText(t), 180)
	}
	return clip(fmt.Sprintf("%s after %s", readyText(t), fmtDur(t.Duration)), 180)
}

// phaseShares is each phase's critical-path share as text.
func phaseShares(ps []trace.Phase) map[trace.PhaseName]string {
	out := map[trace.PhaseName]string{}
	sh := shares(ps)
	for i, p := range ps {
		out[p.Name] = "-"
		if sh != nil {
			out[p.Name] = fmtShare(sh[i])
		}
	}
	return out
}

// extent is the time at the right edge: the whole recording, and anything a phase drew
// past it; at least a millisecond so that an empty trace still has a scale.
func extent(t *trace.Trace) trace.Duration {
	e := t.Duration
	for _, p := range t.Phases {
		e = max(e, p.End)
	}
	return max(e, 1e6)
}

// tickStep picks a round step (1, 2 or 5 times a power of ten) giving at most 10 ticks.
func tickStep(extent trace.Duration) trace.Duration {
	raw := float64(extent) / 10
	pow := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5} {
		if m*pow >= raw {
			return trace.Duration(m * pow)
		}
	}
	return trace.Duration(10 * pow)
}

// fileLanes draws the files that moved most bytes, one lane each, with their ranges from
// first to last access.
func fileLanes(c *canvas, t *trace.Trace) {
	fs := topFilesByBytes(t)
	if len(fs) == 0 {
		return
	}
	c.heading(fmt.Sprintf("files (top %d of %d by bytes)", min(maxLanes, len(fs)), len(fs)))
	for _, f := range fs[:min(maxLanes, len(fs))] {
		col := kindColor(f.Kind)
		desc := fmt.Sprintf("%s (%s): read %s, mapped %s, %d cache-miss pages, %d ranges",
			f.Path, f.Kind, units.Bytes(f.BytesRead), units.Bytes(f.MappedBytes), f.CacheMisses, len(f.Ranges))
		c.lane("file", "", clipMiddle(path.Base(f.Path), laneLabel), units.Bytes(fileBytes(f)), desc, col)
		if len(f.Ranges) > 0 {
			first, last := f.Ranges[0].First, f.Ranges[0].Last
			for _, r := range f.Ranges {
				first, last = min(first, r.First), max(last, r.Last)
			}
			c.bar(first, last, c.y+(laneH-barH)/2, barH, col, 0.25, desc)
		}
		for _, g := range mergeRanges(c, f.Ranges) {
			c.bar(g.start, g.end, c.y+(laneH-barH)/2, barH, col, 1,
				fmt.Sprintf("%d ranges, %s, %s → %s", g.n, units.Bytes(g.bytes), fmtDur(g.start), fmtDur(g.end)))
		}
		c.endLane()
	}
}

// rangeGroup is file ranges close enough in time to share one bar.
type rangeGroup struct {
	start, end trace.Duration
	n          int
	bytes      int64
}

// mergeRanges joins ranges whose access times lie within a pixel of each other: a large
// model file has thousands of ranges, and one rect each would bloat the picture.
func mergeRanges(c *canvas, rs []trace.Range) []rangeGroup {
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b trace.Range) int { return cmp.Compare(a.First, b.First) })
	pixel := c.extent / chartW
	var out []rangeGroup
	for _, r := range sorted {
		if n := len(out); n > 0 && r.First <= out[n-1].end+pixel {
			g := &out[n-1]
			g.end = max(g.end, r.Last)
			g.n++
			g.bytes += r.Len
			continue
		}
		out = append(out, rangeGroup{start: r.First, end: max(r.Last, r.First), n: 1, bytes: r.Len})
	}
	return out
}

// connLanes draws the busiest connections: open to close, and how fast each received,
// on one scale, so that transfers sharing a link show as each slowing down.
func connLanes(c *canvas, t *trace.Trace) {
	cs := topConns(t)
	if len(cs) == 0 {
		return
	}
	c.heading(fmt.Sprintf("connections (top %d of %d by bytes)", min(maxLanes, len(cs)), len(cs)))
	cs = cs[:min(maxLanes, len(cs))]
	bucket := max(c.extent*4/chartW, 1) // four pixels a column
	rates := make([][]float64, len(cs))
	var peak float64
	for i, cn := range cs {
		rates[i] = recvRates(cn, bucket)
		for _, r := range rates[i] {
			peak = max(peak, r)
		}
	}
	for i, cn := range cs {
		col := connColor(cn)
		end := connEnd(t, cn)
		desc := fmt.Sprintf("%s %s %s (pid %d): recv %s, sent %s, open %s → %s", cn.Role, cn.Dir, cn.Remote, cn.PID,
			units.Bytes(cn.BytesRecv), units.Bytes(cn.BytesSent), fmtDur(cn.Open), fmtDur(end))
		c.lane("conn", "", clipMiddle(cn.Remote, laneLabel), units.Bytes(cn.BytesRecv), desc, col)
		c.bar(cn.Open, end, c.y+(laneH-barH)/2, barH, col, 0.25, desc)
		receiving := fmt.Sprintf("receiving %s → %s: %s at %s on average", fmtDur(cn.FirstRecv), fmtDur(cn.LastRecv),
			units.Bytes(cn.BytesRecv), fmtRate(cn.BytesRecv, cn.LastRecv-cn.FirstRecv))
		switch {
		case len(rates[i]) > 0 && peak > 0:
			c.rateArea(cn.Open, bucket, rates[i], peak, col, receiving+fmt.Sprintf("; peak of all connections %s/s", units.Bytes(int64(peak))))
		case cn.BytesRecv > 0 && cn.LastRecv > cn.FirstRecv:
			c.bar(cn.FirstRecv, cn.LastRecv, c.y+(laneH-barH)/2, barH, col, 1, receiving)
		}
		c.endLane()
	}
}

// recvRates turns a connection's cumulative samples into bytes per second over buckets
// from its open, spreading the bytes between two samples evenly; nil without samples.
func recvRates(cn trace.Conn, bucket trace.Duration) []float64 {
	if len(cn.Samples) == 0 {
		return nil
	}
	pts := append([]trace.Sample{{At: cn.Open}}, cn.Samples...) // nothing received at open
	slices.SortStableFunc(pts, func(a, b trace.Sample) int { return cmp.Compare(a.At, b.At) })
	// Samples are rate-limited, so the last may come before the last bytes.
	if last := pts[len(pts)-1]; cn.LastRecv > last.At && cn.BytesRecv >= last.Recv {
		pts = append(pts, trace.Sample{At: cn.LastRecv, Recv: cn.BytesRecv})
	}
	recvAt := func(at trace.Duration) float64 {
		i, _ := slices.BinarySearchFunc(pts, at, func(p trace.Sample, at trace.Duration) int { return cmp.Compare(p.At, at) })
		switch {
		case i == len(pts):
			return float64(pts[i-1].Recv)
		case i == 0 || pts[i].At == at:
			return float64(pts[i].Recv)
		}
		p, q := pts[i-1], pts[i]
		return float64(p.Recv) + float64(q.Recv-p.Recv)*float64(at-p.At)/float64(q.At-p.At)
	}
	var rates []float64
	for at := cn.Open; at < pts[len(pts)-1].At; at += bucket {
		rates = append(rates, max(recvAt(at+bucket)-recvAt(at), 0)/bucket.Seconds())
	}
	return rates
}

// rateArea draws rates (one per bucket from start) as a step area as tall as a bar at peak.
func (c *canvas) rateArea(start, bucket trace.Duration, rates []float64, peak float64, fill, title string) {
	base := c.y + (laneH+barH)/2
	fmt.Fprintf(&c.body, `<path class="rate" fill="%s" d="M%.1f,%d`, fill, c.x(start), base)
	for i, r := range rates {
		top := float64(base) - barH*r/peak
		fmt.Fprintf(&c.body, " V%.1f H%.1f", top, c.x(start+trace.Duration(i+1)*bucket))
	}
	fmt.Fprintf(&c.body, ` V%d Z"><title>%s</title></path>`+"\n", base, esc(title))
}

// gpuLanes draws device opens and ioctls per device, and driver calls per call name.
func gpuLanes(c *canvas, t *trace.Trace) {
	g := t.GPU
	if len(g.Opens)+len(g.Ioctls)+len(g.Calls) == 0 {
		return
	}
	c.heading("gpu")
	col := phaseColor[trace.PhaseGPU]
	devices := deviceNames(g)
	for _, dev := range devices[:min(maxLanes, len(devices))] {
		var n int64
		var total trace.Duration
		for _, x := range g.Ioctls {
			if x.Device == dev {
				n += x.Count
				total += x.Total
			}
		}
		desc := fmt.Sprintf("%s: %d ioctls, %s inside them", dev, n, fmtDur(total))
		c.lane("device", "", clipMiddle(dev, laneLabel), fmt.Sprintf("%d ioctls", n), desc, col)
		for _, x := range g.Ioctls {
			if x.Device == dev {
				c.bar(x.First, x.Last, c.y+(laneH-barH)/2, barH, col, 0.35,
					fmt.Sprintf("ioctl 0x%08x: %d calls, %s, %s → %s", x.Request, x.Count, fmtDur(x.Total), fmtDur(x.First), fmtDur(x.Last)))
			}
		}
		for _, o := range g.Opens {
			if o.Path == dev {
				c.bar(o.At, o.At, c.y+2, laneH-4, "#222", 1, fmt.Sprintf("open %s by pid %d at %s", o.Path, o.PID, fmtDur(o.At)))
			}
		}
		c.endLane()
	}
	var names []string
	for _, cl := range g.Calls {
		if !slices.Contains(names, cl.Name) {
			names = append(names, cl.Name)
		}
	}
	for _, name := range names[:min(maxLanes, len(names))] {
		var total trace.Duration
		for _, cl := range g.Calls {
			if cl.Name == name {
				total += cl.End - cl.Start
			}
		}
		c.lane("call", "", clipMiddle(name, laneLabel), fmtDur(total), fmt.Sprintf("%s: %s in all", name, fmtDur(total)), col)
		for _, cl := range g.Calls {
			if cl.Name == name {
				c.bar(cl.Start, cl.End, c.y+(laneH-barH)/2, barH, col, 1,
					fmt.Sprintf("%s (pid %d tid %d): %s → %s, %s, returned %d", cl.Name, cl.PID, cl.TID,
						fmtDur(cl.Start), fmtDur(cl.End), fmtDur(cl.End-cl.Start), cl.Return))
			}
		}
		c.endLane()
	}
}

// legend names the colours of the phases shown and how to read the bars.
func legend(c *canvas, ps []trace.Phase) {
	if len(ps) == 0 {
		return
	}
	x := 24.0
	y := c.y
	for _, p := range ps {
		fmt.Fprintf(&c.body, `<rect x="%.1f" y="%d" width="12" height="12" rx="2" fill="%s"/>`+"\n", x, y, phaseColor[p.Name])
		c.text(x+17, y+11, string(p.Name), `font-size="12" fill="#444"`)
		x += 17 + 8*float64(len(p.Name)) + 18
	}
	c.text(x+12, y+11, "light bar: span · solid: busy · connection height: receive rate · dashed line: ready · hover for details", `font-size="12" fill="#777"`)
	c.y += 16
}

// clip shortens a label to n runes.
func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// clipMiddle shortens a lane label to n runes keeping both ends, where file names differ
// (model-00001…safetensors) and say what they are.
func clipMiddle(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	head := (n - 1) / 2
	return string(r[:head]) + "…" + string(r[len(r)-(n-1-head):])
}

// esc makes workload-provided text safe as XML character data or attribute value.
func esc(s string) string { return html.EscapeString(oneLine(s)) }
