package trace

import (
	"bytes"
	"compress/gzip"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sample() *Trace {
	ms := time.Millisecond
	return &Trace{
		ID:       "t1",
		Workload: Workload{Command: []string{"python3", "serve.py"}},
		Start:    time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC),
		Duration: 100 * ms,
		Outcome:  OutcomeReady,
		Ready:    &Ready{At: 100 * ms, Kind: "listen", PID: 7, Addr: "0.0.0.0:8080"},
		Files: []File{{Path: "/m/model.safetensors", Size: 1 << 20, Kind: KindWeights,
			WrittenBytes: 1 << 20, Digest: "sha256:" + strings.Repeat("ab", 32), Origin: "http://10.0.0.1:8000/m/model.safetensors",
			Ranges: []Range{{Off: 0, Len: 4096, First: 40 * ms, Last: 41 * ms, Via: AccessRead}, {Off: 8192, Len: 4096, First: 50 * ms, Last: 50 * ms, Via: AccessMmap}}}},
		Phases: []Phase{
			{Name: PhaseInit, Start: 0, End: 40 * ms, Busy: 40 * ms, Critical: 40 * ms},
			{Name: PhaseLoad, Start: 40 * ms, End: 60 * ms, Busy: 20 * ms, Critical: 20 * ms},
			{Name: PhaseCompute, Start: 60 * ms, End: 100 * ms, Busy: 40 * ms, Critical: 40 * ms},
		},
		Critical: []Segment{{Phase: PhaseInit, Start: 0, End: 40 * ms}, {Phase: PhaseLoad, Start: 40 * ms, End: 60 * ms}, {Phase: PhaseCompute, Start: 60 * ms, End: 100 * ms}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, name := range []string{"t.json", "t.json.gz"} {
		p := filepath.Join(t.TempDir(), name)
		if err := WriteFile(p, sample()); err != nil {
			t.Fatal(err)
		}
		got, err := ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if got.Format != Format || got.Version != Version || got.Ready.At != 100*time.Millisecond || len(got.Files[0].Ranges) != 2 {
			t.Errorf("%s: round trip changed the trace: %+v", name, got)
		}
	}
}

func encode(t *testing.T, tr *Trace) []byte {
	var b bytes.Buffer
	if err := Write(&b, tr, false); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestReadRefusesMalformed(t *testing.T) {
	good := string(encode(t, sample()))
	gz := func(s string) string {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		w.Write([]byte(s))
		w.Close()
		return b.String()
	}
	cases := map[string]struct{ in, want string }{
		"empty":          {"", "truncated"},
		"not json":       {"hello", "malformed JSON"},
		"truncated":      {good[:len(good)/2], "truncated"},
		"truncated gzip": {gz(good)[:40], "not a trace"},
		"bad gzip":       {"\x1f\x8bxxxxxxxxxxxx", "bad gzip header"},
		"other format":   {strings.Replace(good, `"coldtrace.trace"`, `"other"`, 1), `format is "other"`},
		"future version": {strings.Replace(good, `"version":1`, `"version":99`, 1), "version 99 is not supported"},
		"unknown field":  {strings.Replace(good, `"id":`, `"bogus":1,"id":`, 1), `unknown field "bogus"`},
		"wrong type":     {strings.Replace(good, `"duration_ns":100000000`, `"duration_ns":"x"`, 1), "wrong type"},
		"trailing":       {good + good, "trailing data"},
		"negative range": {strings.Replace(good, `"off":8192`, `"off":-5`, 1), "is invalid"},
		"unsorted":       {strings.Replace(good, `"off":8192`, `"off":0`, 1), "not sorted"},
		"unknown phase":  {strings.Replace(good, `"name":"load"`, `"name":"lunch"`, 1), `unknown phase "lunch"`},
		"bad sum":        {strings.Replace(good, `"critical_ns":20000000`, `"critical_ns":10`, 1), "add up"},
		"gap in path":    {strings.Replace(good, `"start_ns":40000000,"end_ns":60000000}`, `"start_ns":41000000,"end_ns":60000000}`, 1), "does not follow"},
		"ready outside":  {strings.Replace(good, `"at_ns":100000000`, `"at_ns":200000000`, 1), "outside the trace"},
		"bad outcome":    {strings.Replace(good, `"outcome":"ready"`, `"outcome":"meh"`, 1), "unknown outcome"},
		"bad digest":     {strings.Replace(good, `"digest":"sha256:ab`, `"digest":"sha256:AB`, 1), "has digest"},
		"negative write": {strings.Replace(good, `"written_bytes":1048576`, `"written_bytes":-1`, 1), "negative count"},
	}
	for name, c := range cases {
		_, err := Read(strings.NewReader(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one that says %q", name, err, c.want)
		}
	}
}

func TestWriteFileIsAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "t.json.gz")
	if err := WriteFile(p, sample()); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "t.json"), sample()); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
	m, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(m) != 0 {
		t.Errorf("temporary files left behind: %v", m)
	}
}

func FuzzRead(f *testing.F) {
	var b bytes.Buffer
	Write(&b, sample(), false)
	f.Add(b.Bytes())
	b.Reset()
	Write(&b, sample(), true)
	f.Add(b.Bytes())
	f.Add([]byte(`{"format":"coldtrace.trace","version":1,"outcome":"ready"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := Read(bytes.NewReader(data))
		if err != nil {
			return
		}
		// Whatever is accepted must be valid, and must survive a round trip.
		if err := tr.Validate(); err != nil {
			t.Fatalf("accepted an invalid trace: %v", err)
		}
		var out bytes.Buffer
		if err := Write(&out, tr, false); err != nil {
			t.Fatal(err)
		}
		if _, err := Read(&out); err != nil {
			t.Fatalf("re-reading an accepted trace: %v", err)
		}
	})
}
