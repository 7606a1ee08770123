package watcher

import (
	"context"
	"fmt"
	"time"

	"github.com/coldtrace/coldtrace/bpf"
	"github.com/coldtrace/coldtrace/containerd"
	"github.com/coldtrace/coldtrace/recorder"
)

// labelKind is the label by which the CRI plugin tells a pod's sandbox (its pause
// container, which never gets ready) from the pod's containers.
const labelKind = "io.cri-containerd.kind"

// recording is the watcher's side of one container's recording: what routes the node's
// events to it (its cgroup and processes), and what the watcher knows of its start. It is
// the recording's Feed.
type recording struct {
	w       *Watcher
	id      string
	cgroup  containerd.Cgroup
	initPID uint32
	// create is the container's create (its task's when the watcher did not see the
	// create).
	create       created
	createSeen   bool
	rec          *recorder.Recording
	earlyDropped int // events of the cgroup before the recording that were not kept
	exited       chan recorder.Exit
	// unroutedBefore is Watcher.unrouted when the recording began.
	unroutedBefore uint64

	// Guarded by Watcher.mu.
	pids     map[uint32]bool // the container's processes seen so far
	execSeen bool            // the init process's exec: tracking began before the start
	// draining says that the recording's end is being drained; late holds what reached
	// it meanwhile that Drain may hold too (see Watcher.drain).
	draining bool
	late     bpf.Held
}

// record waits for the container to get ready, exit or time out, or for the watcher to
// stop, and writes its trace.
func (a *Watcher) record(ctx context.Context, r *recording) {
	// The container's description survives the watcher's stop: a partial trace needs it.
	ex, err := a.client.Inspect(context.WithoutCancel(ctx), r.id)
	if ex != nil && ex.Labels[labelKind] == "sandbox" {
		a.probes.UntrackCgroup(r.cgroup.ID)
		a.mu.Lock()
		a.forget(r)
		a.mu.Unlock()
		return
	}
	fmt.Fprintf(a.opts.Log, "coldtrace: recording container %s\n", r.id)
	if err != nil {
		r.rec.Warn("describing the container: " + err.Error())
	}
	if ex != nil {
		r.rec.Container(r.id, ex.Image, ex.ImageDigest, ex.Labels, ex.Rootfs)
	} else {
		r.rec.Container(r.id, "", "", nil, nil)
	}

	t := r.rec.Run(ctx, r.exited)
	if ex != nil {
		t.Workload.RestartCount = ex.RestartCount
	}
	where, err := a.opts.Store.Put(context.WithoutCancel(ctx), a.opts.Namespace+"/"+r.id, t)
	if err != nil {
		a.writeFailed.Add(1)
		fmt.Fprintf(a.opts.Log, "coldtrace: container %s: %v\n", r.id, err)
		return
	}
	a.written.Add(1)
	fmt.Fprintf(a.opts.Log, "coldtrace: container %s: %s after %v, trace in %s\n", r.id, t.Outcome, t.Duration, where)
	for _, sink := range a.opts.Sinks {
		sink(t)
	}
}

// Stop untracks the container, gives its recording every event the kernel sent or holds
// for it, and says what the recording missed; it is incomplete when tracking began after
// the container's start.
func (r *recording) Stop() (warnings []string, incomplete bool) {
	a := r.w
	if err := a.probes.UntrackCgroup(r.cgroup.ID); err != nil {
		warnings = append(warnings, "untracking the container's cgroup: "+err.Error())
	}
	held, missed := a.drain(r) // from here on the recording is ours alone
	warnings = append(warnings, missed...)
	r.rec.HandleHeld(held)
	a.mu.Lock()
	unrouted := a.unrouted - r.unroutedBefore
	a.mu.Unlock()
	if unrouted > 0 {
		// The node's: the watcher cannot tell whose they were.
		warnings = append(warnings, fmt.Sprintf("%d events of traced cgroups on the node reached no recording during the recording: some may be this container's", unrouted))
	}
	if !r.createSeen {
		warnings = append(warnings, "the container was created before the agent watched: time zero is its task's creation")
	}
	if r.create.rejoin {
		warnings = append(warnings, "the agent was resubscribing to containerd's events when the container's task was created: it joined late")
	}
	if r.earlyDropped > 0 {
		warnings = append(warnings, fmt.Sprintf("%d events of the container's first moments, before the agent knew the container, were dropped", r.earlyDropped))
	}
	if !r.execSeen {
		warnings = append(warnings, "the agent joined after the container's start: what ran before is missing")
	}
	return warnings, !r.execSeen || r.create.rejoin || r.earlyDropped > 0 || unrouted > 0
}

// begin starts the recording of a container whose cgroup is tracked since tracked,
// called with a.mu held. The slower part, a few calls to containerd to find the recent
// pull of its image, is bounded so that the events do not wait long.
func (a *Watcher) begin(ctx context.Context, r *recording, tracked time.Time) {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	pull, warnings := a.recentPull(pctx, r.create)
	cancel()
	// Time zero is the earlier of the pull request and the create.
	zero := r.create.at
	if pull != nil && pull.Start.Before(zero) {
		zero = pull.Start
	}
	r.rec = recorder.Begin(a.probes, r, recorder.Config{
		Zero: zero, Timeout: a.opts.Timeout, TimeoutFrom: tracked,
		Interrupted: "the agent stopped before the container was ready", DevicePatterns: a.opts.DevicePatterns,
		Create: r.create.at, Pull: &recorder.Pull{Client: a.client, Pulled: pull, Ingests: a.ingests, Warnings: warnings},
	})
}
