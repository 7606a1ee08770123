package report

import (
	"strings"
	"testing"

	"github.com/coldtrace/coldtrace/trace"
)

// TestTablePullContention shows each other pull that downloaded during the image's pull:
// when, how much, and at what rate.
func TestTablePullContention(t *testing.T) {
	tr := realistic()
	tr.Pull.Overlaps = []trace.PullOverlap{
		{Ref: "registry.example.internal/monitoring/dcgm-exporter:3.3", Namespace: "k8s.io",
			Blobs: []string{"sha256:ccc", "sha256:ddd"}, Bytes: 800 * mib,
			Intervals: []trace.Interval{{Start: 2 * sec, End: 6 * sec}, {Start: 8 * sec, End: 12 * sec}}},
		{Namespace: "default", Blobs: []string{"sha256:eee"}, Bytes: 100 * mib,
			Intervals: []trace.Interval{{Start: 40 * sec, End: 48 * sec}}},
	}
	tr.Format, tr.Version = trace.Format, trace.Version
	if err := tr.Validate(); err != nil {
		t.Fatal(err)
	}
	out := renderTable(t, tr, TableOptions{})
	rows := tableRows(t, out, "Pull contention")
	want := [][]string{
		{"registry.example.internal/monitoring/dcgm-exporter:3.3", "k8s.io", "2", "2.00 s", "12.0 s", "8.00 s", "800.0 MiB", "100.0 MiB/s"},
		{"unknown image", "default", "1", "40.0 s", "48.0 s", "8.00 s", "100.0 MiB", "12.5 MiB/s"},
	}
	if len(rows) != len(want) {
		t.Fatalf("pull contention rows %q, want %q\n%s", rows, want, out)
	}
	for i := range want {
		if strings.Join(cells(rows[i]), "|") != strings.Join(want[i], "|") {
			t.Errorf("row %d: %q, want %q", i, cells(rows[i]), want[i])
		}
	}
	// Without overlaps there is no such table.
	if strings.Contains(renderTable(t, empty(), TableOptions{}), "Pull contention") {
		t.Error("a trace without overlapping pulls has a pull contention table")
	}
}
