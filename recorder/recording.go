package recorder

import (
	"context"
	"fmt"
	"time"

	"github.com/coldtrace/coldtrace/bpf"
	"github.com/coldtrace/coldtrace/collector"
	"github.com/coldtrace/coldtrace/containerd"
	"github.com/coldtrace/coldtrace/trace"
)

// A recording's life, the same for every driver (Record, RecordImage, the watcher):
//
//	newRecording, Begin  time zero: its collector and metadata
//	Handle               each of the workload's kernel events, from its Feed
//	Run: await           ready | exited | timeout | interrupted (RecordImage's fail: failed)
//	     finish          Feed.Stop and the last events, losses, digests, pull, create, layers, host
//	-> *trace.Trace
//
// Its events flow from the Feed's start (readRing; the watcher's track, which tracks the
// container's cgroup) to Feed.Stop in finish: the two places for anything attached only
// while something records.

// Recording is one cold start from time zero to its trace. It owns the collector that its
// kernel events go to and what is known beyond them (collector.Meta), and sees the probes
// through a Feed: probes of its own (Record, RecordImage) or the watcher's, which serve
// every container of the node.
type Recording struct {
	probes     *bpf.Probes
	feed       Feed
	cfg        Config
	col        *collector.Collector
	meta       collector.Meta
	uprobeErrs chan string
	// ready is closed at the first listen (readySent), by the Feed's Handle.
	ready     chan struct{}
	readySent bool
	// shared: the probes serve other recordings too, and lostBefore is their loss counter
	// at the start.
	shared     bool
	lostBefore uint64
	exit       Exit
	failed     bool // the runtime failed before the workload ran (see fail)
	hostRoot   bool // the workload runs in the host's mount namespace (Record)
	rootfs     *containerd.Rootfs
}

// Config describes a recording: what it records, and how long it may wait for ready.
type Config struct {
	// Zero is time zero on the wall clock: the earliest of the pull request, the create
	// and the exec.
	Zero     time.Time
	Workload trace.Workload
	// Timeout ends a recording that is not ready that long after TimeoutFrom (zero: the
	// start of Run); zero means no limit.
	Timeout     time.Duration
	TimeoutFrom time.Time
	// Interrupted is the error of a recording whose context ends before it does.
	Interrupted    string
	DevicePatterns []string
	// Create is the container's create, where its create phase begins; zero for none.
	Create time.Time
	// Pull is the pull of the container's image; nil for none.
	Pull *Pull
}

// Pull is the image pull a recording includes.
type Pull struct {
	// Client names the other pulls the pull overlapped.
	Client *containerd.Client
	// Pulled is the pull; nil when none was found (Warnings say why).
	Pulled *containerd.Pulled
	// Ingests, when set, are the watcher's log of containerd's ingests: the pull was not
	// made here, and its registry connections are found there.
	Ingests  *containerd.IngestLog
	Warnings []string // met looking for the pull
}

// A Feed hands a recording its events, each to Handle, and stops them at its end: the
// recording's own ring reader, or the watcher, which routes the events of its shared
// probes to the recordings of their containers.
type Feed interface {
	// Stop returns once every event that the kernel sent or holds for the recording has
	// been handed to Handle, and no more will be. It returns what the recording missed,
	// and whether that leaves it incomplete.
	Stop() (warnings []string, incomplete bool)
}

// Exit is the end of a workload that was not ready.
type Exit struct {
	At    uint64 // CLOCK_MONOTONIC
	Error string // what the trace says went wrong; empty for a clean exit
	// pid, when set, is the process whose exit status, as the collector saw it, makes
	// the error (Record's command).
	pid int
}

// ContainerExit is the exit of a container's task with its exit status.
func ContainerExit(at uint64, status uint32) Exit {
	e := Exit{At: at}
	if status != 0 {
		e.Error = fmt.Sprintf("the container exited (exit status %d) before it was ready", status)
	}
	return e
}

// Begin starts a recording on shared probes (the watcher's): feed hands it its events
// from now on.
func Begin(probes *bpf.Probes, feed Feed, cfg Config) *Recording {
	r := newRecording(probes, cfg, MonotonicAt(cfg.Zero))
	r.feed, r.shared = feed, true
	r.lostBefore, _ = probes.Lost()
	return r
}

// newRecording starts a recording whose time zero is cfg.Zero on the wall clock and t0 on
// CLOCK_MONOTONIC. Its collector uprobes the driver library when a traced process opens
// one; the failures to attach arrive on uprobeErrs, for the trace's warnings.
func newRecording(probes *bpf.Probes, cfg Config, t0 uint64) *Recording {
	r := &Recording{probes: probes, cfg: cfg, uprobeErrs: make(chan string, 16), ready: make(chan struct{})}
	r.meta = collector.Meta{ID: newID(cfg.Zero), Workload: cfg.Workload, Start: cfg.Zero, Warnings: missingProbes(probes)}
	r.col = collector.New(t0, collector.Options{
		DevicePatterns: cfg.DevicePatterns,
		OnDriverLibrary: func(pid uint32, lib string) {
			if err := probes.AttachLibrary(fmt.Sprintf("/proc/%d/root%s", pid, lib)); err != nil {
				select {
				case r.uprobeErrs <- fmt.Sprintf("driver calls in %s are not traced: %v", lib, err):
				default:
				}
			}
		},
	})
	return r
}

// Handle takes one kernel event of the recording. The Feed calls it from one goroutine
// at a time.
func (r *Recording) Handle(raw []byte) {
	r.col.Handle(raw)
	if !r.readySent && r.col.Ready() != nil {
		r.readySent = true
		close(r.ready)
	}
}

// HandleHeld takes what the kernel held back for the recording (bpf.Drain), once the
// Feed has handed it every event.
func (r *Recording) HandleHeld(h *bpf.Held) { r.col.HandleHeld(h) }

// SetInit names the container's init process (see collector.SetInit), before its events.
func (r *Recording) SetInit(pid uint32) { r.col.SetInit(pid) }

// Container says which container the recording is of: its workload, and the root file
// system whose layers the files it opened come from (nil: none known).
func (r *Recording) Container(id, image, imageDigest string, labels map[string]string, rootfs *containerd.Rootfs) {
	r.meta.Workload = collector.ContainerWorkload(id, image, imageDigest, labels)
	r.rootfs = rootfs
}

// Warn adds a warning to the trace.
func (r *Recording) Warn(w string) { r.meta.Warnings = append(r.meta.Warnings, w) }

// Run waits for the recording to end and returns its trace. It ends at the workload's
// ready (its first listen), its exit (on exited), the timeout, or ctx's end.
func (r *Recording) Run(ctx context.Context, exited <-chan Exit) *trace.Trace {
	r.await(ctx, exited)
	return r.finish(ctx)
}

// await waits for the end of the recording and sets its outcome, its end where that is
// not ready's (see finish) and its error.
func (r *Recording) await(ctx context.Context, exited <-chan Exit) {
	var expired <-chan time.Time
	if r.cfg.Timeout > 0 {
		from := r.cfg.TimeoutFrom
		if from.IsZero() {
			from = time.Now()
		}
		timer := time.NewTimer(r.cfg.Timeout - time.Since(from))
		defer timer.Stop()
		expired = timer.C
	}
	select {
	case <-r.ready:
		r.meta.Outcome = trace.OutcomeReady
	case e := <-exited:
		r.meta.Outcome, r.meta.End, r.meta.Error = trace.OutcomeExited, e.At, e.Error
		r.exit = e
	case <-expired:
		r.meta.Outcome = trace.OutcomeTimeout
		r.meta.Error = fmt.Sprintf("not ready after %s", r.cfg.Timeout)
	case <-ctx.Done():
		r.meta.Outcome = trace.OutcomeInterrupted
		r.meta.Error = r.cfg.Interrupted
	}
}

// fail ends the recording at a failure of the runtime (failed), or at its interruption
// by ctx, and returns its trace.
func (r *Recording) fail(ctx context.Context, err error) *trace.Trace {
	r.meta.End = monotonic()
	r.meta.Outcome, r.meta.Error = trace.OutcomeFailed, err.Error()
	if ctx.Err() != nil {
		r.meta.Outcome, r.meta.Error = trace.OutcomeInterrupted, "recording interrupted: "+err.Error()
	}
	r.failed = true
	return r.finish(ctx)
}

// digestTimeout bounds the time a recording spends hashing the files the workload wrote
// (see collector.DigestWritten); a file not hashed by then has no digest in the trace.
const digestTimeout = 30 * time.Second

// finish turns the ended recording into its trace: it stops the events and takes the
// last ones, ends a ready recording at its listen, adds the losses and the problems met,
// hashes the possible artifacts the workload wrote (through the roots of its live
// processes: before the workload is stopped), adds what the runtime reports (pull,
// create, layers) and the host's facts. A missing probe makes the trace incomplete.
func (r *Recording) finish(ctx context.Context) *trace.Trace {
	if r.meta.End == 0 {
		r.meta.End = monotonic()
	}
	missed, incomplete := r.feed.Stop()
	r.meta.Warnings = append(r.meta.Warnings, missed...)
	if ready := r.col.Ready(); r.meta.Outcome == trace.OutcomeReady && ready != nil {
		r.meta.End = r.col.Start() + uint64(ready.At)
	}
	r.addLosses()
	if r.exit.pid != 0 {
		if s := exitStatus(r.col, r.exit.pid); s != 0 {
			r.meta.Error = fmt.Sprintf("the command exited (%s) before it was ready", s)
		}
	}
	if !r.failed {
		dctx, cancel := context.WithTimeout(ctx, digestTimeout)
		r.meta.Warnings = append(r.meta.Warnings, r.col.DigestWritten(dctx, r.hostRoot)...)
		cancel()
	}
	if p := r.cfg.Pull; p != nil {
		if p.Pulled != nil {
			r.addPull(ctx, p)
		}
		r.meta.Warnings = append(r.meta.Warnings, p.Warnings...)
	}
	if !r.failed {
		if !r.cfg.Create.IsZero() {
			r.addCreate()
		}
		if r.rootfs != nil {
			r.col.ResolveLayers(r.rootfs.LayerOf)
		}
	}
	r.meta.Host = collector.HostFacts()
	r.meta.Host.Probes = r.probes.Status()
	t := r.col.Trace(r.meta)
	t.Incomplete = t.Incomplete || incomplete
	for _, p := range r.meta.Host.Probes {
		if !p.Attached {
			t.Incomplete = true
		}
	}
	return t
}

// addLosses adds to the warnings the events the ring buffer lost during the recording
// (on shared probes, the node's: the loss may be another recording's), the malformed
// events the collector dropped and the driver libraries it could not uprobe.
func (r *Recording) addLosses() {
	lost, err := r.probes.Lost()
	if err != nil {
		r.Warn("reading the lost-event counter: " + err.Error())
	}
	if lost > r.lostBefore {
		r.meta.Lost = lost - r.lostBefore
		where := ""
		if r.shared {
			where = " on the node during the recording"
		}
		r.Warn(fmt.Sprintf("%d events were lost%s because the ring buffer was full: raise --ring-buffer", r.meta.Lost, where))
	}
	if n := r.col.Errors(); n > 0 {
		r.Warn(fmt.Sprintf("%d malformed events were dropped", n))
	}
	for more := true; more; {
		select {
		case w := <-r.uprobeErrs:
			r.Warn(w)
		default:
			more = false
		}
	}
}

// addPull puts the pull in the trace, its times from zero: the pull, its registry
// connections and its activity (pullActivity). The other pulls it overlapped have made
// their images by the end of the recording, if they are done: they are named then. With
// ingests (the watcher's, which saw a pull it did not make), the registry connections are
// found there, and what they may miss goes to the warnings.
func (r *Recording) addPull(ctx context.Context, p *Pull) {
	ctx = context.WithoutCancel(ctx)
	p.Client.NameIngests(ctx, p.Pulled.Others, p.Pulled.Ref)
	if p.Ingests != nil {
		r.meta.Warnings = append(r.meta.Warnings, p.Ingests.RegistryConns(ctx, p.Pulled)...)
	}
	zero := r.cfg.Zero
	r.meta.Pull, r.meta.Conns = p.Pulled.Trace(zero), p.Pulled.TraceConns(zero)
	r.meta.Activity = pullActivity(p.Pulled, zero)
}

// addCreate adds the create phase: from the container's create to the workload's first
// exec.
func (r *Recording) addCreate() {
	if r.meta.Activity == nil {
		r.meta.Activity = map[trace.PhaseName][]trace.Interval{}
	}
	start := r.cfg.Create.Sub(r.cfg.Zero)
	r.meta.Activity[trace.PhaseCreate] = []trace.Interval{{Start: start, End: max(r.col.FirstExec(), start)}}
}
