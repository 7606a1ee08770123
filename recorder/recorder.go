// Package recorder runs a command under the tracer, from its exec until it is ready
// (listens on TCP), exits, times out or is interrupted, and returns its trace.
package recorder

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/bpf"
	"github.com/coldtrace/coldtrace/collector"
	"github.com/coldtrace/coldtrace/trace"
)

// Options configure one recording.
type Options struct {
	Command []string
	Dir     string   // working directory; empty means the current one
	Env     []string // nil means the current environment
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
	// Timeout stops a recording that is not ready by then; zero means no limit.
	Timeout time.Duration
	// KeepRunning leaves the command running after ready instead of stopping it.
	KeepRunning bool
	// RingBufferBytes sizes the kernel's ring buffer (a power of two); zero means 16 MiB.
	RingBufferBytes int
	// DevicePatterns are globs of accelerator device nodes; nil means the defaults.
	DevicePatterns []string
	// Log receives messages about probes that could not attach and other degradations.
	Log io.Writer
	// OnStart, when set, is called once the command runs under the tracer.
	OnStart func(pid int)
	// OnExit, when set, is called once the command has exited but before it is reaped,
	// while /proc/PID still describes it.
	OnExit func(pid int)

	// slowReader makes the reader wait this long after each record: tests use it to
	// overflow a small ring buffer for certain.
	slowReader time.Duration
}

// Monotonic reads CLOCK_MONOTONIC, the clock of the kernel's event timestamps.
func Monotonic() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// Record runs the command and traces it. Cancelling ctx (Ctrl-C) stops the recording and
// still returns the partial trace. The error is non-nil only when there is no trace.
func Record(ctx context.Context, opts Options) (*trace.Trace, error) {
	if len(opts.Command) == 0 {
		return nil, errors.New("no command to record")
	}
	path, err := exec.LookPath(opts.Command[0])
	if err != nil {
		return nil, fmt.Errorf("cannot run %q: %w", opts.Command[0], errors.Unwrap(err))
	}
	probes, warnings, err := LoadProbes(opts.RingBufferBytes, opts.Log)
	if err != nil {
		return nil, err
	}
	defer probes.Close()

	cmd := exec.Command(path, opts.Command[1:]...)
	cmd.Args[0] = opts.Command[0]
	cmd.Dir, cmd.Env = opts.Dir, opts.Env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = opts.Stdin, opts.Stdout, opts.Stderr
	cwd := opts.Dir
	if cwd == "" {
		cwd, _ = os.Getwd()
	}
	cwd, _ = filepath.Abs(cwd)

	wall := time.Now()
	pid, t0, err := startTraced(cmd, probes)
	if err != nil {
		return nil, err
	}
	col, uprobeErrs := NewCollector(t0, probes, opts.DevicePatterns)
	col.AddProcess(uint32(pid), uint32(os.Getpid()), path, cwd, t0)
	if opts.OnStart != nil {
		opts.OnStart(pid)
	}

	readyc := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- readLoop(probes.Ring(), col, readyc, opts.slowReader) }()

	exited := make(chan uint64, 1)
	go func() {
		var info unix.Siginfo
		// WNOWAIT leaves the zombie in place so that OnExit can read /proc/PID.
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		end := Monotonic()
		if err == nil && opts.OnExit != nil {
			opts.OnExit(pid)
		}
		exited <- end
	}()

	meta := collector.Meta{ID: NewID(wall), Workload: trace.Workload{Command: opts.Command}, Start: wall, Warnings: warnings}
	end, rootExited := await(ctx, readyc, opts.Timeout, exited, &meta)
	meta.End = end
	EndNow(&meta)

	finish(probes, col, done, uprobeErrs, &meta)
	DigestWritten(ctx, col, true, &meta)
	if meta.Outcome == trace.OutcomeExited {
		status := exitStatus(col, pid)
		if status != 0 {
			meta.Error = fmt.Sprintf("the command exited (%s) before it was ready", status)
		}
	}
	stop(cmd, opts.KeepRunning && !rootExited)
	return Assemble(probes, col, meta), nil
}

// await waits for the end of a recording: ready, the workload's exit (its value is
// returned with true), the timeout (zero: none) or ctx. It sets meta's outcome, and its
// error for a timeout or an interruption.
func await[T any](ctx context.Context, readyc <-chan struct{}, timeout time.Duration, exited <-chan T, meta *collector.Meta) (T, bool) {
	var expired <-chan time.Time
	if timeout > 0 {
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		expired = timer.C
	}
	var none T
	select {
	case <-readyc:
		meta.Outcome = trace.OutcomeReady
	case e := <-exited:
		meta.Outcome = trace.OutcomeExited
		return e, true
	case <-expired:
		meta.Outcome = trace.OutcomeTimeout
		meta.Error = fmt.Sprintf("not ready after %s", timeout)
	case <-ctx.Done():
		meta.Outcome = trace.OutcomeInterrupted
		meta.Error = "recording interrupted"
	}
	return none, false
}

// LoadProbes loads the kernel side, reports, as warnings and on logw, the probes that
// could not attach, and uprobes the host's driver library.
func LoadProbes(ringBytes int, logw io.Writer) (*bpf.Probes, []string, error) {
	if logw == nil {
		logw = io.Discard
	}
	probes, err := bpf.Load(bpf.Config{RingBufferBytes: ringBytes})
	if err != nil {
		return nil, nil, err
	}
	var warnings []string
	for _, p := range probes.Status() {
		if !p.Attached {
			w := fmt.Sprintf("probe %s is missing (%s): lost %s", p.Name, p.Error, p.Loses)
			warnings = append(warnings, w)
			fmt.Fprintln(logw, "coldtrace: "+w)
		}
	}
	attachHostDriver(probes)
	return probes, warnings, nil
}

// NewCollector returns a collector that uprobes the driver library when a traced process
// opens one; the failures to attach arrive on the channel, for the trace's warnings.
func NewCollector(t0 uint64, probes *bpf.Probes, devicePatterns []string) (*collector.Collector, chan string) {
	uprobeErrs := make(chan string, 16)
	col := collector.New(t0, collector.Options{
		DevicePatterns: devicePatterns,
		OnDriverLibrary: func(pid uint32, lib string) {
			if err := probes.AttachLibrary(fmt.Sprintf("/proc/%d/root%s", pid, lib)); err != nil {
				select {
				case uprobeErrs <- fmt.Sprintf("driver calls in %s are not traced: %v", lib, err):
				default:
				}
			}
		},
	})
	return col, uprobeErrs
}

// finish lets the kernel's last events arrive, stops the reader (done is its result),
// applies what the kernel held back, ends a ready recording at the listen, and adds the
// losses and warnings to meta.
func finish(probes *bpf.Probes, col *collector.Collector, done <-chan error, uprobeErrs chan string, meta *collector.Meta) {
	probes.Ring().Flush()
	if err := <-done; err != nil {
		meta.Warnings = append(meta.Warnings, "reading events: "+err.Error())
	}
	held, err := probes.Drain()
	if err != nil {
		meta.Warnings = append(meta.Warnings, err.Error())
	}
	col.HandleHeld(held)
	EndAtReady(col, meta)
	lost, err := probes.Lost()
	if err != nil {
		meta.Warnings = append(meta.Warnings, "reading the lost-event counter: "+err.Error())
	}
	meta.Lost = lost
	if lost > 0 {
		meta.Warnings = append(meta.Warnings, fmt.Sprintf("%d events were lost because the ring buffer was full: raise --ring-buffer", lost))
	}
	CollectorWarnings(col, uprobeErrs, meta)
}

// EndNow ends the recording now, unless its end is set already.
func EndNow(meta *collector.Meta) {
	if meta.End == 0 {
		meta.End = Monotonic()
	}
}

// EndAtReady ends a ready recording at its listen, once the collector has every event.
func EndAtReady(col *collector.Collector, meta *collector.Meta) {
	if r := col.Ready(); meta.Outcome == trace.OutcomeReady && r != nil {
		meta.End = col.Start() + uint64(r.At)
	}
}

// CollectorWarnings adds to meta's warnings the malformed events the collector dropped
// and the driver libraries it could not uprobe (see NewCollector).
func CollectorWarnings(col *collector.Collector, uprobeErrs <-chan string, meta *collector.Meta) {
	if n := col.Errors(); n > 0 {
		meta.Warnings = append(meta.Warnings, fmt.Sprintf("%d malformed events were dropped", n))
	}
	for more := true; more; {
		select {
		case w := <-uprobeErrs:
			meta.Warnings = append(meta.Warnings, w)
		default:
			more = false
		}
	}
}

// digestTimeout bounds the time a recording spends hashing the files the workload wrote
// (see collector.DigestWritten); a file not hashed by then has no digest in the trace.
const digestTimeout = 30 * time.Second

// DigestWritten hashes the possible artifacts the workload wrote, through the roots of its
// live processes (and the host's, with host), and adds what failed to meta's warnings.
func DigestWritten(ctx context.Context, col *collector.Collector, host bool, meta *collector.Meta) {
	ctx, cancel := context.WithTimeout(ctx, digestTimeout)
	defer cancel()
	meta.Warnings = append(meta.Warnings, col.DigestWritten(ctx, host)...)
}

// Assemble adds the host's facts to meta and builds the trace; a missing probe makes it
// incomplete.
func Assemble(probes *bpf.Probes, col *collector.Collector, meta collector.Meta) *trace.Trace {
	meta.Host = collector.HostFacts()
	meta.Host.Probes = probes.Status()
	t := col.Trace(meta)
	for _, p := range meta.Host.Probes {
		if !p.Attached {
			t.Incomplete = true
		}
	}
	return t
}

// hostDriverLibraries are where distributions and the NVIDIA container toolkit install the
// user-space driver. Containers get the host's file bind-mounted, and uprobes follow the
// inode, so attaching here covers them too.
var hostDriverLibraries = []string{
	"/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1",
	"/usr/local/nvidia/lib64/libcuda.so.1", "/usr/lib/wsl/lib/libcuda.so.1",
}

// attachHostDriver uprobes the host's libcuda before the command starts, so that a call
// made right after the library is loaded cannot run ahead of the attach that its open
// would trigger.
func attachHostDriver(probes *bpf.Probes) {
	for _, lib := range hostDriverLibraries {
		if real, err := filepath.EvalSymlinks(lib); err == nil {
			probes.AttachLibrary(real) // a library without the calls is no error here
		}
	}
}

// startTraced starts cmd stopped at its exec (ptrace), adds it to the traced set, takes
// time zero and lets it run. Nothing the command does escapes the tracer, and nothing of
// ours before its exec is traced.
func startTraced(cmd *exec.Cmd, probes *bpf.Probes) (int, uint64, error) {
	type started struct {
		pid int
		t0  uint64
		err error
	}
	res := make(chan started, 1)
	go func() {
		// ptrace requests must come from the thread that forked the child; the thread
		// is discarded with this goroutine.
		runtime.LockOSThread()
		cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true, Setpgid: true}
		if err := cmd.Start(); err != nil {
			res <- started{err: fmt.Errorf("start %s: %w", cmd.Path, err)}
			return
		}
		pid := cmd.Process.Pid
		var ws unix.WaitStatus
		if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil || !ws.Stopped() {
			res <- started{err: fmt.Errorf("start %s: the command did not stop at exec (%v, status %v)", cmd.Path, err, ws)}
			return
		}
		err := probes.TrackPID(uint32(pid))
		t0 := Monotonic()
		if derr := unix.PtraceDetach(pid); err == nil {
			err = derr
		}
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			res <- started{err: fmt.Errorf("trace %s: %w", cmd.Path, err)}
			return
		}
		res <- started{pid: pid, t0: t0}
	}()
	r := <-res
	return r.pid, r.t0, r.err
}

// readLoop feeds ring buffer records to the collector until the reader is flushed or
// closed, and closes readyc at the first listen.
func readLoop(rd *ringbuf.Reader, col *collector.Collector, readyc chan struct{}, slow time.Duration) error {
	var rec ringbuf.Record
	ready := false
	// A deadline bounds only a wait for new records, so one set after each wait is soon
	// enough, and reading a record costs no clock read.
	rd.SetDeadline(time.Now().Add(bpf.PollInterval))
	for {
		err := rd.ReadInto(&rec)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			rd.SetDeadline(time.Now().Add(bpf.PollInterval))
			continue
		case errors.Is(err, ringbuf.ErrFlushed), errors.Is(err, ringbuf.ErrClosed):
			return nil
		case err != nil:
			return err
		}
		col.Handle(rec.RawSample)
		if slow > 0 {
			time.Sleep(slow)
		}
		if !ready && col.Ready() != nil {
			ready = true
			close(readyc)
		}
	}
}

// stop ends the command's process group (unless keep) and reaps the command.
func stop(cmd *exec.Cmd, keep bool) {
	if keep {
		cmd.Process.Release()
		return
	}
	pgid := cmd.Process.Pid
	_ = unix.Kill(-pgid, unix.SIGTERM)
	waited := make(chan struct{})
	go func() { cmd.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(3 * time.Second):
		_ = unix.Kill(-pgid, unix.SIGKILL)
		<-waited
	}
	// Children that outlived the leader still hold the group.
	_ = unix.Kill(-pgid, unix.SIGKILL)
}

type status int

func (s status) String() string {
	ws := unix.WaitStatus(s)
	if ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("exit status %d", ws.ExitStatus())
}

func exitStatus(col *collector.Collector, pid int) status {
	if p, ok := col.Process(uint32(pid)); ok {
		return status(p.ExitCode)
	}
	return 0
}

// NewID names a trace: its start time and a random suffix.
func NewID(t time.Time) string {
	b := make([]byte, 4)
	rand.Read(b)
	return t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}
