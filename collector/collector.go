// Package collector turns the kernel's events into a cold-start trace: it keeps the state
// the events refer to (processes, their working directories and descriptor tables, files
// by inode, connections by socket), resolves paths, coalesces byte ranges, and at the end
// segments the timeline into phases and a critical path.
package collector

import (
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/coldtrace/coldtrace/bpf"
	"github.com/coldtrace/coldtrace/trace"
)

// DefaultDevicePatterns are the accelerator device nodes of docs/architecture.md, as path.Match globs.
var DefaultDevicePatterns = []string{
	"/dev/nvidia*", "/dev/nvidia-uvm*", "/dev/nvidia-caps/*", "/dev/dri/*", "/dev/kfd",
	"/dev/accel/*", "/dev/neuron*",
}

// DriverLibraryPattern matches the user-space driver whose calls are uprobed.
const DriverLibraryPattern = "libcuda.so*"

const atFDCWD = -100

// Options configure a Collector.
type Options struct {
	// DevicePatterns are globs of accelerator device nodes; nil means the defaults.
	DevicePatterns []string
	// OnDriverLibrary is called, from the event loop, when a traced process opens a file
	// that matches DriverLibraryPattern; pid is the opener, so that the path can be
	// reached through /proc/PID/root.
	OnDriverLibrary func(pid uint32, path string)
}

type fileKey struct{ dev, ino uint64 }

type fdInfo struct {
	path string
	key  fileKey
	mode uint32
	rdev uint64
}

type proc struct {
	trace.Process
	cwd   string
	fds   map[int32]fdInfo
	execd bool // its Exec is an exec we saw, not the zero of a process known by other events
	// since is when the container's init became the workload, at its exec (see SetInit).
	since uint64
	// maps are its file mappings, newest last: where a fault whose mapping the kernel
	// could not look up (see bpf's page_fault) is found.
	maps []mapping
}

// mapping is an mmap of a regular file.
type mapping struct {
	addr, len uint64
	off       int64
	file      fileKey
}

type fileState struct {
	trace.File
	reads   []trace.Range // as they arrived, coalesced at the end
	faults  []fault
	misses  []missRun
	writers map[uint32]writer // by pid
}

// fault is a page fault's fault-around window; page is the file offset of the faulting
// page, [lo, hi) the file offsets its mapping covers and vmStart the address of lo.
type fault struct {
	trace.Range
	page, lo, hi int64
	vmStart      uint64
}

// missRun is a run of pages added to the page cache as folios of one order.
type missRun struct {
	index, pages uint64
	order        uint32
	at           uint64
}

type connState struct {
	trace.Conn
	request []byte // the first bytes sent
}

type ioctlKey struct {
	rdev uint64
	req  uint64
}

// Collector accumulates events. It is not safe for concurrent use: one event loop owns it.
type Collector struct {
	opts    Options
	t0      uint64 // time zero on CLOCK_MONOTONIC
	procs   map[uint32]*proc
	order   []uint32 // processes in order of appearance
	files   map[fileKey]*fileState
	conns   map[uint64]*connState
	connSeq []uint64
	devices map[uint64]string // rdev of accelerator nodes -> path
	ioctls  map[ioctlKey]*trace.IoctlStat
	gpu     trace.GPU
	gpuActs []trace.Interval // ioctls and mappings of accelerator devices
	ready   *trace.Ready
	events  uint64
	errors  uint64
	init    uint32 // the container's init process, 0 for none (see SetInit)
	// faultAround is the kernel's fault-around window; page the page size. wholeFolios
	// says that the kernel maps a large folio whole at a fault (Linux 6.18).
	faultAround, page uint64
	wholeFolios       bool
}

// New returns an empty collector whose time zero is start (CLOCK_MONOTONIC ns).
func New(start uint64, opts Options) *Collector {
	if opts.DevicePatterns == nil {
		opts.DevicePatterns = DefaultDevicePatterns
	}
	return &Collector{
		opts:    opts,
		t0:      start,
		procs:   map[uint32]*proc{},
		files:   map[fileKey]*fileState{},
		conns:   map[uint64]*connState{},
		devices: map[uint64]string{},
		ioctls:  map[ioctlKey]*trace.IoctlStat{},

		faultAround: bpf.FaultAroundBytes(),
		page:        uint64(os.Getpagesize()),
		wholeFolios: bpf.WholeFolios(),
	}
}

// Start is time zero on CLOCK_MONOTONIC.
func (c *Collector) Start() uint64 { return c.t0 }

// Events is the number of events handled; Errors the number refused as malformed.
func (c *Collector) Events() uint64 { return c.events }
func (c *Collector) Errors() uint64 { return c.errors }

// Ready is the first listen of a traced process, or nil.
func (c *Collector) Ready() *trace.Ready { return c.ready }

// AddProcess registers a process that was traced from its start without a fork event
// (the root of `record -- CMD`), with its working directory and executable.
func (c *Collector) AddProcess(pid, ppid uint32, exe, cwd string, at uint64) {
	p := c.proc(pid)
	p.PPID = int(ppid)
	p.Exe = exe
	p.Comm = filepath.Base(exe)
	p.Exec = c.rel(at)
	p.Fork = c.rel(at)
	p.cwd = cwd
	p.execd = true
}

// rel converts a monotonic timestamp into trace time; events from before time zero (a
// read run that started earlier) clamp to zero.
func (c *Collector) rel(ts uint64) trace.Duration {
	if ts <= c.t0 {
		return 0
	}
	return trace.Duration(ts - c.t0)
}

func (c *Collector) proc(pid uint32) *proc {
	p, ok := c.procs[pid]
	if !ok {
		p = &proc{Process: trace.Process{PID: int(pid)}, fds: map[int32]fdInfo{}}
		// A process that joined the traced set without a traced fork or exec (a container
		// runtime's init, moved into the container's cgroup) is named by what it runs now,
		// so that the pages it maps from its own binary can be named too. A fork or an
		// exec event overrides this.
		p.Exe, _ = os.Readlink("/proc/" + strconv.Itoa(int(pid)) + "/exe")
		p.Comm, p.PPID = procStat(pid)
		// Until the init execs, and outside its descendants, a process of a container is
		// its runtime's; a fork or the init's exec says otherwise.
		p.Runtime = c.init != 0
		c.procs[pid] = p
		c.order = append(c.order, pid)
	}
	return p
}

// HandleHeld takes what the kernel held back (bpf.Drain); filter it with bpf.Held.Of.
func (c *Collector) HandleHeld(h *bpf.Held) {
	handleAll(c, h.Reads, (*Collector).read)
	handleAll(c, h.Misses, (*Collector).cacheMiss)
	handleAll(c, h.Socks, (*Collector).sock)
	handleAll(c, h.Writes, (*Collector).written)
}

func handleAll[E any](c *Collector, evs []E, handle func(*Collector, *E)) {
	c.events += uint64(len(evs))
	for i := range evs {
		handle(c, &evs[i])
	}
}

// Handle applies one raw ring buffer record.
func (c *Collector) Handle(raw []byte) error {
	typ, ptr, err := bpf.Decode(raw)
	if err != nil {
		c.errors++
		return err
	}
	c.events++
	switch typ {
	case bpf.EvFork:
		c.fork((*bpf.EventFork)(ptr))
	case bpf.EvExec:
		c.exec((*bpf.EventExec)(ptr))
	case bpf.EvExit:
		e := (*bpf.EventExit)(ptr)
		p := c.proc(e.H.Pid)
		p.Exit = c.rel(e.H.Ts)
		p.joined(e.H.Cgroup)
		p.ExitCode = int(e.Code)
	case bpf.EvOpen:
		e := bpf.OpenHeader(raw)
		c.open(&e, bpf.OpenPath(raw))
	case bpf.EvRead:
		evs := bpf.ReadEvents(raw)
		c.events += uint64(len(evs) - 1)
		for i := range evs {
			c.read(&evs[i])
		}
	case bpf.EvMmap:
		c.mmap((*bpf.EventMmap)(ptr))
	case bpf.EvFault:
		e := (*bpf.EventFault)(ptr)
		m := mapping{addr: e.VmStart, len: e.VmEnd - e.VmStart, off: int64(e.VmOff), file: fileKey{e.Dev, e.Ino}}
		from, to := e.From, e.To
		if m.file == (fileKey{}) {
			var ok bool
			if m, ok = c.proc(e.H.Pid).mappingAt(e.Addr); !ok {
				break
			}
			from, to = c.faultWindow(m, e.Addr)
		}
		if e.Addr >= m.addr && e.Addr < m.addr+m.len && m.addr <= from && from < to && to <= m.addr+m.len {
			c.fault(e.H.Pid, m, e.Addr, from, to, e.H.Ts)
		}
	case bpf.EvCacheMiss:
		c.cacheMiss((*bpf.EventCacheMiss)(ptr))
	case bpf.EvConn:
		c.conn((*bpf.EventConn)(ptr))
	case bpf.EvSock:
		c.sock((*bpf.EventSock)(ptr))
	case bpf.EvListen:
		e := (*bpf.EventListen)(ptr)
		if c.ready == nil {
			c.ready = &trace.Ready{At: c.rel(e.H.Ts), Kind: "listen", PID: int(e.H.Pid),
				Addr: formatAddr(e.Family, e.Addr, e.Port)}
		}
	case bpf.EvIoctl:
		c.ioctl((*bpf.EventIoctl)(ptr))
	case bpf.EvCall:
		e := (*bpf.EventCall)(ptr)
		name := fmt.Sprintf("call#%d", e.Cookie)
		if int(e.Cookie) < len(bpf.DriverCalls) {
			name = bpf.DriverCalls[e.Cookie]
		}
		c.gpu.Calls = append(c.gpu.Calls, trace.Call{Name: name, PID: int(e.H.Pid), TID: int(e.H.Tid),
			Start: c.rel(e.Start), End: c.rel(e.H.Ts), Return: e.Ret})
	case bpf.EvPayload:
		c.payload((*bpf.EventPayload)(ptr))
	case bpf.EvWrite:
		c.written((*bpf.EventWrite)(ptr))
	case bpf.EvChdir:
		e := (*bpf.EventChdir)(ptr)
		p := c.proc(e.H.Pid)
		if e.Fd >= 0 {
			if fd, ok := p.fds[e.Fd]; ok {
				p.cwd = fd.path
			}
		} else {
			p.cwd = c.resolve(p, atFDCWD, bpf.CString(e.Path[:]))
		}
	}
	return nil
}

// joined notes the cgroup of a process known only by events it sent from its own
// context (a fork's parent, an exit): one that joined the traced set without a traced fork
// or exec.
func (p *proc) joined(cgroup uint64) {
	if p.Cgroup == 0 {
		p.Cgroup = cgroup
	}
}

func (c *Collector) fork(e *bpf.EventFork) {
	parent := c.proc(e.H.Pid)
	parent.joined(e.H.Cgroup)
	if parent.Comm == "" {
		// Gone before its name was read (see proc): a fork's child is named as its parent.
		parent.Comm = bpf.CString(e.Comm[:])
	}
	child := c.proc(e.Child)
	child.PPID = int(e.H.Pid)
	child.Fork = c.rel(e.H.Ts)
	child.Comm = bpf.CString(e.Comm[:])
	child.Exe = parent.Exe
	child.Cgroup = e.H.Cgroup
	child.Runtime = parent.Runtime
	child.cwd = parent.cwd
	for fd, info := range parent.fds {
		child.fds[fd] = info
	}
	child.maps = slices.Clone(parent.maps)
}

func (c *Collector) exec(e *bpf.EventExec) {
	p := c.proc(e.H.Pid)
	p.Exec = c.rel(e.H.Ts)
	p.execd = true
	p.maps = nil
	p.Comm = bpf.CString(e.Comm[:])
	p.Exe = c.resolve(p, atFDCWD, bpf.CString(e.Filename[:]))
	p.Cgroup = e.H.Cgroup
	if e.H.Pid == c.init {
		p.Runtime, p.since = false, e.H.Ts // the entrypoint
	}
	if !p.Runtime {
		f := c.file(fileKey{e.Dev, e.Ino}, e.H.Pid, -1)
		if strings.HasPrefix(f.Path, "inode:") {
			f.Path = p.Exe
		}
	}
	if p.PPID == 0 {
		p.PPID = int(e.Ppid)
	}
}

// resolve makes name absolute: relative to the process's working directory, or to the
// directory open at dirfd.
func (c *Collector) resolve(p *proc, dirfd int32, name string) string {
	if name == "" {
		return ""
	}
	if path.IsAbs(name) {
		return path.Clean(name)
	}
	base := p.cwd
	if dirfd != atFDCWD {
		base = p.fds[dirfd].path
	}
	if base == "" {
		// We joined late (the watcher's case): the process itself knows.
		if cwd, err := readlinkProc(p.PID, int(dirfd)); err == nil {
			base = cwd
			if dirfd == atFDCWD {
				p.cwd = cwd
			}
		} else {
			return name
		}
	}
	return path.Join(base, name)
}

const (
	sIFMT  = 0o170000
	sIFREG = 0o100000
	sIFCHR = 0o020000
	sIFDIR = 0o040000
)

// open applies an open event; e.Path may be cut short, so pathname comes from the record.
func (c *Collector) open(e *bpf.EventOpen, pathname string) {
	p := c.proc(e.H.Pid)
	name := c.resolve(p, e.Dirfd, pathname)
	key := fileKey{e.Dev, e.Ino}
	p.fds[e.Fd] = fdInfo{path: name, key: key, mode: e.Mode, rdev: e.Rdev}
	switch e.Mode & sIFMT {
	case sIFREG:
		if c.runtime(e.H.Pid, e.H.Ts) {
			break
		}
		f := c.file(key, e.H.Pid, e.Fd)
		if strings.HasPrefix(f.Path, "inode:") {
			f.Path = name
		}
		if f.Opens == 0 || c.rel(e.H.Ts) < f.FirstOpen {
			f.FirstOpen = c.rel(e.H.Ts)
		}
		f.Opens++
		if e.Size > f.Size {
			f.Size = e.Size
		}
		if ok, _ := path.Match(DriverLibraryPattern, path.Base(name)); ok {
			if c.gpu.Library == "" {
				c.gpu.Library = name
			}
			if c.opts.OnDriverLibrary != nil {
				c.opts.OnDriverLibrary(e.H.Pid, name)
			}
		}
	case sIFCHR:
		if c.isDevice(name) {
			c.devices[e.Rdev] = name
			c.gpu.Opens = append(c.gpu.Opens, trace.DeviceOpen{Path: name, PID: int(e.H.Pid), At: c.rel(e.H.Ts)})
		}
	}
}

func (c *Collector) isDevice(name string) bool {
	for _, pat := range c.opts.DevicePatterns {
		if ok, _ := path.Match(pat, name); ok {
			return true
		}
	}
	return false
}

// file returns the state of an inode, naming it from the descriptor when it was not
// seen opening (a descriptor inherited from outside the traced tree).
func (c *Collector) file(key fileKey, pid uint32, fd int32) *fileState {
	f, ok := c.files[key]
	if !ok {
		f = &fileState{File: trace.File{Dev: key.dev, Ino: key.ino,
			Path: fmt.Sprintf("inode:%d:%d", key.dev, key.ino)}}
		if p, ok := c.procs[pid]; ok && fd >= 0 {
			if info, ok := p.fds[fd]; ok && info.key == key {
				f.Path = info.path
			}
		}
		c.files[key] = f
	}
	return f
}

func (c *Collector) cacheMiss(e *bpf.EventCacheMiss) {
	if c.runtime(e.H.Pid, e.H.Ts) {
		return
	}
	f := c.file(fileKey{e.Dev, e.Ino}, e.H.Pid, -1)
	f.misses = append(f.misses, missRun{index: e.Index, pages: e.Pages, order: e.Order, at: e.H.Ts})
}

func (c *Collector) read(e *bpf.EventRead) {
	if c.runtime(e.H.Pid, e.First) {
		return
	}
	f := c.file(fileKey{e.Dev, e.Ino}, e.H.Pid, e.Fd)
	f.reads = append(f.reads, trace.Range{Off: e.Off, Len: e.Len, First: c.rel(e.First), Last: c.rel(e.Last), Via: trace.AccessRead})
	f.BytesRead += e.Len
	f.ReadTime += trace.Duration(e.Busy)
}

// mappingAt finds the file mapping of addr among p's mmaps. A mapping unmapped since is
// not known to be gone (munmap is not traced); the newest one holding addr wins.
func (p *proc) mappingAt(addr uint64) (mapping, bool) {
	for i := len(p.maps) - 1; i >= 0; i-- {
		if m := p.maps[i]; addr >= m.addr && addr < m.addr+m.len {
			return m, true
		}
	}
	return mapping{}, false
}

// faultWindow is the fault-around window the kernel maps around addr in m, as bpf's
// fault_vma computes it where it can look the mapping up (without the large folios at its
// ends): the window-aligned block of addresses that holds addr, or as many pages from the
// mapping's start where that cuts it, within the mapping and the page table.
func (c *Collector) faultWindow(m mapping, addr uint64) (from, to uint64) {
	page := addr &^ (c.page - 1)
	from = max(page&^(c.faultAround-1), m.addr)
	return from, min(from+c.faultAround, page&^(c.tableSpan()-1)+c.tableSpan(), m.addr+m.len)
}

// tableSpan is what one page table maps (a PMD entry's span).
func (c *Collector) tableSpan() uint64 { return c.page * c.page / 8 }

// fault notes a page fault at addr in m that mapped the addresses [from, to).
func (c *Collector) fault(pid uint32, m mapping, addr, from, to, ts uint64) {
	if c.runtime(pid, ts) {
		return
	}
	at := c.rel(ts)
	f := c.file(m.file, pid, -1)
	f.faults = append(f.faults, fault{
		Range: trace.Range{Off: m.off + int64(from-m.addr), Len: int64(to - from), First: at, Last: at, Via: trace.AccessMmap},
		page:  m.off + int64(addr&^(c.page-1)-m.addr), lo: m.off, hi: m.off + int64(m.len), vmStart: m.addr,
	})
}

func (c *Collector) mmap(e *bpf.EventMmap) {
	switch e.Mode & sIFMT {
	case sIFREG:
		p := c.proc(e.H.Pid)
		if !c.runtime(e.H.Pid, e.H.Ts) {
			c.file(fileKey{e.Dev, e.Ino}, e.H.Pid, e.Fd).Mmaps++
		}
		// The kernel maps whole pages.
		p.maps = append(p.maps, mapping{addr: e.Addr, len: (e.Len + c.page - 1) &^ (c.page - 1), off: e.Off, file: fileKey{e.Dev, e.Ino}})
	case sIFCHR:
		if _, ok := c.devices[e.Rdev]; ok {
			c.gpu.Mmaps++
			at := c.rel(e.H.Ts)
			c.gpuActs = append(c.gpuActs, trace.Interval{Start: at, End: at})
		}
	}
}

func (c *Collector) conn(e *bpf.EventConn) {
	cs := c.connFor(e.Sk, e.H.Pid)
	cs.Local = formatAddr(e.Family, e.Saddr, e.Sport)
	cs.Remote = formatAddr(e.Family, e.Daddr, e.Dport)
	cs.Open = c.rel(e.Open)
	cs.Dir = "connect"
	if e.Dir == bpf.DirAccept {
		cs.Dir = "accept"
	}
}

func (c *Collector) connFor(sk uint64, pid uint32) *connState {
	cs, ok := c.conns[sk]
	if !ok {
		cs = &connState{Conn: trace.Conn{PID: int(pid), Role: "peer"}}
		c.conns[sk] = cs
		c.connSeq = append(c.connSeq, sk)
	}
	return cs
}

func (c *Collector) sock(e *bpf.EventSock) {
	cs := c.connFor(e.Sk, e.H.Pid)
	cs.BytesRecv, cs.BytesSent = int64(e.Recv), int64(e.Sent)
	if e.FirstRecv != 0 {
		cs.FirstRecv = c.rel(e.FirstRecv)
		cs.LastRecv = c.rel(e.LastRecv)
	}
	at := c.rel(e.H.Ts)
	if e.Reason == bpf.SockClose {
		cs.Close = at
	}
	if n := len(cs.Samples); n == 0 || cs.Samples[n-1].Recv != cs.BytesRecv || cs.Samples[n-1].Sent != cs.BytesSent {
		if e.LastRecv != 0 && e.Reason == bpf.SockClose {
			at = cs.LastRecv // the bytes arrived then, not at the close
		}
		cs.Samples = append(cs.Samples, trace.Sample{At: at, Recv: cs.BytesRecv, Sent: cs.BytesSent})
	}
}

func (c *Collector) ioctl(e *bpf.EventIoctl) {
	dev, ok := c.devices[e.Rdev]
	if !ok {
		return
	}
	k := ioctlKey{e.Rdev, e.Request}
	st, ok := c.ioctls[k]
	start, end := c.rel(e.Start), c.rel(e.H.Ts)
	if !ok {
		st = &trace.IoctlStat{Device: dev, Request: e.Request, First: start}
		c.ioctls[k] = st
	}
	st.Count++
	st.Total += end - start
	st.Last = end
	c.gpuActs = append(c.gpuActs, trace.Interval{Start: start, End: end})
}

// minWeightsSize is the size from which a file with a generic weights extension (.bin,
// .pt, ...) counts as model weights: small .pth files are Python path files.
const minWeightsSize = 1 << 20

// Classify names a file's kind from its path and size: weights by extension (and size,
// for extensions that other files use too), libraries by the conventions of shared
// objects and interpreter modules.
func Classify(p string, size int64) trace.FileKind {
	base := strings.ToLower(path.Base(p))
	switch path.Ext(base) {
	case ".safetensors", ".gguf", ".onnx", ".engine", ".plan":
		return trace.KindWeights
	case ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".npz", ".pb", ".tflite":
		if size >= minWeightsSize {
			return trace.KindWeights
		}
		return trace.KindOther
	case ".so", ".py", ".pyc", ".pyd", ".jar":
		return trace.KindLibrary
	}
	if i := strings.Index(base, ".so."); i > 0 && len(base) > i+4 && base[i+4] >= '0' && base[i+4] <= '9' {
		return trace.KindLibrary // versioned shared objects: libc.so.6
	}
	if stagedArtifact(p) && size >= MinArtifactSize {
		return trace.KindWeights
	}
	return trace.KindOther
}

// stagedArtifact reports whether p is a file of the cache agent's artifact store as a pod
// mounts it: DIR/sha256/<64 hex digits>, named by its digest, which is a manifest
// artifact's, the model files the agent staged. Content stores (containerd's, OCI
// layouts) keep image blobs at blobs/sha256/<hex>, which are not.
func stagedArtifact(p string) bool {
	dir, base := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	if len(base) != 64 || path.Base(dir) != "sha256" || path.Base(path.Dir(dir)) == "blobs" {
		return false
	}
	_, err := hex.DecodeString(base)
	return err == nil && strings.ToLower(base) == base
}

func formatAddr(family uint16, addr [16]uint8, port uint16) string {
	const afInet6 = 10
	if family == afInet6 {
		return fmt.Sprintf("[%s]:%d", ipv6(addr), port)
	}
	return fmt.Sprintf("%d.%d.%d.%d:%d", addr[0], addr[1], addr[2], addr[3], port)
}

func ipv6(a [16]uint8) string { return net.IP(a[:]).String() }

// readlinkProc asks procfs for a live process's working directory or open directory.
func readlinkProc(pid, dirfd int) (string, error) {
	link := "/proc/" + strconv.Itoa(pid) + "/cwd"
	if dirfd != atFDCWD {
		link = "/proc/" + strconv.Itoa(pid) + "/fd/" + strconv.Itoa(dirfd)
	}
	return os.Readlink(link)
}

// Process returns what is known of a traced process.
func (c *Collector) Process(pid uint32) (trace.Process, bool) {
	p, ok := c.procs[pid]
	if !ok {
		return trace.Process{}, false
	}
	return p.Process, true
}
