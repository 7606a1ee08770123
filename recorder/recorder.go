// Package recorder turns a workload's cold start into a trace: from time zero until it is
// ready (listens on TCP), exits, times out or is interrupted. Recording (recording.go) is
// that lifecycle, written once; its drivers configure it: Record runs a command under the
// tracer, RecordImage pulls and starts a container image through containerd, and the
// watcher (package watcher) begins one for every new container of the node, on probes
// they share.
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

	// slowReader slows the ring's reader (see readRing).
	slowReader time.Duration
}

// monotonic reads CLOCK_MONOTONIC, the clock of the kernel's event timestamps.
func monotonic() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// MonotonicAt converts a wall-clock time of the recent past into CLOCK_MONOTONIC, the
// kernel's event clock.
func MonotonicAt(t time.Time) uint64 {
	now := monotonic()
	return now - min(uint64(max(time.Since(t), 0)), now)
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
	probes, err := LoadProbes(opts.RingBufferBytes, opts.Log)
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
	rec := newRecording(probes, Config{
		Zero: wall, Workload: trace.Workload{Command: opts.Command}, Timeout: opts.Timeout,
		Interrupted: "recording interrupted", DevicePatterns: opts.DevicePatterns,
	}, t0)
	rec.hostRoot = true
	rec.col.AddProcess(uint32(pid), uint32(os.Getpid()), path, cwd, t0)
	if opts.OnStart != nil {
		opts.OnStart(pid)
	}
	rec.readRing(opts.slowReader)

	exited := make(chan Exit, 1)
	go func() {
		var info unix.Siginfo
		// WNOWAIT leaves the zombie in place so that OnExit can read /proc/PID.
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		end := monotonic()
		if err == nil && opts.OnExit != nil {
			opts.OnExit(pid)
		}
		exited <- Exit{At: end, pid: pid}
	}()

	t := rec.Run(ctx, exited)
	stop(cmd, opts.KeepRunning && t.Outcome != trace.OutcomeExited)
	return t, nil
}

// LoadProbes loads the kernel side, reports on logw the probes that could not attach
// (every trace made with them says so too), and uprobes the host's driver library.
func LoadProbes(ringBytes int, logw io.Writer) (*bpf.Probes, error) {
	if logw == nil {
		logw = io.Discard
	}
	probes, err := bpf.Load(bpf.Config{RingBufferBytes: ringBytes})
	if err != nil {
		return nil, err
	}
	for _, w := range missingProbes(probes) {
		fmt.Fprintln(logw, "coldtrace: "+w)
	}
	attachHostDriver(probes)
	return probes, nil
}

// missingProbes says which probes could not attach, and what a trace loses for it.
func missingProbes(probes *bpf.Probes) []string {
	var warnings []string
	for _, p := range probes.Status() {
		if !p.Attached {
			warnings = append(warnings, fmt.Sprintf("probe %s is missing (%s): lost %s", p.Name, p.Error, p.Loses))
		}
	}
	return warnings
}

// hostDriverLibraries are where distributions and the NVIDIA container toolkit install the
// user-space driver. Containers get the host's file bind-mounted, and uprobes follow the
// inode, so attaching here covers them too.
var hostDriverLibraries = []string{
	"/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1",
	"/usr/local/nvidia/lib64/libcuda.so.1", "/usr/lib/wsl/lib/libcuda.so.1",
}

// attachHostDriver uprobes the host's libcuda before the workload starts, so that a call
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
		t0 := monotonic()
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

// ring is the Feed of a recording on probes of its own: every event on their ring buffer
// is the recording's.
type ring struct {
	rec  *Recording
	done chan error // the reader's end
}

// readRing starts feeding the recording from its own probes' ring buffer, until the
// reader is flushed or closed. slow makes the reader wait that long after each record:
// tests use it to overflow a small ring buffer for certain.
func (r *Recording) readRing(slow time.Duration) {
	f := &ring{rec: r, done: make(chan error, 1)}
	r.feed = f
	go func() { f.done <- f.read(slow) }()
}

func (f *ring) read(slow time.Duration) error {
	rd := f.rec.probes.Ring()
	var rec ringbuf.Record
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
		f.rec.Handle(rec.RawSample)
		if slow > 0 {
			time.Sleep(slow)
		}
	}
}

// Stop lets the kernel's last events arrive, stops the reader and applies what the kernel
// held back.
func (f *ring) Stop() ([]string, bool) {
	var warnings []string
	probes := f.rec.probes
	probes.Ring().Flush()
	if err := <-f.done; err != nil {
		warnings = append(warnings, "reading events: "+err.Error())
	}
	held, err := probes.Drain()
	if err != nil {
		warnings = append(warnings, err.Error())
	}
	f.rec.HandleHeld(held)
	return warnings, false
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

// newID names a trace: its start time and a random suffix.
func newID(t time.Time) string {
	b := make([]byte, 4)
	rand.Read(b)
	return t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}
