package bpf

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/trace"
)

// Config sizes the kernel side.
type Config struct {
	// RingBufferBytes is the ring buffer's size: a power of two, at least a page. Zero
	// means 16 MiB.
	RingBufferBytes int
	// SampleInterval is the least time between two byte-count samples of one socket.
	// Zero means one millisecond.
	SampleInterval time.Duration
	// FaultLookup looks every page fault's mapping up at the fault, as on kernels before
	// 6.2 (see RSSPerFault), whatever the kernel: for tests and benchmarks of that path.
	FaultLookup bool
}

// Probes is the loaded and attached kernel side.
type Probes struct {
	coll   *ebpf.Collection
	links  []link.Link
	ring   *ringbuf.Reader
	status []trace.Probe

	// The programs that SetActive detaches and attaches (all but alwaysOn), by section,
	// and their links while attached.
	active   sync.Mutex
	onDemand map[string]string // program -> section
	armed    []link.Link

	mu       sync.Mutex
	uprobed  map[[2]uint64]bool // libraries (device, inode) whose driver calls are uprobed
	uprobeLk []link.Link
}

// What each program gives; a program that cannot attach costs exactly this.
var loses = map[string]string{
	"sched_fork":    "child processes are not followed",
	"sched_exec":    "exec'd programs are not named",
	"sched_exit":    "process exits and exit codes",
	"sys_enter":     "every syscall: opens, reads, mmaps, listen (readiness), accepts, ioctls, chdir",
	"sys_exit":      "every syscall: opens, reads, mmaps, listen (readiness), accepts, ioctls, chdir",
	"page_fault":    "reads of mmapped files (model weights are usually mmapped)",
	"fault_mapped":  "reads of mmapped files (model weights are usually mmapped)",
	"cache_add":     "page-cache misses",
	"sock_state":    "outgoing TCP connections and their close",
	"sock_recv":     "bytes received per connection",
	"sock_send":     "bytes sent per connection, and the request that names a download's URL",
	"enter_ioctl":   "accelerator ioctls",
	"exit_ioctl":    "accelerator ioctls",
	"enter_listen":  "readiness (listen)",
	"exit_listen":   "readiness (listen)",
	"enter_close":   "descriptor closes (read runs end at the next non-sequential read instead)",
	"enter_chdir":   "working-directory changes (relative paths may resolve wrongly)",
	"exit_chdir":    "working-directory changes (relative paths may resolve wrongly)",
	"enter_fchdir":  "working-directory changes (relative paths may resolve wrongly)",
	"exit_fchdir":   "working-directory changes (relative paths may resolve wrongly)",
	"enter_accept":  "accepted TCP connections",
	"exit_accept":   "accepted TCP connections",
	"enter_accept4": "accepted TCP connections",
	"exit_accept4":  "accepted TCP connections",
	"enter_mmap":    "file mappings",
	"exit_mmap":     "file mappings",
	"call_enter":    "accelerator driver calls (cuInit, context creation)",
	"call_exit":     "accelerator driver calls (cuInit, context creation)",
	"enter_open":    "files opened with open(2)",
	"exit_open":     "files opened with open(2)",
	"enter_openat":  "files opened with openat(2)",
	"exit_openat":   "files opened with openat(2)",
	"enter_openat2": "files opened with openat2(2)",
	"exit_openat2":  "files opened with openat2(2)",
	"cgroup_mkdir":  "containers are traced from containerd's task-create event, not from their cgroup's creation: a container started at once can run untraced meanwhile",

	// The faults the kernel takes on user memory during a syscall.
	"page_fault_kernel": "reads of mmapped files by syscalls (a path argument in an executable's .rodata)",
}

func losesFor(prog string) string {
	if l, ok := loses[prog]; ok {
		return l
	}
	for _, p := range []string{"enter_", "exit_"} {
		if s, ok := strings.CutPrefix(prog, p); ok {
			if strings.Contains(s, "write") || strings.HasPrefix(s, "send") {
				return "bytes written to files and requests sent through " + s + "(2)"
			}
			return "file reads through " + s + "(2)"
		}
	}
	return prog
}

// Load loads the programs into the kernel and attaches them. A program the kernel refuses
// or an attach point it lacks is recorded in Status and costs only what that program
// observes; Load fails only when nothing useful could be loaded.
func Load(cfg Config) (*Probes, error) {
	if cfg.RingBufferBytes == 0 {
		cfg.RingBufferBytes = 16 << 20
	}
	if cfg.SampleInterval == 0 {
		cfg.SampleInterval = time.Millisecond
	}
	if cfg.RingBufferBytes < os.Getpagesize() || cfg.RingBufferBytes&(cfg.RingBufferBytes-1) != 0 {
		return nil, fmt.Errorf("ring buffer size %d: must be a power of two of at least %d bytes", cfg.RingBufferBytes, os.Getpagesize())
	}
	spec, err := loadColdtrace()
	if err != nil {
		return nil, fmt.Errorf("read the embedded BPF object: %w", err)
	}
	spec.Maps["events"].MaxEntries = uint32(cfg.RingBufferBytes)
	if err := spec.Variables["sample_ns"].Set(uint64(cfg.SampleInterval)); err != nil {
		return nil, err
	}
	if err := spec.Variables["fault_around_bytes"].Set(FaultAroundBytes()); err != nil {
		return nil, err
	}
	if err := spec.Variables["whole_folios"].Set(WholeFolios()); err != nil {
		return nil, err
	}
	if err := spec.Variables["wakeup_bytes"].Set(uint64(min(cfg.RingBufferBytes/4, 256<<10))); err != nil {
		return nil, err
	}
	gate := RSSPerFault() && !cfg.FaultLookup
	if err := spec.Variables["rss_gate"].Set(gate); err != nil {
		return nil, err
	}
	if !gate {
		delete(spec.Programs, "fault_mapped")
	}
	return load(spec)
}

// alwaysOn are the programs that SetActive(false) leaves attached: they run rarely and
// must never miss a moment (cgroup creation, which tracks a new container in the kernel;
// process fork, exec and exit).
var alwaysOn = map[string]bool{"cgroup_mkdir": true, "sched_fork": true, "sched_exec": true, "sched_exit": true}

// RSSPerFault says whether the kernel reports the pages each fault maps on the rss_stat
// tracepoint (Linux 6.2, where mm's counters became per-CPU; before, it reported only
// every 128 pages), which lets page faults that map no file cost nearly nothing.
func RSSPerFault() bool { return kernelAtLeast(6, 2) }

// load loads and attaches what the kernel accepts of spec.
func load(spec *ebpf.CollectionSpec) (*Probes, error) {
	p := &Probes{uprobed: map[[2]uint64]bool{}, onDemand: map[string]string{}}
	// Drop the programs this kernel refuses one at a time, keeping the rest.
	for {
		coll, err := ebpf.NewCollection(spec)
		if err == nil {
			p.coll = coll
			break
		}
		bad := failingProgram(spec, err)
		if bad == "" {
			return nil, fmt.Errorf("load BPF programs: %w", explain(err))
		}
		p.status = append(p.status, trace.Probe{Name: bad, Error: firstLine(err), Loses: losesFor(bad)})
		delete(spec.Programs, bad)
		dropTailCall(spec, bad)
	}
	ensureTracefs()
	names := make([]string, 0, len(spec.Programs))
	for name := range spec.Programs {
		names = append(names, name)
	}
	sort.Strings(names)
	targets := tailCallTargets(spec)
	attached := map[string]bool{} // section names with an attached program
	for _, name := range names {
		sec := spec.Programs[name].SectionName
		if targets[name] {
			continue
		}
		l, err := attach(sec, p.coll.Programs[name])
		switch {
		case err != nil:
			p.status = append(p.status, trace.Probe{Name: name, Error: firstLine(err), Loses: losesFor(name)})
		case l != nil:
			attached[sec] = true
			p.status = append(p.status, trace.Probe{Name: name, Attached: true})
			if alwaysOn[name] {
				p.links = append(p.links, l)
			} else {
				p.onDemand[name] = sec
				p.armed = append(p.armed, l)
			}
		}
	}
	// A tail-called handler runs when the program attached to its section (its
	// dispatcher) does.
	for name := range targets {
		sec := spec.Programs[name].SectionName
		if attached[sec] {
			p.status = append(p.status, trace.Probe{Name: name, Attached: true})
		} else {
			p.status = append(p.status, trace.Probe{Name: name, Error: "nothing attached to " + sec + " calls it", Loses: losesFor(name)})
		}
	}
	sort.Slice(p.status, func(i, j int) bool { return p.status[i].Name < p.status[j].Name })
	if len(p.links) == 0 && len(p.onDemand) == 0 {
		p.Close()
		return nil, fmt.Errorf("no probe could be attached (%s: %s)", p.status[0].Name, p.status[0].Error)
	}
	var err error
	p.ring, err = ringbuf.NewReader(p.coll.Maps["events"])
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	return p, nil
}

// SetActive detaches (false) every program but the alwaysOn ones, or attaches them again
// (true); Load attaches them all. An agent that records now and then keeps them detached
// meanwhile: the node's syscalls and page faults then run no coldtrace program. A program
// that cannot attach again is reported in the error, the others attached.
func (p *Probes) SetActive(on bool) error {
	p.active.Lock()
	defer p.active.Unlock()
	if !on {
		closeAll(p.armed)
		p.armed = nil
		return nil
	}
	if p.armed != nil || len(p.onDemand) == 0 {
		return nil
	}
	var errs []error
	for name, sec := range p.onDemand {
		l, err := attach(sec, p.coll.Programs[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		if l != nil {
			p.armed = append(p.armed, l)
		}
	}
	return errors.Join(errs...)
}

// closeAll detaches links in parallel: each detach waits for an RCU grace period, and
// parallel detaches share them.
func closeAll(links []link.Link) {
	var wg sync.WaitGroup
	for _, l := range links {
		wg.Add(1)
		go func() { defer wg.Done(); l.Close() }()
	}
	wg.Wait()
}

// attach attaches a program by its section name. Uprobes are attached later, per library.
func attach(section string, prog *ebpf.Program) (link.Link, error) {
	kind, target, _ := strings.Cut(section, "/")
	switch kind {
	case "tracepoint":
		group, name, _ := strings.Cut(target, "/")
		return link.Tracepoint(group, name, prog, nil)
	case "tp_btf":
		return link.AttachTracing(link.TracingOptions{Program: prog})
	case "uprobe", "uretprobe":
		return nil, nil
	}
	return nil, fmt.Errorf("unknown section %q", section)
}

// tailCallTargets names the programs that program arrays hold: the syscall handlers, which
// sys_enter and sys_exit tail-call rather than being attached themselves.
func tailCallTargets(spec *ebpf.CollectionSpec) map[string]bool {
	targets := map[string]bool{}
	for _, m := range spec.Maps {
		if m.Type != ebpf.ProgramArray {
			continue
		}
		for _, kv := range m.Contents {
			if name, ok := kv.Value.(string); ok {
				targets[name] = true
			}
		}
	}
	return targets
}

// dropTailCall removes a program that failed to load from the program arrays that hold it,
// so that the rest still load.
func dropTailCall(spec *ebpf.CollectionSpec, prog string) {
	for _, m := range spec.Maps {
		if m.Type != ebpf.ProgramArray {
			continue
		}
		m.Contents = slices.DeleteFunc(m.Contents, func(kv ebpf.MapKV) bool { return kv.Value == prog })
	}
}

func failingProgram(spec *ebpf.CollectionSpec, err error) string {
	msg := err.Error()
	for name := range spec.Programs {
		if strings.Contains(msg, "program "+name+":") {
			return name
		}
	}
	return ""
}

func explain(err error) error {
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w (coldtrace needs root or CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE)", err)
	}
	return err
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// ensureTracefs mounts tracefs where it is missing: tracepoint links need its event IDs.
func ensureTracefs() {
	for _, d := range []string{"/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"} {
		if _, err := os.Stat(d); err == nil {
			return
		}
	}
	_ = unix.Mount("nodev", "/sys/kernel/tracing", "tracefs", 0, "")
}

// FaultAroundBytes is the kernel's fault-around window (debugfs shows it when mounted).
func FaultAroundBytes() uint64 {
	b, err := os.ReadFile("/sys/kernel/debug/fault_around_bytes")
	if err == nil {
		var n uint64
		if _, err := fmt.Sscan(string(b), &n); err == nil && n >= 4096 && n&(n-1) == 0 {
			return n
		}
	}
	return 65536
}

// WholeFolios says whether the kernel maps a large cached folio whole at a fault near
// it, where the folio lies within the mapping and one page table (Linux 6.18).
func WholeFolios() bool { return kernelAtLeast(6, 18) }

func kernelAtLeast(major, minor int) bool {
	var uts unix.Utsname
	if unix.Uname(&uts) != nil {
		return false
	}
	var maj, min int
	fmt.Sscanf(unix.ByteSliceToString(uts.Release[:]), "%d.%d", &maj, &min)
	return maj > major || maj == major && min >= minor
}

// Status lists every program and whether it is attached.
func (p *Probes) Status() []trace.Probe { return append([]trace.Probe(nil), p.status...) }

// TrackPID adds a process to the traced set; its descendants follow through fork.
func (p *Probes) TrackPID(pid uint32) error {
	return p.coll.Maps["tracked_pids"].Put(pid, uint8(1))
}

// TrackCgroup adds a cgroup (by its v2 id) to the traced set.
func (p *Probes) TrackCgroup(id uint64) error {
	return p.coll.Maps["tracked_cgroups"].Put(id, uint8(1))
}

// WatchCgroup has every cgroup created below this one (by v2 id, up to 8 levels down)
// traced from its creation, announced by an EvCgroup event.
func (p *Probes) WatchCgroup(id uint64) error {
	return p.coll.Maps["watched_cgroups"].Put(id, uint8(1))
}

// UntrackCgroup removes a cgroup from the traced set.
func (p *Probes) UntrackCgroup(id uint64) error {
	return p.coll.Maps["tracked_cgroups"].Delete(id)
}

// Tracking says whether a cgroup (by its v2 id) is in the traced set.
func (p *Probes) Tracking(id uint64) bool {
	var v uint8
	return p.coll.Maps["tracked_cgroups"].Lookup(id, &v) == nil
}

// Ring is the ring buffer the events arrive on. The kernel wakes its reader only when a
// quarter of it is full or for events that need an answer now (listen, exit, a new
// container's cgroup), so a reader must poll while it records: set a deadline of
// PollInterval before each wait. An idle reader may block with no deadline.
func (p *Probes) Ring() *ringbuf.Reader { return p.ring }

// PollInterval bounds how long events wait in the ring buffer before the reader sees them.
const PollInterval = 5 * time.Millisecond

// Lost is the number of events dropped because the ring buffer was full.
func (p *Probes) Lost() (uint64, error) {
	var perCPU []uint64
	if err := p.coll.Maps["lost"].Lookup(uint32(0), &perCPU); err != nil {
		return 0, err
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n, nil
}

// DriverCalls are the user-space driver functions uprobed in an accelerator library; the
// index is the attach cookie that call events carry.
var DriverCalls = []string{"cuInit", "cuDevicePrimaryCtxRetain", "cuCtxCreate", "cuCtxCreate_v2", "cuCtxCreate_v3"}

// AttachLibrary uprobes the driver calls that the library at path exports. It is safe to
// call again for the same library, under any path: uprobes belong to the inode.
func (p *Probes) AttachLibrary(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return err
	}
	key := [2]uint64{st.Dev, st.Ino}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.uprobed[key] {
		return nil
	}
	enter, exit := p.coll.Programs["call_enter"], p.coll.Programs["call_exit"]
	if enter == nil || exit == nil {
		return errors.New("uprobe programs are not loaded")
	}
	ex, err := link.OpenExecutable(path)
	if err != nil {
		return err
	}
	n := 0
	for i, sym := range DriverCalls {
		opts := &link.UprobeOptions{Cookie: uint64(i)}
		in, err := ex.Uprobe(sym, enter, opts)
		if err != nil {
			continue // not every driver version exports every variant
		}
		out, err := ex.Uretprobe(sym, exit, opts)
		if err != nil {
			in.Close()
			return fmt.Errorf("uretprobe %s in %s: %w", sym, path, err)
		}
		p.uprobeLk = append(p.uprobeLk, in, out)
		n++
	}
	if n == 0 {
		return fmt.Errorf("%s exports none of %s", path, strings.Join(DriverCalls, ", "))
	}
	p.uprobed[key] = true
	return nil
}

// Close detaches and unloads everything.
func (p *Probes) Close() error {
	if p.ring != nil {
		p.ring.Close()
	}
	p.mu.Lock()
	for _, l := range p.uprobeLk {
		l.Close()
	}
	p.mu.Unlock()
	p.active.Lock()
	closeAll(append(p.links, p.armed...))
	p.armed = nil
	p.active.Unlock()
	if p.coll != nil {
		p.coll.Close()
	}
	return nil
}
