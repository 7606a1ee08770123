package watcher

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/coldtrace/coldtrace/bpf"
	"github.com/coldtrace/coldtrace/collector"
	"github.com/coldtrace/coldtrace/containerd"
	"github.com/coldtrace/coldtrace/recorder"
	"github.com/coldtrace/coldtrace/trace"
)

// labelKind is the label by which the CRI plugin tells a pod's sandbox (its pause
// container, which never gets ready) from the pod's containers.
const labelKind = "io.cri-containerd.kind"

// recording is the cold start of one container, from its create to ready, exit, the
// timeout or the agent's stop.
type recording struct {
	id      string
	cgroup  containerd.Cgroup
	initPID uint32
	// create is the container's create (its task's when the agent did not see the
	// create), pull the recent pull of its image. zero is time zero: the earlier of the
	// pull's request and the create.
	create       created
	pull         *containerd.Pulled
	pullWarnings []string
	zero         time.Time
	createSeen   bool
	tracked      time.Time
	col          *collector.Collector
	uprobeErrs   chan string
	lostBefore   uint64
	earlyDropped int // events of the cgroup before the recording that were not kept
	// unroutedBefore is Watcher.unrouted when the recording began.
	unroutedBefore uint64

	// Guarded by Watcher.mu.
	pids      map[uint32]bool // the container's processes seen so far
	execSeen  bool            // the init process's exec: tracking began before the start
	readySent bool
	ready     chan struct{}
	exited    chan containerd.Event
	// draining says that the recording's end is being drained; late holds what reached
	// it meanwhile that Drain may hold too (see Watcher.drain).
	draining bool
	late     bpf.Held
}

// record waits for the container to get ready, exit or time out, or for the agent to
// stop, and writes its trace.
func (a *Watcher) record(ctx context.Context, r *recording) {
	// The container's description survives the agent's stop: a partial trace needs it.
	ex, inspectErr := a.client.Inspect(context.WithoutCancel(ctx), r.id)
	if ex != nil && ex.Labels[labelKind] == "sandbox" {
		a.probes.UntrackCgroup(r.cgroup.ID)
		a.mu.Lock()
		a.forget(r)
		a.mu.Unlock()
		return
	}
	fmt.Fprintf(a.opts.Log, "coldtrace: recording container %s\n", r.id)

	var timeout <-chan time.Time
	if a.opts.Timeout > 0 {
		timer := time.NewTimer(a.opts.Timeout - time.Since(r.tracked))
		defer timer.Stop()
		timeout = timer.C
	}
	meta := collector.Meta{ID: recorder.NewID(r.zero), Start: r.zero, Warnings: slices.Clone(a.warnings)}
	select {
	case <-r.ready:
		meta.Outcome = trace.OutcomeReady
	case ev := <-r.exited:
		meta.Outcome = trace.OutcomeExited
		meta.End = monotonicAt(ev.At)
		if ev.ExitStatus != 0 {
			meta.Error = fmt.Sprintf("the container exited (exit status %d) before it was ready", ev.ExitStatus)
		}
	case <-timeout:
		meta.Outcome = trace.OutcomeTimeout
		meta.Error = fmt.Sprintf("not ready after %s", a.opts.Timeout)
	case <-ctx.Done():
		meta.Outcome = trace.OutcomeInterrupted
		meta.Error = "the agent stopped before the container was ready"
	}
	recorder.EndNow(&meta)

	late := a.stop(r, &meta)
	// The downloads in the container's writable layer, while the container still runs.
	recorder.DigestWritten(ctx, r.col, false, &meta)
	if inspectErr != nil {
		meta.Warnings = append(meta.Warnings, "describing the container: "+inspectErr.Error())
	}
	if ex != nil {
		meta.Workload = collector.ContainerWorkload(r.id, ex.Image, ex.ImageDigest, ex.Labels)
		if ex.Rootfs != nil {
			r.col.ResolveLayers(ex.Rootfs.LayerOf)
		}
	} else {
		meta.Workload = trace.Workload{ContainerID: r.id}
	}
	if r.pull != nil {
		recorder.AddPull(ctx, a.client, a.ingests, r.pull, r.zero, &meta)
	}
	meta.Warnings = append(meta.Warnings, r.pullWarnings...)
	recorder.AddCreate(r.create.at, r.zero, r.col, &meta)
	t := recorder.Assemble(a.probes, r.col, meta)
	t.Incomplete = t.Incomplete || late
	if err := a.write(t); err != nil {
		fmt.Fprintf(a.opts.Log, "coldtrace: container %s: %v\n", r.id, err)
		return
	}
	fmt.Fprintf(a.opts.Log, "coldtrace: container %s: %s after %v, trace in %s\n", r.id, t.Outcome, t.Duration, a.path(r.id))
	for _, sink := range a.opts.Sinks {
		sink(t)
	}
}

// stop untracks the container, gives its recording every event the kernel sent or holds
// for it, and adds what the recording missed to meta's warnings. late says that tracking
// began after the container's start, or that events were lost.
func (a *Watcher) stop(r *recording, meta *collector.Meta) (late bool) {
	if err := a.probes.UntrackCgroup(r.cgroup.ID); err != nil {
		meta.Warnings = append(meta.Warnings, "untracking the container's cgroup: "+err.Error())
	}
	held, warnings := a.drain(r) // from here on the recording is ours alone
	meta.Warnings = append(meta.Warnings, warnings...)
	r.col.HandleHeld(held)
	recorder.EndAtReady(r.col, meta)
	if lost, err := a.probes.Lost(); err == nil && lost > r.lostBefore {
		// The counter is the node's: the loss may be another container's.
		meta.Lost = lost - r.lostBefore
		meta.Warnings = append(meta.Warnings, fmt.Sprintf("%d events were lost on the node during the recording because the ring buffer was full: raise --ring-buffer", meta.Lost))
	}
	a.mu.Lock()
	unrouted := a.unrouted - r.unroutedBefore
	a.mu.Unlock()
	if unrouted > 0 {
		// Also the node's: the agent cannot tell whose they were.
		meta.Warnings = append(meta.Warnings, fmt.Sprintf("%d events of traced cgroups on the node reached no recording during the recording: some may be this container's", unrouted))
	}
	recorder.CollectorWarnings(r.col, r.uprobeErrs, meta)
	if !r.createSeen {
		meta.Warnings = append(meta.Warnings, "the container was created before the agent watched: time zero is its task's creation")
	}
	if r.create.rejoin {
		meta.Warnings = append(meta.Warnings, "the agent was resubscribing to containerd's events when the container's task was created: it joined late")
	}
	if r.earlyDropped > 0 {
		meta.Warnings = append(meta.Warnings, fmt.Sprintf("%d events of the container's first moments, before the agent knew the container, were dropped", r.earlyDropped))
	}
	if !r.execSeen {
		meta.Warnings = append(meta.Warnings, "the agent joined after the container's start: what ran before is missing")
	}
	return !r.execSeen || r.create.rejoin || r.earlyDropped > 0 || unrouted > 0
}

// write stores a trace atomically under the data directory.
func (a *Watcher) write(t *trace.Trace) error {
	p := a.path(t.Workload.ContainerID)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return trace.WriteFile(p, t)
}
