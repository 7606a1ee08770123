package watcher

import (
	"context"
	"fmt"
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

	// Guarded by Watcher.mu.
	pids      map[uint32]bool // the container's processes seen so far
	execSeen  bool            // the init process's exec: tracking began before the start
	readySent bool
	ready     chan struct{}
	exited    chan containerd.Event
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
		meta.Workload.RestartCount = ex.RestartCount
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
	where, err := a.opts.Store.Put(context.WithoutCancel(ctx), a.opts.Namespace+"/"+r.id, t)
	if err != nil {
		fmt.Fprintf(a.opts.Log, "coldtrace: container %s: %v\n", r.id, err)
		return
	}
	fmt.Fprintf(a.opts.Log, "coldtrace: container %s: %s after %v, trace in %s\n", r.id, t.Outcome, t.Duration, where)
	for _, sink := range a.opts.Sinks {
		sink(t)
	}
}

// stop untracks the container, gives its recording every event the kernel sent or holds
// for it, and adds what the recording missed to meta's warnings. late says that tracking
// began after the container's start.
func (a *Watcher) stop(r *recording, meta *collector.Meta) (late bool) {
	if err := a.probes.UntrackCgroup(r.cgroup.ID); err != nil {
		meta.Warnings = append(meta.Warnings, "untracking the container's cgroup: "+err.Error())
	}
	if !a.catchUp() {
		meta.Warnings = append(meta.Warnings, "the event ring did not empty within a second: the last events may be missing")
	}
	a.mu.Lock()
	a.forget(r) // from here on the recording is ours alone
	a.mu.Unlock()

	held, err := a.probes.Drain()
	if err != nil {
		meta.Warnings = append(meta.Warnings, err.Error())
	}
	for _, raw := range held {
		if _, ptr, err := bpf.Decode(raw); err == nil && r.pids[(*bpf.Header)(ptr).Pid] {
			r.col.Handle(raw)
		}
	}
	recorder.EndAtReady(r.col, meta)
	if lost, err := a.probes.Lost(); err == nil && lost > r.lostBefore {
		// The counter is the node's: the loss may be another container's.
		meta.Lost = lost - r.lostBefore
		meta.Warnings = append(meta.Warnings, fmt.Sprintf("%d events were lost on the node during the recording because the ring buffer was full: raise --ring-buffer", meta.Lost))
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
	return !r.execSeen || r.create.rejoin || r.earlyDropped > 0
}
