package recorder

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/internal/testenv"
)

// BenchmarkOverhead runs a start-up-heavy workload (20,000 small file reads, a 1 GiB
// read, a 64 MiB loopback download) untraced and traced, interleaved, b.N times each, and
// reports the ratio of the median times the workload measured itself. Files are in the
// page cache, which makes the tracer's share of the time as large as it gets.
//
//	sudo go test -run '^$' -bench Overhead -benchtime 10x ./recorder
func BenchmarkOverhead(b *testing.B) {
	testenv.RequireBPF(b)
	testenv.RequireBinary(b, "gcc")
	bin := filepath.Join(b.TempDir(), "startup")
	if out, err := exec.Command("gcc", "-O2", "-o", bin, "testdata/startup.c").CombinedOutput(); err != nil {
		b.Fatalf("gcc: %v\n%s", err, out)
	}
	dir := b.TempDir()
	small := make([]byte, 4096)
	for i := 0; i < 20000; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%05d", i)), small, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	big := filepath.Join(dir, "big")
	f, err := os.Create(big)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := 0; i < 1024; i++ {
		f.Write(chunk)
	}
	f.Close()
	srv := origin.Start(b, 64<<20)
	args := []string{bin, dir, "20000", big, strconv.Itoa(srv.Port())}

	elapsed := func(out []byte) time.Duration {
		for _, line := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(line, "ELAPSED "); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return time.Duration(n)
			}
		}
		b.Fatalf("no ELAPSED line in %q", out)
		return 0
	}
	exec.Command(args[0], args[1:]...).Run() // warm the page cache
	var plain, traced []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out, err := exec.Command(args[0], args[1:]...).Output()
		if err != nil {
			b.Fatal(err)
		}
		plain = append(plain, elapsed(out))
		var buf bytes.Buffer
		tr, err := Record(context.Background(), Options{Command: args, Stdout: &buf})
		if err != nil {
			b.Fatal(err)
		}
		if tr.LostEvents > 0 {
			b.Fatalf("lost %d events", tr.LostEvents)
		}
		traced = append(traced, elapsed(buf.Bytes()))
	}
	b.StopTimer()
	slices.Sort(plain)
	slices.Sort(traced)
	mp, mt := plain[len(plain)/2], traced[len(traced)/2]
	b.ReportMetric(float64(mp.Microseconds())/1000, "untraced-ms")
	b.ReportMetric(float64(mt.Microseconds())/1000, "traced-ms")
	b.ReportMetric(100*(float64(mt)/float64(mp)-1), "overhead-%")
}
