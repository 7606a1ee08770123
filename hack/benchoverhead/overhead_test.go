//go:build overhead

// Package benchoverhead measures what coldtrace costs the workloads it records and the
// node it runs on: `make bench-overhead`. It is a benchmark, not a test: it prints figures
// and asserts nothing about speed.
package benchoverhead

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/bpf"
	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/recorder"
	"github.com/coldtrace/coldtrace/watcher"
)

var (
	pairs  = flag.Int("pairs", 7, "untraced/traced pairs per workload")
	shapes = flag.String("shapes", "imports,smallfiles,mmap-hot,mmap-cold,anon,seqread,download,loader", "workloads to run")
	idleS  = flag.Duration("idle", 20*time.Second, "how long the idle agent's CPU is measured")
	parts  = flag.String("parts", "workloads,tax,agent", "which parts to run")
)

// BenchmarkOverhead runs each workload untraced and under recorder.Record, interleaved,
// and prints the traced/untraced ratio of the times the workload measured itself: the
// median over the pairs and a 90% bootstrap interval of it. Then the tax on an untraced
// process's syscalls with no probes, with the agent's idle probes, and with the probes
// active (another process recorded), and the idle agent's CPU and memory.
//
//	make bench-overhead PAIRS=7   (go test -tags overhead -run '^$' -bench Overhead -benchtime 1x ./hack/benchoverhead -args -pairs 7)
func BenchmarkOverhead(b *testing.B) {
	testenv.RequireBPF(b)
	testenv.RequireBinary(b, "python3")
	testenv.RequireBinary(b, "gcc")
	for range b.N {
		for _, part := range strings.Split(*parts, ",") {
			switch part {
			case "workloads":
				workloads(b)
			case "tax":
				tax(b)
			case "agent":
				agentFootprint(b)
			default:
				b.Fatalf("no part %q", part)
			}
		}
	}
}

func workloads(b *testing.B) {
	dir := b.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "small"), 0o755); err != nil {
		b.Fatal(err)
	}
	page := make([]byte, 4096)
	for i := range 5000 {
		if err := os.WriteFile(filepath.Join(dir, "small", fmt.Sprintf("f%04d", i)), page, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	writeRandom(b, filepath.Join(dir, "weights"), 256<<20)
	writeRandom(b, filepath.Join(dir, "big"), 512<<20)
	port := serve(b, 256<<20)
	script, _ := filepath.Abs("testdata/shapes.py")

	fmt.Printf("\n%-11s %12s %12s %8s  %-17s %9s  %s\n", "workload", "untraced", "traced", "ratio", "90% interval", "min ratio", "lost events")
	for _, shape := range strings.Split(*shapes, ",") {
		args := []string{"python3", script, shape, dir, strconv.Itoa(port)}
		run(args) // warm the page cache and the .pyc files
		var plain, traced []float64
		var lost uint64
		for i := range *pairs {
			// Alternate which goes first, so that a drift favours neither.
			for _, tr := range []bool{i%2 == 0, i%2 != 0} {
				if !tr {
					plain = append(plain, run(args))
					continue
				}
				var out bytes.Buffer
				t, err := recorder.Record(context.Background(), recorder.Options{Command: args, Stdout: &out, Stderr: os.Stderr})
				if err != nil {
					b.Fatal(err)
				}
				lost += t.LostEvents
				traced = append(traced, elapsed(b, out.Bytes()))
			}
		}
		lo, mid, hi := ratio(plain, traced)
		fmt.Printf("%-11s %12s %12s %7.3fx  [%.3f, %.3f]   %7.3fx  %d\n", shape, ms(median(plain)), ms(median(traced)), mid, lo, hi, slices.Min(traced)/slices.Min(plain), lost)
	}
}

// tax times an untraced process's syscalls: a getppid loop and dd with 512-byte blocks.
func tax(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "getppid")
	if out, err := exec.Command("gcc", "-O2", "-o", bin, "testdata/getppid.c").CombinedOutput(); err != nil {
		b.Fatalf("gcc: %v\n%s", err, out)
	}
	const calls = 200000
	getppid := func() float64 { return run([]string{bin, strconv.Itoa(calls)}) / calls }
	dd := func() float64 {
		start := time.Now()
		if err := exec.Command("dd", "if=/dev/zero", "of=/dev/null", "bs=512", "count=200000").Run(); err != nil {
			b.Fatal(err)
		}
		return float64(time.Since(start))
	}
	other := exec.Command("sleep", "3600") // the process "recorded" meanwhile
	if err := other.Start(); err != nil {
		b.Fatal(err)
	}
	defer other.Process.Kill()
	states := []string{"no probes", "idle agent", "recording"}
	res := map[string][2][]float64{}
	for range *pairs {
		for _, st := range states {
			var p *bpf.Probes
			if st != "no probes" {
				var err error
				if p, err = bpf.Load(bpf.Config{OnDemand: true}); err != nil {
					b.Fatal(err)
				}
				if st == "recording" {
					p.TrackPID(uint32(other.Process.Pid))
					if err := p.SetActive(true); err != nil {
						b.Fatal(err)
					}
				}
			}
			r := res[st]
			for range 3 {
				r[0], r[1] = append(r[0], getppid()), append(r[1], dd())
			}
			res[st] = r
			if p != nil {
				p.Close()
			}
		}
	}
	base := res["no probes"]
	fmt.Printf("\n%-11s %16s %8s  %-17s %9s %14s %8s  %-17s %9s\n", "agent", "getppid ns/call", "ratio", "90% interval", "min ratio",
		"dd 200k x512B", "ratio", "90% interval", "min ratio")
	for _, st := range states {
		r := res[st]
		lo0, m0, hi0 := ratio(base[0], r[0])
		lo1, m1, hi1 := ratio(base[1], r[1])
		fmt.Printf("%-11s %16.1f %7.3fx  [%.3f, %.3f]  %7.3fx %14s %7.3fx  [%.3f, %.3f]  %7.3fx\n", st, median(r[0]), m0, lo0, hi0, slices.Min(r[0])/slices.Min(base[0]),
			ms(median(r[1])), m1, lo1, hi1, slices.Min(r[1])/slices.Min(base[1]))
	}
}

// agentFootprint runs the agent (in this process) against a containerd where nothing
// starts and measures this process's CPU time and resident memory meanwhile.
func agentFootprint(b *testing.B) {
	ctrd := ctrtest.StartContainerd(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := watcher.Start(ctx, watcher.Options{Address: ctrd.Address, Namespace: "bench", DataDir: b.TempDir(), Log: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(2 * time.Second) // settle
	var r0, r1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	start := time.Now()
	time.Sleep(*idleS)
	syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	cpu := time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
	fmt.Printf("\nidle agent over %v: CPU %.2f%% of one CPU, RSS %d MiB (the whole bench process: an upper bound)\n",
		time.Since(start).Round(time.Second), 100*float64(cpu)/float64(time.Since(start)), rssMiB(b))
	cancel()
	a.Wait()
}

func rssMiB(b *testing.B) int {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb >> 10
		}
	}
	return -1
}

// run runs a workload untraced and returns the time it measured.
func run(args []string) float64 {
	out, err := exec.Command(args[0], args[1:]...).Output()
	if err != nil {
		panic(fmt.Sprintf("%v: %v", args, err))
	}
	return elapsed(nil, out)
}

func elapsed(b *testing.B, out []byte) float64 {
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "ELAPSED "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err == nil {
				return float64(n)
			}
		}
	}
	panic(fmt.Sprintf("no ELAPSED line in %q", out))
}

// ratio is the ratio of the medians of traced and plain, and a 90% bootstrap interval of
// it, resampling the pairs. (The minimum ratio printed beside it is the figure least
// disturbed by other work on a shared machine.)
func ratio(plain, traced []float64) (lo, mid, hi float64) {
	mid = median(traced) / median(plain)
	var boot []float64
	p, t := make([]float64, len(plain)), make([]float64, len(traced))
	for range 2000 {
		for i := range p {
			j := rand.IntN(len(plain))
			p[i], t[i] = plain[j], traced[j]
		}
		boot = append(boot, median(t)/median(p))
	}
	slices.Sort(boot)
	return boot[len(boot)*5/100], mid, boot[len(boot)*95/100]
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(ns float64) string { return fmt.Sprintf("%.1f ms", ns/1e6) }

func writeRandom(b *testing.B, path string, size int) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	r := rand.NewChaCha8([32]byte{1})
	for range size >> 20 {
		r.Read(chunk)
		if _, err := f.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
}

// serve answers every connection on loopback with size bytes after the request line, as
// a model server would.
func serve(b *testing.B, size int) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	body := make([]byte, 1<<20)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Read(make([]byte, 512))
				for range size >> 20 {
					if _, err := c.Write(body); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}
