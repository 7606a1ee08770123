package watcher

import (
	"context"
	"fmt"
	"time"
)

// The agent keeps its heavy probes (syscalls, faults, page cache, sockets) detached while
// it records nothing, so that the node's syscalls and faults run no coldtrace program then;
// only the programs of cgroup creation and process fork, exec and exit stay (see
// bpf.Probes.SetActive).

// idle says that nothing is recorded, about to be, or waits for the reader, called with
// a.mu held.
func (a *Watcher) idle() bool {
	return len(a.byID) == 0 && len(a.early) == 0 && len(a.waiting) == 0 && len(a.caughtUp) == 0
}

// activate has arm attach the probes while anything is recorded or about to be, and
// detach them once nothing is (see linger), called after each change.
func (a *Watcher) activate() {
	select {
	case a.kick <- struct{}{}:
	default: // arm has yet to look: it sees this change too
	}
}

// linger is how long the probes stay attached after the agent starts and after its last
// recording: a pod's containers start one after another, and a container whose cgroup the
// kernel did not see created (the first of a namespace) is tracked only from containerd's
// event, when it may be running already.
const linger = 10 * time.Second

// arm attaches and detaches the probes as activate asks, until ctx ends. A new container
// is tracked in the kernel from its cgroup's creation, before its first process runs, and
// the reader attaches the probes as soon as it hears of it (see read), or track when
// containerd announces the task: its syscalls and faults are seen from then on, a few
// milliseconds after the cgroup's creation, while runc is still setting the container up.
func (a *Watcher) arm(ctx context.Context) {
	busySince := time.Now() // the agent's start counts as a recording
	a.activate()
	for {
		select {
		case <-a.kick:
		case <-ctx.Done():
			return
		}
		// Decided and applied under a.mu, and after the reader counted a new cgroup in
		// ahead: a detach never undoes the reader's attach.
		a.mu.Lock()
		busy := len(a.byID) > 0 || len(a.early) > 0 || a.ahead.Load() > 0
		if busy {
			busySince = time.Now()
		}
		left := linger - time.Since(busySince)
		err := a.probes.SetActive(busy || left > 0)
		a.mu.Unlock()
		if err != nil {
			fmt.Fprintf(a.opts.Log, "coldtrace: attaching the probes: %v\n", err)
		}
		if !busy && left > 0 {
			time.AfterFunc(left, a.activate)
		}
		if busy {
			a.probes.Ring().Flush() // the reader polls again
		}
	}
}
