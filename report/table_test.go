package report

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/internal/units"
	"github.com/coldtrace/coldtrace/trace"
)

func renderTable(t *testing.T, tr *trace.Trace, opts TableOptions) string {
	t.Helper()
	var buf bytes.Buffer
	if err := Table(&buf, tr, opts); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// tableRows returns the cells of the rows of the titled section, header excluded.
func tableRows(t *testing.T, out, title string) [][]string {
	t.Helper()
	_, rest, ok := strings.Cut(out, "\n"+title+"\n")
	if !ok {
		t.Fatalf("no section %q in\n%s", title, out)
	}
	block, _, _ := strings.Cut(rest, "\n\n")
	lines := strings.Split(block, "\n")
	var rows [][]string
	for _, l := range lines[1:] { // lines[0] is the header
		if strings.HasPrefix(l, "  (") {
			continue // the section's note
		}
		rows = append(rows, strings.Split(strings.TrimSpace(l), "  "))
	}
	return rows
}

// cells splits a row on runs of two or more spaces, the tabwriter padding.
func cells(row []string) []string {
	var out []string
	for _, c := range row {
		if c = strings.TrimSpace(c); c != "" {
			out = append(out, c)
		}
	}
	return out
}

func TestTableSharesAddUp(t *testing.T) {
	for _, tr := range []*trace.Trace{realistic(), incomplete()} {
		out := renderTable(t, tr, TableOptions{})
		rows := tableRows(t, out, "Phases")
		if len(rows) != len(tr.Phases)+1 {
			t.Fatalf("%s: %d phase rows, want %d phases and a total:\n%s", tr.ID, len(rows), len(tr.Phases), out)
		}
		var sum int
		var names []string
		for _, r := range rows[:len(rows)-1] {
			c := cells(r)
			names = append(names, c[0])
			share := strings.TrimSuffix(c[6], "%")
			v, err := strconv.ParseFloat(share, 64)
			if err != nil {
				t.Fatalf("%s: share %q: %v", tr.ID, c[6], err)
			}
			sum += int(v*10 + 0.5)
		}
		if sum != 1000 {
			t.Errorf("%s: shares add up to %d tenths of a percent, want 1000", tr.ID, sum)
		}
		if total := cells(rows[len(rows)-1]); total[0] != "total" || !strings.Contains(strings.Join(total, " "), "100.0%") {
			t.Errorf("%s: total row %q", tr.ID, total)
		}
		// Phase order, whatever the order in the trace.
		var want []string
		for _, p := range trace.Phases {
			if _, ok := tr.Phase(p); ok {
				want = append(want, string(p))
			}
		}
		if strings.Join(names, ",") != strings.Join(want, ",") {
			t.Errorf("%s: phases in order %v, want %v", tr.ID, names, want)
		}
	}
}

func TestTableRealisticContent(t *testing.T) {
	out := renderTable(t, realistic(), TableOptions{})
	for _, want := range []string{
		"workload:     registry.example.internal/vllm/vllm-openai:v0.9.0",
		"total:        118 s",
		"ready:        118 s via listen on 0.0.0.0:8000 (pid 4242)",
		"lost events:  0",
		"contended with registry.example.internal/monitoring/dcgm-exporter:3.3",
		// pull: 9 GiB in 46.8 s busy.
		"9.0 GiB    196.9 MiB/s",
		// Ioctl request codes in hex with their counts, and the total time.
		"0xc020462a  1520", "1882 ioctls in 2.93 s in all",
		// Driver calls with durations.
		"cuInit                    4242  4242  68.0 s  3.30 s",
		// A probe that did not attach, and what that loses.
		"fentry/vfs_read  operation not permitted  per-file read latency",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "INCOMPLETE") {
		t.Error("a complete trace is marked incomplete")
	}
	// Top files by bytes, largest first; miss bytes are pages times 4 KiB.
	files := tableRows(t, out, "Top files by bytes")
	if first := cells(files[0]); !strings.HasSuffix(first[0], ".safetensors") || first[3] != "3.0 GiB" || first[4] != "100000" || first[5] != "390.6 MiB" {
		t.Errorf("first file row %q", first)
	}
	if len(files) != 7 { // every file that moved bytes; the device node read none
		t.Errorf("%d files by bytes, want 7", len(files))
	}
	if byTime := cells(tableRows(t, out, "Top files by read time")[0]); byTime[0] != "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15" {
		t.Errorf("slowest file %q", byTime)
	}
	// Connections to one remote are one peer; rates are over the receiving window.
	peers := tableRows(t, out, "Network peers")
	if p := cells(peers[0]); p[0] != "18.164.52.1:443" || p[3] != "2" || p[4] != "16.0 GiB" || p[6] != "35.0 s" || p[7] != "481.9 MiB/s" {
		t.Errorf("first peer %q", p)
	}
	if len(peers) != 3 {
		t.Errorf("%d peers, want 3", len(peers))
	}
	// Control characters in a path must not break the layout.
	if strings.Contains(out, "\x01") || strings.Contains(out, "\"q\"\t") {
		t.Error("control characters from a path reached the terminal")
	}
}

func TestTableTop(t *testing.T) {
	out := renderTable(t, realistic(), TableOptions{Top: 2})
	if n := len(tableRows(t, out, "Top files by bytes")); n != 2 {
		t.Errorf("Top 2 shows %d files", n)
	}
	if !strings.Contains(out, "(and 5 more)") {
		t.Errorf("no note of the files left out:\n%s", out)
	}
	if n := len(tableRows(t, out, "GPU ioctls")); n != 2 {
		t.Errorf("Top 2 shows %d ioctl rows", n)
	}
}

func TestTableEmpty(t *testing.T) {
	out := renderTable(t, empty(), TableOptions{})
	for _, want := range []string{
		"workload:     ./serve --port 8080",
		"not ready (exited): the command exited with status 127",
		"(no phases recorded)", "(no TCP connections)", "(no accelerator activity",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestTableIncomplete(t *testing.T) {
	out := renderTable(t, incomplete(), TableOptions{})
	for _, want := range []string{
		"lost events:  1234",
		"warning:      ring buffer full",
		"INCOMPLETE:",
		"tracepoint/exceptions/page_fault_user  no such tracepoint  mmapped reads of weights",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestShares(t *testing.T) {
	ph := func(d ...time.Duration) []trace.Phase {
		var ps []trace.Phase
		for _, c := range d {
			ps = append(ps, trace.Phase{Critical: c})
		}
		return ps
	}
	for _, c := range []struct {
		in   []trace.Phase
		want []int
	}{
		{ph(1, 1, 1), []int{334, 333, 333}},
		{ph(2, 1), []int{667, 333}},
		{ph(0, 5), []int{0, 1000}},
		{ph(0, 0), nil},
		{nil, nil},
	} {
		if got := shares(c.in); !slices.Equal(got, c.want) || (got == nil) != (c.want == nil) {
			t.Errorf("shares(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestUnits(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{units.Bytes(0), "0 B"}, {units.Bytes(1023), "1023 B"}, {units.Bytes(1536), "1.5 KiB"},
		{units.Bytes(17_700_000_000), "16.5 GiB"}, {units.Bytes(5 << 40), "5.0 TiB"},
		{fmtDur(0), "0"}, {fmtDur(500), "500 ns"}, {fmtDur(12345 * time.Nanosecond), "12.3 µs"},
		{fmtDur(1500 * time.Microsecond), "1.50 ms"}, {fmtDur(333 * time.Second), "333 s"},
		{fmtRate(10<<20, 2*time.Second), "5.0 MiB/s"}, {fmtRate(5, 0), "-"},
		{fmtShare(1000), "100.0%"}, {fmtShare(7), "0.7%"},
		{fmtTick(1500*time.Millisecond, 10*time.Second), "1.5 s"}, {fmtTick(500*time.Microsecond, 3*time.Millisecond), "0.5 ms"},
		{clipMiddle("model-00001-of-00004.safetensors", 26), "model-00001-…4.safetensors"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

// errWriter fails every write, as a closed pipe does.
type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestRender(t *testing.T) {
	for _, f := range Formats {
		var buf bytes.Buffer
		if err := Render(&buf, realistic(), f); err != nil || buf.Len() == 0 {
			t.Errorf("%s: %d bytes, %v", f, buf.Len(), err)
		}
		if err := Render(errWriter{}, realistic(), f); err == nil {
			t.Errorf("%s: a failing writer's error was lost", f)
		}
	}
	err := Render(&bytes.Buffer{}, realistic(), "pdf")
	if err == nil || !strings.Contains(err.Error(), `"pdf"`) || !strings.Contains(err.Error(), "table, json, svg, html, chrome") {
		t.Errorf("unknown format error: %v", err)
	}
	if err := Render(&bytes.Buffer{}, nil, "table"); err == nil {
		t.Error("a nil trace rendered")
	}
}
