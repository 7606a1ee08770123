package advisor

import (
	"fmt"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/trace"
)

const (
	testImage  = "registry.local/llm:1"
	testDigest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	testLayer  = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

// step is one phase of a generated trace, run one after the other.
type step struct {
	phase trace.PhaseName
	secs  float64
	bytes int64
}

func sec(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// genTrace builds a valid trace whose phases run in sequence, each wholly on the
// critical path, as a container start of testImage.
func genTrace(t testing.TB, id string, steps ...step) *trace.Trace {
	t.Helper()
	tr := &trace.Trace{
		Format: trace.Format, Version: trace.Version, ID: id,
		Workload: trace.Workload{Image: testImage, ImageDigest: testDigest},
		Outcome:  trace.OutcomeReady,
		Host:     trace.Host{Links: []trace.Link{{Name: "eth0", Mbps: 10000}}, Disks: []trace.Disk{{Name: "nvme0n1"}}},
	}
	var at time.Duration
	for _, s := range steps {
		end := at + sec(s.secs)
		tr.Phases = append(tr.Phases, trace.Phase{Name: s.phase, Start: at, End: end, Busy: end - at, Critical: end - at, Bytes: s.bytes})
		tr.Critical = append(tr.Critical, trace.Segment{Phase: s.phase, Start: at, End: end})
		at = end
	}
	tr.Duration = at
	tr.Ready = &trace.Ready{At: at, Kind: "listen"}
	if err := tr.Validate(); err != nil {
		t.Fatalf("generated trace %s is invalid: %v", id, err)
	}
	return tr
}

// readFile records that tr read ranges of a host file, first at `first` seconds.
func readFile(tr *trace.Trace, path string, size int64, first float64, ranges ...[2]int64) {
	f := trace.File{Path: path, Size: size, Kind: trace.KindOther, FirstOpen: sec(first)}
	for _, r := range ranges {
		f.Ranges = append(f.Ranges, trace.Range{Off: r[0], Len: r[1], First: sec(first), Last: sec(first), Via: trace.AccessRead})
	}
	tr.Files = append(tr.Files, f)
}

func mustAnalyze(t *testing.T, traces []*trace.Trace, opt Options) *Advice {
	t.Helper()
	a, err := Analyze(traces, opt)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func near(got, want, tol float64) bool { return got >= want-tol && got <= want+tol }

func ids(recs []Recommendation) string {
	s := ""
	for _, r := range recs {
		s += fmt.Sprintf(" %s(%.2f)", r.ID, r.Saved.Value)
	}
	return s
}
