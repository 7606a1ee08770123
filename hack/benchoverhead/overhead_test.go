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

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

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
// and prints the traced/untraced ratios of what the workload measured of itself, its wall
// time and its CPU time (where the probes' work lands, and what other work on a shared
// machine disturbs least): the median over the pairs and a 90% bootstrap interval of it.
// Then the tax on an untraced process's syscalls with no probes, with the agent's idle
// probes, and with the probes active (another process recorded), and the idle agent's CPU
// and memory.
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

	fmt.Printf("\n%-11s %10s %8s  %-15s %10s %8s  %-15s %s\n", "workload", "wall", "ratio", "90% interval", "CPU", "ratio", "90% interval", "lost events")
	for _, shape := range strings.Split(*shapes, ",") {
		args := []string{"python3", script, shape, dir, strconv.Itoa(port)}
		run(args) // warm the page cache and the .pyc files
		var plain, traced []sample
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
				traced = append(traced, parse(out.Bytes()))
			}
		}
		fmt.Printf("%-11s %10s %s %10s %s %d\n", shape, ms(median(walls(plain))), ratioCol(walls(plain), walls(traced)),
			ms(median(cpus(plain))), ratioCol(cpus(plain), cpus(traced)), lost)
	}
}

// sample is what a workload measured of itself: wall time and its CPU time (ns).
type sample struct{ wall, cpu float64 }

func walls(s []sample) []float64 {
	out := make([]float64, len(s))
	for i := range s {
		out[i] = s[i].wall
	}
	return out
}

func cpus(s []sample) []float64 {
	out := make([]float64, len(s))
	for i := range s {
		out[i] = s[i].cpu
	}
	return out
}

func ratioCol(plain, traced []float64) string {
	lo, mid, hi := ratio(plain, traced)
	return fmt.Sprintf("%7.3fx  [%.3f, %.3f]", mid, lo, hi)
}

// tax times an untraced process's syscalls: a getppid loop and dd with 512-byte blocks.
func tax(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "getppid")
	if out, err := exec.Command("gcc", "-O2", "-o", bin, "testdata/getppid.c").CombinedOutput(); err != nil {
		b.Fatalf("gcc: %v\n%s", err, out)
	}
	const calls = 200000
	getppid := func() sample {
		s := run([]string{bin, strconv.Itoa(calls)})
		return sample{s.wall / calls, s.cpu / calls}
	}
	dd := func() sample {
		start := time.Now()
		cmd := exec.Command("dd", "if=/dev/zero", "of=/dev/null", "bs=512", "count=200000")
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
		return sample{float64(time.Since(start)), float64(cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime())}
	}
	other := exec.Command("sleep", "3600") // the process "recorded" meanwhile
	if err := other.Start(); err != nil {
		b.Fatal(err)
	}
	defer other.Process.Kill()
	states := []string{"no probes", "floor", "idle agent", "recording"}
	res := map[string][2][]sample{}
	for range *pairs {
		for _, st := range states {
			var p *bpf.Probes
			detach := func() {}
			if st == "floor" {
				detach = floor(b)
			} else if st != "no probes" {
				var err error
				if p, err = bpf.Load(bpf.Config{}); err != nil {
					b.Fatal(err)
				}
				if st == "recording" {
					p.TrackPID(uint32(other.Process.Pid))
				} else if err := p.SetActive(false); err != nil {
					b.Fatal(err)
				}
			}
			r := res[st]
			for range 3 {
				r[0], r[1] = append(r[0], getppid()), append(r[1], dd())
			}
			res[st] = r
			detach()
			if p != nil {
				p.Close()
			}
		}
	}
	base := res["no probes"]
	fmt.Printf("\n%-11s %14s %8s  %-15s %10s %8s  %-15s %s\n", "untraced", "getppid CPU", "ratio", "90% interval",
		"dd CPU", "ratio", "90% interval", "wall ratios (getppid, dd)")
	for _, st := range states {
		r := res[st]
		_, w0, _ := ratio(walls(base[0]), walls(r[0]))
		_, w1, _ := ratio(walls(base[1]), walls(r[1]))
		fmt.Printf("%-11s %11.1f ns %s %10s %s %.3fx, %.3fx\n", st, median(cpus(r[0])), ratioCol(cpus(base[0]), cpus(r[0])),
			ms(median(cpus(r[1]))), ratioCol(cpus(base[1]), cpus(r[1])), w0, w1)
	}
}

// floor attaches two programs that return at once to the raw sys_enter and sys_exit
// tracepoints, where the syscall dispatchers sit: what any program there costs every
// syscall on the node (the kernel's tracing slow path and two program runs), below which
// no filter in a program can go. It returns their detach.
func floor(b *testing.B) func() {
	var links []link.Link
	detach := func() {
		for _, l := range links {
			l.Close()
		}
	}
	for _, tp := range []string{"sys_enter", "sys_exit"} {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: tp, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		})
		if err != nil {
			detach()
			b.Fatal(err)
		}
		l, err := link.AttachTracing(link.TracingOptions{Program: prog})
		prog.Close() // the link holds it
		if err != nil {
			detach()
			b.Fatal(err)
		}
		links = append(links, l)
	}
	return detach
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

// run runs a workload untraced and returns what it measured.
func run(args []string) sample {
	out, err := exec.Command(args[0], args[1:]...).Output()
	if err != nil {
		panic(fmt.Sprintf("%v: %v", args, err))
	}
	return parse(out)
}

// parse reads a workload's ELAPSED and CPU lines.
func parse(out []byte) sample {
	var s sample
	for _, line := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(line, " ")
		n, err := strconv.ParseInt(v, 10, 64)
		switch {
		case err != nil:
		case k == "ELAPSED":
			s.wall = float64(n)
		case k == "CPU":
			s.cpu = float64(n)
		}
	}
	if s.wall == 0 || s.cpu == 0 {
		panic(fmt.Sprintf("no ELAPSED and CPU lines in %q", out))
	}
	return s
}

// ratio is the ratio of the medians of traced and plain, and a 90% bootstrap interval of
// it, resampling the pairs.
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
