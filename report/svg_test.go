package report

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/internal/units"
	"github.com/coldtrace/coldtrace/trace"
)

// node is a generic XML element, enough to walk an SVG.
type node struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Children []node     `xml:",any"`
	Text     string     `xml:",chardata"`
}

func (n node) attr(name string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// all returns every element below n (n included) that match keeps.
func (n node) all(match func(node) bool) []node {
	var out []node
	if match(n) {
		out = append(out, n)
	}
	for _, c := range n.Children {
		out = append(out, c.all(match)...)
	}
	return out
}

func (n node) title() string {
	for _, c := range n.Children {
		if c.XMLName.Local == "title" {
			return c.Text
		}
	}
	return ""
}

func hasClass(class string) func(node) bool {
	return func(n node) bool {
		return n.XMLName.Local == "g" && strings.Contains(" "+n.attr("class")+" ", " "+class+" ")
	}
}

func isRect(n node) bool { return n.XMLName.Local == "rect" }

// parseSVG renders tr and parses the result strictly as XML.
func parseSVG(t *testing.T, tr *trace.Trace) (node, string) {
	t.Helper()
	var buf bytes.Buffer
	if err := SVG(&buf, tr); err != nil {
		t.Fatal(err)
	}
	var root node
	if err := xml.Unmarshal(buf.Bytes(), &root); err != nil {
		t.Fatalf("SVG does not parse: %v\n%s", err, buf.String())
	}
	if root.XMLName.Local != "svg" || root.XMLName.Space != "http://www.w3.org/2000/svg" {
		t.Fatalf("root element %v, want svg in the SVG namespace", root.XMLName)
	}
	return root, buf.String()
}

func TestSVGRealistic(t *testing.T) {
	tr := realistic()
	root, out := parseSVG(t, tr)

	// One lane per phase, in phase order, each with a bar for its span and one per
	// activity interval, every bar with a hover title.
	lanes := root.all(hasClass("phase"))
	var got []string
	for _, l := range lanes {
		got = append(got, l.attr("data-phase"))
		p, _ := tr.Phase(trace.PhaseName(l.attr("data-phase")))
		var bars int
		for _, r := range l.all(isRect) {
			if r.title() != "" {
				bars++
			}
		}
		if bars != 1+len(p.Activity) {
			t.Errorf("lane %s has %d titled bars, want %d", p.Name, bars, 1+len(p.Activity))
		}
	}
	if want := "pull,unpack,create,init,fetch,load,gpu,compute"; strings.Join(got, ",") != want {
		t.Errorf("phase lanes %v, want %s", got, want)
	}

	// The critical path strip has one bar per segment, coloured by its phase.
	crit := root.all(hasClass("critical"))
	if len(crit) != 1 {
		t.Fatalf("%d critical path strips", len(crit))
	}
	rects := crit[0].all(isRect)
	if len(rects) != len(tr.Critical) {
		t.Errorf("critical strip has %d bars, want %d", len(rects), len(tr.Critical))
	}
	for i, r := range rects {
		if want := phaseColor[tr.Critical[i].Phase]; r.attr("fill") != want {
			t.Errorf("segment %d fill %s, want %s", i, r.attr("fill"), want)
		}
	}

	if n := len(root.all(hasClass("file"))); n != 7 {
		t.Errorf("%d file lanes, want 7 (every file that moved bytes, at most %d)", n, maxLanes)
	}
	if n := len(root.all(hasClass("conn"))); n != len(tr.Conns) {
		t.Errorf("%d connection lanes, want %d", n, len(tr.Conns))
	}
	// Three devices and two distinct driver calls.
	if d, c := len(root.all(hasClass("device"))), len(root.all(hasClass("call"))); d != 3 || c != 2 {
		t.Errorf("%d device and %d call lanes, want 3 and 2", d, c)
	}

	ready := root.all(func(n node) bool { return n.XMLName.Local == "line" && strings.HasPrefix(n.title(), "ready:") })
	if len(ready) != 1 {
		t.Errorf("%d ready markers, want 1", len(ready))
	}
	for _, want := range []string{"registry.example.internal/vllm/vllm-openai:v0.9.0 · 118 s", ">20 s<", ">100 s<", "ready 118 s"} {
		if !strings.Contains(out, want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
}

func TestSVGEmpty(t *testing.T) {
	root, out := parseSVG(t, empty())
	if n := len(root.all(hasClass("lane"))); n != 0 {
		t.Errorf("empty trace has %d lanes", n)
	}
	if n := len(root.all(hasClass("critical"))); n != 0 {
		t.Errorf("empty trace has a critical path strip")
	}
	for _, want := range []string{"no phases recorded", "./serve --port 8080 · 3.00 ms", ">1 ms<"} {
		if !strings.Contains(out, want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
}

func TestSVGIncomplete(t *testing.T) {
	root, out := parseSVG(t, incomplete())
	if n := len(root.all(hasClass("phase"))); n != 2 {
		t.Errorf("%d phase lanes, want 2", n)
	}
	if !strings.Contains(out, "incomplete trace: 1234 events lost") {
		t.Error("SVG does not say the trace is incomplete")
	}
}

// A large model file has thousands of ranges; the picture merges those within a pixel.
func TestSVGMergesRanges(t *testing.T) {
	tr := incomplete()
	f := trace.File{Path: "/models/big.gguf", Kind: trace.KindWeights}
	for i := range 10000 {
		at := 10*time.Second + time.Duration(i)*100*time.Microsecond
		f.Ranges = append(f.Ranges, trace.Range{Off: int64(i) * 8192, Len: 4096, First: at, Last: at, Via: trace.AccessMmap})
		f.MappedBytes += 4096
	}
	tr.Files = append(tr.Files, f)
	root, out := parseSVG(t, tr)
	lanes := root.all(hasClass("file"))
	if len(lanes) != 1 {
		t.Fatalf("%d file lanes", len(lanes))
	}
	if n := len(lanes[0].all(isRect)); n > 10 {
		t.Errorf("10000 ranges in one second drew %d rects", n)
	}
	if !strings.Contains(out, fmt.Sprintf("%d ranges, %s", 10000, units.Bytes(10000*4096))) {
		t.Error("the merged bar does not count its ranges")
	}
}

func TestSVGRateAreas(t *testing.T) {
	tr := realistic()
	root, _ := parseSVG(t, tr)
	areas := root.all(func(n node) bool { return n.XMLName.Local == "path" && n.attr("class") == "rate" })
	var sampled int
	for _, c := range tr.Conns {
		if len(c.Samples) > 0 {
			sampled++
		}
	}
	if len(areas) != sampled {
		t.Errorf("%d rate areas, want one per connection with samples (%d)", len(areas), sampled)
	}
}

func TestRecvRates(t *testing.T) {
	cn := trace.Conn{Open: 0, Samples: []trace.Sample{{At: 3 * time.Second, Recv: 300}, {At: time.Second, Recv: 100}},
		LastRecv: 4 * time.Second, BytesRecv: 700}
	got := recvRates(cn, time.Second)
	want := []float64{100, 100, 100, 400} // samples out of order; the last bytes after the last sample
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("recvRates = %v, want %v", got, want)
	}
	if recvRates(trace.Conn{BytesRecv: 5}, time.Second) != nil {
		t.Error("rates without samples")
	}
}
