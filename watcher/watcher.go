// Package watcher records the cold start of every new container on the node: one set of
// probes, containerd's events to find containers, and one trace per container, written
// under the data directory.
package watcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/coldtrace/coldtrace/bpf"
	"github.com/coldtrace/coldtrace/containerd"
	"github.com/coldtrace/coldtrace/recorder"
	"github.com/coldtrace/coldtrace/trace"
	"github.com/coldtrace/coldtrace/tracestore"
)

// Options configure the watcher.
type Options struct {
	// Address is containerd's socket; Namespace the containerd namespace to watch.
	Address, Namespace string
	// DataDir holds the traces: DataDir/traces/<namespace>/<container id>.json.gz.
	DataDir string
	// Timeout ends a recording whose container is not ready that long after its task was
	// created; zero means no limit.
	Timeout time.Duration
	// PullWindow is how long before a container's create its image's content may have
	// arrived for the trace to begin at that pull; zero means DefaultPullWindow.
	PullWindow time.Duration
	// HostsDir is containerd's registry hosts directory (config_path): the mirrors its
	// hosts.toml name are registry addresses too. Empty means containerd.DefaultHostsDir.
	HostsDir        string
	RingBufferBytes int
	DevicePatterns  []string
	// Log receives a line per recorded container and the problems met.
	Log io.Writer
	// Store keeps the traces, under <namespace>/<container id>; nil means a tracestore.Dir
	// in DataDir/traces without bounds.
	Store tracestore.Store
	// Sinks receive each trace once it is written (metrics, profiles, spans, remote
	// stores). They are called in turn from the recording's goroutine, so each must hand the
	// trace off quickly (a bounded queue) rather than export inline.
	Sinks []func(*trace.Trace)
}

// DefaultPullWindow is Options.PullWindow's default: a pod's image pull and its
// container's create are seconds or minutes apart, pulls for later use hours or days.
const DefaultPullWindow = 10 * time.Minute

// The waits between attempts to resubscribe to containerd's events double from
// minBackoff to maxBackoff; a test widens the first to create containers meanwhile.
var (
	minBackoff = 250 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// Watcher watches containerd and records containers until its context ends.
type Watcher struct {
	opts    Options
	client  *containerd.Client
	probes  *bpf.Probes
	ingests *containerd.IngestLog
	wg      sync.WaitGroup
	done    chan error
	// lostAt is when containerd's events failed, while the watcher resubscribes.
	lostAt atomic.Pointer[time.Time]

	// cgroupMount is the cgroup v2 mount point and cgroupRoot the cgroup at its root, empty
	// when watchCgroups found none; watched the cgroups below which new cgroups are tracked
	// from their creation (see watchCgroups and bpf's cgroup_mkdir).
	cgroupMount, cgroupRoot string

	mu       sync.Mutex
	created  map[string]created // containers without a task yet
	byID     map[string]*recording
	byCgroup map[uint64]*recording
	byPID    map[uint32]*recording
	watched  map[uint64]bool
	// early are the cgroups the kernel tracked as they were created, whose container no
	// recording has claimed yet, by cgroup id and by process; earlyEvents counts the
	// events they hold, expired when expireEarly last looked.
	early       map[uint64]*earlyCgroup
	earlyPID    map[uint32]*earlyCgroup
	earlyEvents int
	expired     time.Time
	// unrouted counts the events lost in the agent: undecodable, or of a cgroup the kernel
	// tracks that neither a recording nor an early cgroup took. Never more than zero
	// unless something is wrong, and then a recording cannot know which were its own.
	unrouted uint64
	// Waiters of catchUp: those taken at the reader's last empty ring are released at its
	// next one, which comes after they asked.
	waiting, caughtUp []chan struct{}
	// kick asks arm to attach the probes or detach them (see activate); ahead counts the
	// new cgroups the reader attached the probes for and has yet to dispatch.
	kick  chan struct{}
	ahead atomic.Int32

	// written and writeFailed count the traces written and those that could not be, for
	// Stats.
	written, writeFailed atomic.Uint64
}

// Start loads the probes, subscribes to containerd's events and starts recording the
// namespace's new containers. Cancelling ctx stops the watcher: the containers in flight get
// partial traces, marked incomplete. Wait returns once they are written.
func Start(ctx context.Context, opts Options) (*Watcher, error) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.Store == nil {
		st, err := tracestore.OpenDir(filepath.Join(opts.DataDir, "traces"), tracestore.Options{Log: opts.Log})
		if err != nil {
			return nil, err
		}
		opts.Store = st
	}
	client, err := containerd.New(opts.Address, opts.Namespace)
	if err != nil {
		return nil, err
	}
	probes, err := recorder.LoadProbes(opts.RingBufferBytes, opts.Log)
	if err != nil {
		client.Close()
		return nil, err
	}
	a := &Watcher{
		opts: opts, client: client, probes: probes, done: make(chan error, 1),
		created: map[string]created{}, byID: map[string]*recording{},
		byCgroup: map[uint64]*recording{}, byPID: map[uint32]*recording{},
		watched: map[uint64]bool{}, early: map[uint64]*earlyCgroup{}, earlyPID: map[uint32]*earlyCgroup{},
		kick: make(chan struct{}, 1),
	}
	a.watchCgroups()
	if a.opts.PullWindow == 0 {
		a.opts.PullWindow = DefaultPullWindow
	}
	if a.opts.HostsDir == "" {
		a.opts.HostsDir = containerd.DefaultHostsDir
	}
	a.ingests = client.LogIngests(ctx, a.opts.PullWindow, a.opts.HostsDir)
	sub, unsubscribe := context.WithCancel(ctx)
	events, errs := client.Watch(sub)
	readerDone := make(chan error, 1)
	go func() { readerDone <- a.read() }()
	go a.arm(ctx)
	go func() {
		a.watch(ctx, events, errs, unsubscribe)
		a.wg.Wait() // the recordings end with ctx
		a.ingests.Close()
		probes.Close()
		client.Close()
		a.done <- <-readerDone
	}()
	return a, nil
}

// Ready says why the watcher does not follow containerd's events now (it resubscribes),
// or nil while it does.
func (a *Watcher) Ready() error {
	if t := a.lostAt.Load(); t != nil {
		return fmt.Errorf("resubscribing to containerd's events, lost %v ago", time.Since(*t).Round(time.Second))
	}
	return nil
}

// Wait waits for the watcher to stop and returns why it stopped early, or nil once its
// context was cancelled.
func (a *Watcher) Wait() error { return <-a.done }

// watch follows containerd's events until ctx ends. When the subscription fails
// (containerd restarts, for an upgrade or after a crash), it resubscribes with backoff
// and catches up with the containers whose task was created meanwhile.
func (a *Watcher) watch(ctx context.Context, events <-chan containerd.Event, errs <-chan error, unsubscribe context.CancelFunc) {
	since := time.Now()
	for {
		lost, err := a.follow(ctx, events, errs, since)
		unsubscribe()
		if ctx.Err() != nil {
			return
		}
		failed := time.Now()
		a.lostAt.Store(&failed) // before the line, which tests wait for
		fmt.Fprintf(a.opts.Log, "coldtrace: containerd's events failed: %v; resubscribing\n", err)
		for backoff := minBackoff; ; backoff = min(2*backoff, maxBackoff) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			var sub context.Context
			sub, unsubscribe = context.WithCancel(ctx)
			since = time.Now()
			events, errs = a.client.Watch(sub)
			n, err := a.rejoin(ctx, lost)
			if err == nil {
				a.lostAt.Store(nil)
				fmt.Fprintf(a.opts.Log, "coldtrace: resubscribed to containerd's events after %v; %d containers started meanwhile\n",
					time.Since(lost).Round(time.Millisecond), n)
				break
			}
			unsubscribe()
			fmt.Fprintf(a.opts.Log, "coldtrace: containerd is not back (%v); next try in %v\n", err, min(2*backoff, maxBackoff))
		}
	}
}

// follow handles the subscription's events until ctx ends or the subscription fails. It
// returns since or the time of the last event, whichever is later: the events were in
// order, so only what happened later can be missing.
func (a *Watcher) follow(ctx context.Context, events <-chan containerd.Event, errs <-chan error, since time.Time) (time.Time, error) {
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				err := <-errs
				if err == nil {
					err = errors.New("the subscription ended")
				}
				return since, err
			}
			since = later(since, ev.At)
			a.handle(ctx, ev)
		case <-ctx.Done():
			return since, nil
		}
	}
}

// rejoin records the containers whose task was created while the watcher was not
// subscribed, since lost: those it saw created without a task, and those created since.
// Their traces begin at their create; those whose task started meanwhile say that the
// watcher joined late, and are incomplete.
func (a *Watcher) rejoin(ctx context.Context, lost time.Time) (int, error) {
	live, err := a.client.LiveContainers(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, l := range live {
		a.mu.Lock()
		_, pending := a.created[l.ID]
		recording := a.byID[l.ID] != nil
		a.mu.Unlock()
		if recording || (!pending && l.Created.Before(lost)) || a.recorded(l.ID, l.Created) {
			continue
		}
		if !pending {
			a.noteCreate(l.ID, l.Image, l.Created)
		}
		a.mu.Lock()
		if l.Started {
			a.created[l.ID] = a.created[l.ID].rejoined()
		}
		a.startRecording(ctx, containerd.Event{Kind: containerd.TaskCreated, ContainerID: l.ID, At: l.Created, PID: l.PID})
		a.mu.Unlock()
		n++
	}
	return n, nil
}

func (a *Watcher) handle(ctx context.Context, ev containerd.Event) {
	if ev.Kind == containerd.ContainerCreated {
		a.noteCreate(ev.ContainerID, ev.Image, ev.At)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch ev.Kind {
	case containerd.ContainerDeleted:
		delete(a.created, ev.ContainerID)
	case containerd.TaskCreated:
		a.startRecording(ctx, ev)
	case containerd.TaskExited:
		if r := a.byID[ev.ContainerID]; r != nil {
			select {
			case r.exited <- recorder.ContainerExit(recorder.MonotonicAt(ev.At), ev.ExitStatus):
			default:
			}
		}
	}
}

// startRecording records a container whose task was created, called with a.mu held.
func (a *Watcher) startRecording(ctx context.Context, ev containerd.Event) {
	if a.byID[ev.ContainerID] != nil {
		return
	}
	r, err := a.track(ctx, ev)
	if err != nil {
		fmt.Fprintf(a.opts.Log, "coldtrace: container %s is not recorded: %v\n", ev.ContainerID, err)
		return
	}
	a.wg.Add(1)
	go func() { defer a.wg.Done(); a.record(ctx, r) }()
}

// track starts tracing a container whose task was just created, called with a.mu held.
// The init process waits for start then, so tracking its cgroup now, before anything
// slower, is what lets the trace see the workload from its first instruction. The
// container's events wait in the ring buffer meanwhile: dispatching them takes a.mu.
func (a *Watcher) track(ctx context.Context, ev containerd.Event) (*recording, error) {
	cg, err := a.processCgroup(ev.PID)
	if err != nil {
		// A container may run and exit before its task's event is handled. Its cgroup was
		// tracked from its creation all the same, and its events wait by process once the
		// reader has dispatched them, for which it needs a.mu. Only this goroutine starts
		// recordings, so none of this container starts meanwhile.
		e := a.earlyPID[ev.PID]
		if e == nil {
			a.mu.Unlock()
			a.catchUp()
			a.mu.Lock()
			e = a.earlyPID[ev.PID]
		}
		if e == nil {
			return nil, err
		}
		cg = containerd.Cgroup{ID: e.id}
	}
	if err := a.probes.TrackCgroup(cg.ID); err != nil {
		return nil, err
	}
	if err := a.probes.SetActive(true); err != nil {
		fmt.Fprintf(a.opts.Log, "coldtrace: attaching the probes: %v\n", err)
	}
	tracked := time.Now()
	r := &recording{w: a, id: ev.ContainerID, cgroup: cg, initPID: ev.PID,
		pids: map[uint32]bool{}, exited: make(chan recorder.Exit, 1)}
	c, createSeen := a.created[ev.ContainerID]
	r.createSeen, r.create = createSeen, c
	if !createSeen {
		r.create.at = ev.At
	}
	a.begin(ctx, r, tracked)
	delete(a.created, ev.ContainerID)
	if !r.create.rejoin {
		// Its init waits for the start to exec the entrypoint; where the watcher rejoined
		// late it may have, unseen, and its processes are all the workload's.
		r.rec.SetInit(ev.PID)
	}
	r.unroutedBefore = a.unrouted
	a.byID[r.id], a.byCgroup[cg.ID] = r, r
	a.activate()
	if e := a.early[cg.ID]; e != nil {
		a.claim(r, e)
	}
	a.watchParentOf(cg)
	return r, nil
}

// processCgroup is the cgroup v2 of a process, in the mount watchCgroups found, or in the
// one there is now when it found none.
func (a *Watcher) processCgroup(pid uint32) (containerd.Cgroup, error) {
	if a.cgroupMount == "" {
		return containerd.ProcessCgroup(int(pid))
	}
	return containerd.ProcessCgroupAt(a.cgroupMount, a.cgroupRoot, int(pid))
}

// forget removes a recording from the routing tables, called with a.mu held.
func (a *Watcher) forget(r *recording) {
	defer a.activate()
	delete(a.byID, r.id)
	delete(a.byCgroup, r.cgroup.ID)
	for pid := range r.pids {
		if a.byPID[pid] == r {
			delete(a.byPID, pid)
		}
	}
}

// read feeds the ring buffer's events to the recordings of their containers until the
// probes are closed.
func (a *Watcher) read() error {
	rd := a.probes.Ring()
	var rec ringbuf.Record
	rd.SetDeadline(time.Now().Add(bpf.PollInterval))
	for {
		err := rd.ReadInto(&rec)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, ringbuf.ErrFlushed):
			// The reader has emptied the ring.
			a.mu.Lock()
			release := a.caughtUp
			a.caughtUp, a.waiting = a.waiting, nil
			a.expireEarly()
			idle := a.idle()
			a.mu.Unlock()
			for _, ch := range release {
				close(ch)
			}
			// Idle, it sleeps until the kernel wakes it (a new cgroup) or activate does.
			deadline := time.Time{}
			if !idle {
				deadline = time.Now().Add(bpf.PollInterval)
			}
			rd.SetDeadline(deadline)
			continue
		case errors.Is(err, ringbuf.ErrClosed):
			return nil
		case err != nil:
			return err
		}
		if typ, _, err := bpf.Decode(rec.RawSample); err == nil && typ == bpf.EvCgroup {
			// A new container's cgroup: attach the probes before waiting for a.mu, so
			// that they are there, milliseconds later, when the container runs.
			a.ahead.Add(1)
			if err := a.probes.SetActive(true); err != nil {
				fmt.Fprintf(a.opts.Log, "coldtrace: attaching the probes: %v\n", err)
			}
		}
		a.dispatch(rec.RawSample)
	}
}

// dispatch routes one ring buffer record. The kernel batches read runs per CPU, whatever
// process and container each belongs to, so each run of a batch goes by its own header.
func (a *Watcher) dispatch(raw []byte) {
	typ, ptr, err := bpf.Decode(raw)
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case err != nil:
		a.unrouted++
	case typ == bpf.EvCgroup:
		a.noteEarly((*bpf.EventCgroup)(ptr).Id)
		a.ahead.Add(-1)
	case typ == bpf.EvRead:
		runs := bpf.ReadEvents(raw)
		for i := range runs {
			a.dispatch1(typ, unsafe.Pointer(&runs[i]), bpf.Encode(&runs[i]))
		}
	default:
		a.dispatch1(typ, ptr, raw)
	}
}

// dispatch1 hands one event to its recording, or holds it for an early cgroup, called
// with a.mu held. An event of a cgroup the kernel tracks that has neither is lost, and
// counted: the recordings of the moment say so.
func (a *Watcher) dispatch1(typ uint32, ptr unsafe.Pointer, raw []byte) {
	h := (*bpf.Header)(ptr)
	if r := a.route(typ, h); r != nil {
		a.deliver(r, typ, ptr, raw)
		return
	}
	if !a.hold(typ, ptr, raw) && !byProcess(typ) && a.probes.Tracking(h.Cgroup) {
		a.unrouted++
	}
	a.expireEarly() // also while the ring never empties
}

// deliver hands an event to its recording, called with a.mu held. A recording that is
// being drained keeps its read runs and page-cache misses apart, as Drain may have them
// too (see drain).
func (a *Watcher) deliver(r *recording, typ uint32, ptr unsafe.Pointer, raw []byte) {
	h := (*bpf.Header)(ptr)
	switch {
	case r.draining && typ == bpf.EvRead:
		r.late.Reads = append(r.late.Reads, *(*bpf.EventRead)(ptr))
		return
	case r.draining && typ == bpf.EvCacheMiss:
		r.late.Misses = append(r.late.Misses, *(*bpf.EventCacheMiss)(ptr))
		return
	}
	r.rec.Handle(raw)
	switch {
	case typ == bpf.EvFork:
		// The child is the container's from its birth, before any event of its own
		// names its cgroup: its first may be one that goes by process.
		a.adopt(r, (*bpf.EventFork)(ptr).Child)
	case typ == bpf.EvExec && h.Pid == r.initPID:
		r.execSeen = true
	}
}

// route finds the recording an event belongs to, called with a.mu held: by the event's
// cgroup, or its process (see byProcess).
func (a *Watcher) route(typ uint32, h *bpf.Header) *recording {
	if !byProcess(typ) {
		if r := a.byCgroup[h.Cgroup]; r != nil {
			a.adopt(r, h.Pid)
			return r
		}
	}
	return a.byPID[h.Pid]
}

// adopt notes a process of a recording's container, called with a.mu held.
func (a *Watcher) adopt(r *recording, pid uint32) {
	if a.byPID[pid] != r {
		r.pids[pid] = true
		a.byPID[pid] = r
	}
}

// byProcess says whether events of type typ go to their container by their process
// alone. The header's cgroup is the current task's: the event's process for events of a
// syscall or a fault, but anyone's for socket events, which the kernel may send from
// interrupt context, so those go by their process.
func byProcess(typ uint32) bool { return typ == bpf.EvSock || typ == bpf.EvConn }

// drain hands over what the kernel still has of a recording whose cgroup is untracked,
// and forgets the recording. Its events sent before the untrack are in the ring, which
// catchUp empties into the recording; its read runs still in a batch, its open runs and
// the rest are in Drain's copy. A batch sent after the copy, or an open run that a close
// sends, is in the ring and in the copy both: what reaches the recording from the copy
// on is kept apart (draining) and merged with the copy, each run once.
func (a *Watcher) drain(r *recording) (*bpf.Held, []string) {
	a.mu.Lock()
	r.draining = true
	a.mu.Unlock()
	var warnings []string
	held, err := a.probes.Drain()
	if err != nil {
		warnings = append(warnings, err.Error())
	}
	if !a.catchUp() {
		warnings = append(warnings, "the event ring did not empty within a second: the last events may be missing")
	}
	a.mu.Lock()
	a.forget(r)
	a.mu.Unlock()
	mine := held.Of(func(pid uint32) bool { return r.pids[pid] })
	mine.Reads = union(mine.Reads, r.late.Reads, func(e *bpf.EventRead) [3]int64 { return [3]int64{int64(e.H.Pid), int64(e.Fd), int64(e.First)} },
		func(e *bpf.EventRead) uint64 { return uint64(e.Count) })
	mine.Misses = union(mine.Misses, r.late.Misses, func(e *bpf.EventCacheMiss) [4]uint64 { return [4]uint64{uint64(e.H.Pid), e.Dev, e.Ino, e.Index} },
		func(e *bpf.EventCacheMiss) uint64 { return e.Pages })
	return mine, warnings
}

// union is the events of a and b, each run once by key: of two with one key, the one of
// greater size, as a run only grows.
func union[E any, K comparable](a, b []E, key func(*E) K, size func(*E) uint64) []E {
	at := map[K]int{}
	var out []E
	for _, evs := range [][]E{a, b} {
		for i := range evs {
			e := &evs[i]
			k := key(e)
			if j, ok := at[k]; !ok {
				at[k] = len(out)
				out = append(out, *e)
			} else if size(e) > size(&out[j]) {
				out[j] = *e
			}
		}
	}
	return out
}

// catchUp returns once every event the kernel sent before the call has been dispatched,
// or after a second of a ring that never empties.
func (a *Watcher) catchUp() bool {
	ch := make(chan struct{})
	a.mu.Lock()
	a.waiting = append(a.waiting, ch)
	a.mu.Unlock()
	a.probes.Ring().Flush() // wake an idle reader
	select {
	case <-ch:
		return true
	case <-time.After(time.Second):
		return false
	}
}

// path is where a container's trace goes.
func (a *Watcher) path(id string) string {
	return filepath.Join(a.opts.DataDir, "traces", a.opts.Namespace, id+".json.gz")
}

// recorded says whether the container created at created has a trace already.
func (a *Watcher) recorded(id string, created time.Time) bool {
	fi, err := os.Stat(a.path(id))
	return err == nil && fi.ModTime().After(created)
}

// later is the later of two instants.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
