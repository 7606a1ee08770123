package watcher

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/coldtrace/coldtrace/bpf"
	"github.com/coldtrace/coldtrace/containerd"
)

// A container runtime creates a container's cgroup, then its task, then starts it; the
// kubelet asks for the start as soon as the create returns, and containerd's event for
// the create reaches the watcher later. So the kernel tracks every cgroup created below a
// watched one (where the runtime puts containers) at once, and the watcher keeps what such
// a cgroup's processes do until the task-create event names the container.

// earlyCgroup is a cgroup tracked at its creation that no recording has claimed yet.
type earlyCgroup struct {
	id      uint64
	created time.Time
	events  [][]byte
	dropped int // events beyond earlyMax
}

// An unclaimed cgroup is untracked after earlyGrace (it was no container's, or the event
// never came), looked for at most every expireEvery; the early cgroups keep at most
// earlyMax events in all meanwhile.
const (
	earlyGrace  = 30 * time.Second
	expireEvery = time.Second
	earlyMax    = 1 << 16
)

// watchCgroups watches the top-level cgroups where containers of the namespace go (see
// containerCgroupTop) that exist; watchParentOf adds each when its first container comes.
func (a *Watcher) watchCgroups() {
	mnt, root, err := containerd.Cgroup2Mount()
	if err != nil {
		fmt.Fprintf(a.opts.Log, "coldtrace: containers are tracked from their task's create event only: %v\n", err)
		return
	}
	a.cgroupMount, a.cgroupRoot = mnt, root
	for _, dir := range []string{a.opts.Namespace, "kubepods", "kubepods.slice"} {
		if !a.containerCgroupTop(dir) {
			continue
		}
		if cg, err := containerd.CgroupAt(filepath.Join(mnt, dir)); err == nil {
			a.watch1(cg)
		}
	}
}

// containerCgroupTop says whether a top-level cgroup is one under which only containers
// of the namespace go: /NAMESPACE (containerd's cgroupfs layout) and, for the kubelet's
// namespace, kubepods (cgroupfs) or kubepods.slice (systemd). Not system.slice, where
// systemd's cgroup driver puts other runtimes' containers among every service.
func (a *Watcher) containerCgroupTop(dir string) bool {
	return dir == a.opts.Namespace || a.opts.Namespace == "k8s.io" && (dir == "kubepods" || dir == "kubepods.slice")
}

// watchParentOf watches the top-level cgroup that holds a container's, if it is one of
// the namespace's, called with a.mu held.
func (a *Watcher) watchParentOf(cg containerd.Cgroup) {
	rel, err := filepath.Rel(a.cgroupMount, cg.Path)
	if a.cgroupMount == "" || err != nil {
		return
	}
	top, _, nested := strings.Cut(rel, string(filepath.Separator))
	if !nested || !a.containerCgroupTop(top) {
		return
	}
	if parent, err := containerd.CgroupAt(filepath.Join(a.cgroupMount, top)); err == nil && !a.watched[parent.ID] {
		a.watch1(parent)
	}
}

func (a *Watcher) watch1(cg containerd.Cgroup) {
	if err := a.probes.WatchCgroup(cg.ID); err != nil {
		fmt.Fprintf(a.opts.Log, "coldtrace: watching cgroup %s: %v\n", cg.Path, err)
		return
	}
	a.watched[cg.ID] = true
}

// noteEarly notes a cgroup the kernel began tracking at its creation, called with a.mu
// held.
func (a *Watcher) noteEarly(id uint64) {
	if a.byCgroup[id] == nil && a.early[id] == nil {
		a.early[id] = &earlyCgroup{id: id, created: time.Now()}
		a.activate()
	}
}

// hold keeps an event of an early cgroup, called with a.mu held, and says whether it did.
// Like route, it goes by the event's cgroup, or its process (see byProcess). A held event
// beyond earlyMax is dropped and counted, and the container's trace says so.
func (a *Watcher) hold(typ uint32, ptr unsafe.Pointer, raw []byte) bool {
	h := (*bpf.Header)(ptr)
	var e *earlyCgroup
	if !byProcess(typ) {
		if e = a.early[h.Cgroup]; e != nil {
			a.earlyPID[h.Pid] = e
		}
	} else {
		e = a.earlyPID[h.Pid]
	}
	switch {
	case e == nil:
		return false
	case a.earlyEvents >= earlyMax:
		e.dropped++
	default:
		e.events = append(e.events, slices.Clone(raw)) // the ring reuses raw's buffer
		a.earlyEvents++
		if typ == bpf.EvFork {
			a.earlyPID[(*bpf.EventFork)(ptr).Child] = e // see deliver
		}
	}
	return true
}

// claim hands a new recording the events its cgroup sent before the recording began,
// called with a.mu held: all are its own, held by its cgroup or its processes.
func (a *Watcher) claim(r *recording, e *earlyCgroup) {
	a.dropEarly(e)
	for _, raw := range e.events {
		typ, ptr, _ := bpf.Decode(raw) // hold kept only decoded events
		if !byProcess(typ) {
			a.adopt(r, (*bpf.Header)(ptr).Pid)
		}
		a.deliver(r, typ, ptr, raw)
	}
	r.earlyDropped = e.dropped
}

// expireEarly untracks the early cgroups that no container claimed within earlyGrace,
// called with a.mu held, as often as the watcher likes: it looks at most every expireEvery.
func (a *Watcher) expireEarly() {
	if len(a.early) == 0 || time.Since(a.expired) < expireEvery {
		return
	}
	a.expired = time.Now()
	for _, e := range a.early {
		if time.Since(e.created) > earlyGrace {
			a.probes.UntrackCgroup(e.id)
			a.dropEarly(e)
		}
	}
}

func (a *Watcher) dropEarly(e *earlyCgroup) {
	delete(a.early, e.id)
	a.activate()
	a.earlyEvents -= len(e.events)
	for pid, pe := range a.earlyPID {
		if pe == e {
			delete(a.earlyPID, pid)
		}
	}
}
