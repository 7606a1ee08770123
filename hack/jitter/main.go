// Command jitter makes many traces out of a few real ones, for the advise benchmark: each
// copy gets the first trace's workload, a new ID, a later start and every time and duration in it scaled
// by one random factor, so that the copies stay consistent traces of the same workload.
//
//	go run ./hack/jitter -n 10000 -o DIR real1.json.gz real2.json.gz
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coldtrace/coldtrace/trace"
)

func main() {
	n := flag.Int("n", 10000, "traces to write")
	out := flag.String("o", "", "directory to write them to (DIR/<id>.json.gz)")
	spread := flag.Float64("jitter", 0.2, "durations are scaled by a factor in [1-j/2, 1+j/2]")
	flag.Parse()
	if *out == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: jitter -n N -o DIR TRACE...")
		os.Exit(2)
	}
	if err := run(*n, *out, *spread, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "jitter:", err)
		os.Exit(1)
	}
}

func run(n int, out string, spread float64, paths []string) error {
	var seeds []map[string]any
	for _, p := range paths {
		t, err := trace.ReadFile(p)
		if err != nil {
			return err
		}
		b, err := json.Marshal(t)
		if err != nil {
			return err
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		seeds = append(seeds, v)
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now().Add(-time.Hour)
	for i := range n {
		f := 1 + spread*(rng.Float64()-0.5)
		v := scale(seeds[i%len(seeds)], f).(map[string]any)
		v["id"] = fmt.Sprintf("jitter-%06d", i)
		v["workload"] = seeds[0]["workload"] // one workload, as runs of one image are
		v["start"] = start.Add(time.Duration(i) * 100 * time.Millisecond).UTC().Format(time.RFC3339Nano)
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		var t trace.Trace
		if err := json.Unmarshal(b, &t); err != nil {
			return err
		}
		consistent(&t)
		if err := trace.WriteFileMode(filepath.Join(out, t.ID+".json.gz"), &t, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// consistent makes the sums that rounding each scaled time may break exact again: the
// duration is where the critical path ends, and each phase's share of it the sum of its
// segments.
func consistent(t *trace.Trace) {
	if len(t.Critical) == 0 {
		return
	}
	t.Duration = t.Critical[len(t.Critical)-1].End
	share := map[trace.PhaseName]trace.Duration{}
	for _, s := range t.Critical {
		share[s.Phase] += s.End - s.Start
	}
	for i := range t.Phases {
		t.Phases[i].Critical = share[t.Phases[i].Name]
	}
}

// timed says whether a field is a time since the trace's start or a duration: those in
// nanoseconds, and the intervals' and samples' compact s, e and t. The monotonic clock's
// reading at the start is not.
func timed(k string) bool {
	return (strings.HasSuffix(k, "_ns") && k != "monotonic_start_ns") || k == "s" || k == "e" || k == "t"
}

// scale copies v with every timed number multiplied by f.
func scale(v any, f float64) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			if num, ok := e.(float64); ok && timed(k) {
				m[k] = float64(int64(num * f))
				continue
			}
			m[k] = scale(e, f)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = scale(e, f)
		}
		return s
	}
	return v
}
