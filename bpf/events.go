package bpf

import (
	"fmt"
	"unsafe"
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

// Drain returns the state that the kernel holds back to save events: read runs not yet
// sent in a batch, open read runs, open page-cache miss runs, the byte counts of live
// sockets and the bytes written per file and process, as the events the kernel would send for them. Call it once, when the recording
// ends.
func (p *Probes) Drain() ([][]byte, error) {
	var out [][]byte
	var batches []coldtraceReadBatch // one per CPU
	if err := p.coll.Maps["read_batches"].Lookup(uint32(0), &batches); err != nil {
		return out, fmt.Errorf("drain read batches: %w", err)
	}
	for _, b := range batches {
		for _, ev := range b.Ev[:min(int(b.N), len(b.Ev))] {
			out = append(out, append([]byte(nil), Encode(&ev)...))
		}
	}
	var fk coldtraceFdkey
	var r coldtraceRun
	it := p.coll.Maps["runs"].Iterate()
	for it.Next(&fk, &r) {
		if r.Count == 0 { // ended
			continue
		}
		ev := EventRead{Dev: r.Dev, Ino: r.Ino, Off: r.Off, Len: r.End - r.Off, First: r.First,
			Last: r.Last, Busy: r.Busy, Count: r.Count, Fd: fk.Fd}
		ev.H = Header{Type: EvRead, Pid: fk.Pid, Tid: r.Tid, Ts: r.Last}
		out = append(out, append([]byte(nil), Encode(&ev)...))
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("drain read runs: %w", err)
	}
	var pid uint32
	var m coldtraceMissRun
	it = p.coll.Maps["misses"].Iterate()
	for it.Next(&pid, &m) {
		ev := EventCacheMiss{Dev: m.Dev, Ino: m.Ino, Index: m.Index, Pages: m.Pages, Order: m.Order}
		ev.H = Header{Type: EvCacheMiss, Pid: pid, Tid: m.Tid, Ts: m.Ts}
		out = append(out, append([]byte(nil), Encode(&ev)...))
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("drain page-cache misses: %w", err)
	}
	var sk uint64
	var s coldtraceSockstate
	it = p.coll.Maps["socks"].Iterate()
	for it.Next(&sk, &s) {
		ev := EventSock{Sk: sk, Recv: s.Recv, Sent: s.Sent, FirstRecv: s.FirstRecv, LastRecv: s.LastRecv, Reason: SockSample}
		ev.H = Header{Type: EvSock, Pid: s.Pid, Tid: s.Tid, Ts: s.LastRecv}
		out = append(out, append([]byte(nil), Encode(&ev)...))
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("drain sockets: %w", err)
	}
	var wk coldtraceWkey
	var ws coldtraceWstate
	it = p.coll.Maps["writes"].Iterate()
	for it.Next(&wk, &ws) {
		ev := EventWrite{Dev: wk.Dev, Ino: wk.Ino, Bytes: ws.Bytes, Sk: ws.Sk}
		ev.H = Header{Type: EvWrite, Pid: wk.Pid}
		out = append(out, append([]byte(nil), Encode(&ev)...))
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("drain written bytes: %w", err)
	}
	return out, nil
}
