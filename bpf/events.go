package bpf

import (
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"
)

// The events of coldtrace.h, as bpf2go generated them.
type (
	Header         = coldtraceHdr
	EventFork      = coldtraceEventFork
	EventExec      = coldtraceEventExec
	EventExit      = coldtraceEventExit
	EventOpen      = coldtraceEventOpen
	EventRead      = coldtraceEventRead
	EventMmap      = coldtraceEventMmap
	EventFault     = coldtraceEventFault
	EventCacheMiss = coldtraceEventCacheMiss
	EventConn      = coldtraceEventConn
	EventSock      = coldtraceEventSock
	EventListen    = coldtraceEventListen
	EventIoctl     = coldtraceEventIoctl
	EventCall      = coldtraceEventCall
	EventChdir     = coldtraceEventChdir
	EventPayload   = coldtraceEventPayload
	EventWrite     = coldtraceEventWrite
	EventCgroup    = coldtraceEventCgroup
)

// Event types (hdr.type).
const (
	EvFork      = uint32(coldtraceEventTypeEV_FORK)
	EvExec      = uint32(coldtraceEventTypeEV_EXEC)
	EvExit      = uint32(coldtraceEventTypeEV_EXIT)
	EvOpen      = uint32(coldtraceEventTypeEV_OPEN)
	EvRead      = uint32(coldtraceEventTypeEV_READ)
	EvMmap      = uint32(coldtraceEventTypeEV_MMAP)
	EvFault     = uint32(coldtraceEventTypeEV_FAULT)
	EvCacheMiss = uint32(coldtraceEventTypeEV_CACHE_MISS)
	EvConn      = uint32(coldtraceEventTypeEV_CONN)
	EvSock      = uint32(coldtraceEventTypeEV_SOCK)
	EvListen    = uint32(coldtraceEventTypeEV_LISTEN)
	EvIoctl     = uint32(coldtraceEventTypeEV_IOCTL)
	EvCall      = uint32(coldtraceEventTypeEV_CALL)
	EvChdir     = uint32(coldtraceEventTypeEV_CHDIR)
	EvPayload   = uint32(coldtraceEventTypeEV_PAYLOAD)
	EvWrite     = uint32(coldtraceEventTypeEV_WRITE)
	EvCgroup    = uint32(coldtraceEventTypeEV_CGROUP)
)

// Socket event reasons.
const (
	SockSample = 1
	SockClose  = 2
)

// Connection directions.
const (
	DirConnect = 1
	DirAccept  = 2
)

var sizes = map[uint32]uintptr{
	EvFork: unsafe.Sizeof(EventFork{}), EvExec: unsafe.Sizeof(EventExec{}),
	EvExit: unsafe.Sizeof(EventExit{}), EvOpen: unsafe.Sizeof(EventOpen{}),
	EvRead: unsafe.Sizeof(EventRead{}),
	EvMmap: unsafe.Sizeof(EventMmap{}), EvFault: unsafe.Sizeof(EventFault{}),
	EvCacheMiss: unsafe.Sizeof(EventCacheMiss{}), EvConn: unsafe.Sizeof(EventConn{}),
	EvSock: unsafe.Sizeof(EventSock{}), EvListen: unsafe.Sizeof(EventListen{}),
	EvIoctl: unsafe.Sizeof(EventIoctl{}), EvCall: unsafe.Sizeof(EventCall{}),
	EvChdir: unsafe.Sizeof(EventChdir{}), EvPayload: unsafe.Sizeof(EventPayload{}),
	EvWrite: unsafe.Sizeof(EventWrite{}), EvCgroup: unsafe.Sizeof(EventCgroup{}),
}

// openPathAt is where an open event's path starts. The kernel sends an open event only up
// to the path's NUL, so a record may end anywhere after the path's first byte.
const openPathAt = unsafe.Offsetof(EventOpen{}.Path)

// Decode checks a raw ring buffer record and returns its type and a pointer to its
// payload: a *EventX that aliases raw, valid until raw is reused. An EvOpen record is
// shorter than EventOpen: read its path with OpenPath, never through the Path field. An
// EvRead record holds one or more EventRead back to back: read them with ReadEvents.
func Decode(raw []byte) (uint32, unsafe.Pointer, error) {
	if len(raw) < int(unsafe.Sizeof(Header{})) {
		return 0, nil, fmt.Errorf("short event: %d bytes", len(raw))
	}
	typ := *(*uint32)(unsafe.Pointer(&raw[0]))
	size, ok := sizes[typ]
	if !ok {
		return 0, nil, fmt.Errorf("unknown event type %d", typ)
	}
	if typ == EvOpen {
		size = openPathAt + 1
	}
	if uintptr(len(raw)) < size {
		return 0, nil, fmt.Errorf("event type %d: %d bytes, want %d", typ, len(raw), size)
	}
	return typ, unsafe.Pointer(&raw[0]), nil
}

// ReadEvents returns the read runs of a raw EvRead record that Decode accepted; the kernel
// sends them in batches.
func ReadEvents(raw []byte) []EventRead {
	return unsafe.Slice((*EventRead)(unsafe.Pointer(&raw[0])), uintptr(len(raw))/unsafe.Sizeof(EventRead{}))
}

// OpenHeader returns the fields of a raw EvOpen record that Decode accepted, with an empty
// Path (see OpenPath). The record is shorter than EventOpen, so it is copied rather than
// converted: a pointer to EventOpen over it would straddle the end of its allocation.
func OpenHeader(raw []byte) EventOpen {
	var e EventOpen
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&e)), openPathAt), raw)
	return e
}

// OpenPath returns the path of a raw EvOpen record that Decode accepted.
func OpenPath(raw []byte) string {
	return CString(unsafe.Slice((*int8)(unsafe.Pointer(&raw[openPathAt])), uintptr(len(raw))-openPathAt))
}

// Encode is Decode's inverse, for tests and benchmarks that replay events.
func Encode[T any](ev *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(ev)), unsafe.Sizeof(*ev))
}

// CString converts a NUL-terminated C char array to a string.
func CString(b []int8) string {
	for i, c := range b {
		if c == 0 {
			return string(unsafe.Slice((*byte)(unsafe.Pointer(&b[0])), i))
		}
	}
	if len(b) == 0 {
		return ""
	}
	return string(unsafe.Slice((*byte)(unsafe.Pointer(&b[0])), len(b)))
}

// Held is the state the kernel holds back to save events, as the events it would send for
// it; every event carries its process in its header.
type Held struct {
	// Reads are the runs not yet sent in a batch and the open runs.
	Reads []EventRead
	// Misses are the open page-cache miss runs, one per process.
	Misses []EventCacheMiss
	// Socks are the byte counts of live sockets, as samples.
	Socks []EventSock
	// Writes are the bytes written per file and process.
	Writes []EventWrite
}

// Drain returns what the kernel holds back (see Held). Call it once, when the recording
// ends.
func (p *Probes) Drain() (*Held, error) {
	h := &Held{}
	var batches []coldtraceReadBatch // one per CPU
	if err := p.coll.Maps["read_batches"].Lookup(uint32(0), &batches); err != nil {
		return h, fmt.Errorf("drain read batches: %w", err)
	}
	for _, b := range batches {
		h.Reads = append(h.Reads, b.Ev[:min(int(b.N), len(b.Ev))]...)
	}
	err := iterate(p.coll.Maps["runs"], "read runs", func(k coldtraceFdkey, r coldtraceRun) {
		if r.Count == 0 { // ended
			return
		}
		h.Reads = append(h.Reads, EventRead{H: Header{Type: EvRead, Pid: k.Pid, Tid: r.Tid, Ts: r.Last},
			Dev: r.Dev, Ino: r.Ino, Off: r.Off, Len: r.End - r.Off, First: r.First,
			Last: r.Last, Busy: r.Busy, Count: r.Count, Fd: k.Fd})
	})
	if err == nil {
		err = iterate(p.coll.Maps["misses"], "page-cache misses", func(pid uint32, m coldtraceMissRun) {
			h.Misses = append(h.Misses, EventCacheMiss{H: Header{Type: EvCacheMiss, Pid: pid, Tid: m.Tid, Ts: m.Ts},
				Dev: m.Dev, Ino: m.Ino, Index: m.Index, Pages: m.Pages, Order: m.Order})
		})
	}
	if err == nil {
		err = iterate(p.coll.Maps["socks"], "sockets", func(sk uint64, s coldtraceSockstate) {
			h.Socks = append(h.Socks, EventSock{H: Header{Type: EvSock, Pid: s.Pid, Tid: s.Tid, Ts: s.LastRecv},
				Sk: sk, Recv: s.Recv, Sent: s.Sent, FirstRecv: s.FirstRecv, LastRecv: s.LastRecv, Reason: SockSample})
		})
	}
	if err == nil {
		err = iterate(p.coll.Maps["writes"], "written bytes", func(k coldtraceWkey, w coldtraceWstate) {
			h.Writes = append(h.Writes, EventWrite{H: Header{Type: EvWrite, Pid: k.Pid}, Dev: k.Dev, Ino: k.Ino, Bytes: w.Bytes, Sk: w.Sk})
		})
	}
	return h, err
}

// Of is the part of h that belongs to the processes keep accepts.
func (h *Held) Of(keep func(pid uint32) bool) *Held {
	return &Held{Reads: of(h.Reads, keep), Misses: of(h.Misses, keep), Socks: of(h.Socks, keep), Writes: of(h.Writes, keep)}
}

// of is the events of evs, each an event type that begins with its Header, of the
// processes keep accepts.
func of[E any](evs []E, keep func(pid uint32) bool) []E {
	var out []E
	for i := range evs {
		if keep((*Header)(unsafe.Pointer(&evs[i])).Pid) {
			out = append(out, evs[i])
		}
	}
	return out
}

// iterate calls f with every entry of m; what names m's contents in the error.
func iterate[K, V any](m *ebpf.Map, what string, f func(K, V)) error {
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		f(k, v)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("drain %s: %w", what, err)
	}
	return nil
}
