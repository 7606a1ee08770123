package report

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"reflect"
	"strings"
	"testing"

	"github.com/coldtrace/coldtrace/trace"
)

func TestHTML(t *testing.T) {
	for name, tr := range fixtures() {
		var buf bytes.Buffer
		if err := HTML(&buf, tr); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		// Self-contained: nothing to fetch from anywhere.
		for _, bad := range []string{"http://", "https://", "src=", "href=", "url(", "@import"} {
			if strings.Contains(out, bad) {
				t.Errorf("%s: page references %q", name, bad)
			}
		}
		if !strings.HasPrefix(out, "<!DOCTYPE html>") || !strings.HasSuffix(out, "</html>\n") {
			t.Errorf("%s: not a whole page", name)
		}
		// The inline SVG is well-formed XML with hover titles.
		start, end := strings.Index(out, "<svg "), strings.Index(out, "</svg>")
		if start < 0 || end < start {
			t.Fatalf("%s: no inline SVG", name)
		}
		var root node
		if err := xml.Unmarshal([]byte(out[start:end+len("</svg>")]), &root); err != nil {
			t.Errorf("%s: inline SVG does not parse: %v", name, err)
		}
		if n := len(root.all(hasClass("phase"))); n != len(tr.Phases) {
			t.Errorf("%s: %d phase lanes, want %d", name, n, len(tr.Phases))
		}
		// The tables: one <h2> per section, each phase a row.
		for _, s := range sections(tr, htmlTop) {
			if !strings.Contains(out, "<h2>"+esc(s.title)+"</h2>") {
				t.Errorf("%s: no table %q", name, s.title)
			}
		}
		for _, p := range tr.Phases {
			if !strings.Contains(out, "<tr><td>"+string(p.Name)+"</td>") {
				t.Errorf("%s: no row for phase %s", name, p.Name)
			}
		}
	}

	var buf bytes.Buffer
	if err := HTML(&buf, realistic()); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"<title>pull: 200 ms → 48.0 s", "<td>0xc020462a</td>", "<td>40.7%</td>", "we&lt;ird&gt; &amp; &#34;q&#34;"} {
		if !strings.Contains(out, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(out, "<ird>") {
		t.Error("a path reached the page unescaped")
	}
}

func TestJSONRoundTrip(t *testing.T) {
	for name, tr := range fixtures() {
		var buf bytes.Buffer
		if err := JSON(&buf, tr); err != nil {
			t.Fatal(err)
		}
		if tr.Format != "" {
			t.Errorf("%s: JSON modified the trace it rendered", name)
		}
		if !strings.Contains(buf.String(), "\n  \"format\": \"coldtrace.trace\"") {
			t.Errorf("%s: not indented JSON:\n%.200s", name, buf.String())
		}
		back, err := trace.Read(&buf)
		if err != nil {
			t.Fatalf("%s: trace.Read: %v", name, err)
		}
		want := *tr
		want.Format, want.Version = trace.Format, trace.Version
		if !reflect.DeepEqual(back, &want) {
			a, _ := json.Marshal(back)
			b, _ := json.Marshal(&want)
			t.Errorf("%s: round trip changed the trace:\n%s\n%s", name, a, b)
		}
	}
}
