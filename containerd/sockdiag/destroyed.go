package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// The sock_diag multicast groups of destroyed TCP sockets (linux/sock_diag.h).
const (
	grpTCPDestroy  = 1 // SKNLGRP_INET_TCP_DESTROY
	grpTCP6Destroy = 3 // SKNLGRP_INET6_TCP_DESTROY
)

// ErrMissed says that the kernel dropped notices because the reader fell behind.
var ErrMissed = errors.New("sock_diag: notices of destroyed sockets were dropped (receive buffer full)")

// Destroyed receives the kernel's notice of each TCP socket of the network namespace as
// it is destroyed, with its final counters: the bytes a poll of live sockets misses
// since its last poll before the close, and the sockets that lived between two polls.
// Joining the groups takes no capability (measured on 6.18: sock_diag's netlink family lets
// anyone receive); only the forced receive buffer size below needs CAP_NET_ADMIN.
type Destroyed struct {
	f   *os.File
	raw syscall.RawConn
	buf []byte
}

// WatchDestroyed joins the destroy groups of both families.
func WatchDestroyed() (*Destroyed, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	// A burst of closes must not overflow it; the forced size needs CAP_NET_ADMIN too.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	sa := &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1<<(grpTCPDestroy-1) | 1<<(grpTCP6Destroy-1)}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("joining sock_diag's destroy groups: %w", err)
	}
	f := os.NewFile(uintptr(fd), "sock_diag")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Destroyed{f: f, raw: raw, buf: make([]byte, 64<<10)}, nil
}

// Read waits for the next notices and returns their sockets. It returns ErrMissed (with
// what it read) when notices were dropped, and os.ErrClosed once Close was called.
func (d *Destroyed) Read() ([]Socket, error) {
	var n int
	var rerr error
	err := d.raw.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), d.buf, 0)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return nil, err
	}
	if errors.Is(rerr, unix.ENOBUFS) {
		return nil, ErrMissed
	}
	if rerr != nil {
		return nil, fmt.Errorf("sock_diag: %w", rerr)
	}
	return parseNotices(d.buf[:n])
}

// Close stops the notices and wakes a Read.
func (d *Destroyed) Close() error { return d.f.Close() }

// parseNotices parses a datagram of netlink messages, each an inet_diag_msg with its
// attributes; sockets without tcp_info are left out.
func parseNotices(b []byte) ([]Socket, error) {
	var out []Socket
	for len(b) >= unix.SizeofNlMsghdr {
		l := int(binary.NativeEndian.Uint32(b))
		if l < unix.SizeofNlMsghdr || l > len(b) {
			return out, fmt.Errorf("sock_diag: netlink message of %d bytes in %d", l, len(b))
		}
		if typ := binary.NativeEndian.Uint16(b[4:]); typ == unix.SOCK_DIAG_BY_FAMILY {
			s, ok, err := parseDiagMsg(b[unix.SizeofNlMsghdr:l])
			if err != nil {
				return out, err
			}
			if ok {
				out = append(out, s)
			}
		}
		b = b[min(align4(l), len(b)):]
	}
	return out, nil
}

// The layout of struct inet_diag_msg and the offsets of struct tcp_info's fields.
const (
	sizeofDiagMsg    = 72
	attrInfo         = 2 // INET_DIAG_INFO
	offLastDataRecv  = 52
	offLastAckRecv   = 56
	offBytesAcked    = 120
	offBytesReceived = 128
)

// parseDiagMsg parses one inet_diag_msg and its INET_DIAG_INFO; ok is false when it
// has none (a time-wait or request socket).
func parseDiagMsg(b []byte) (s Socket, ok bool, err error) {
	if len(b) < sizeofDiagMsg {
		return s, false, fmt.Errorf("sock_diag: inet_diag_msg of %d bytes", len(b))
	}
	family, state := b[0], b[1]
	var src, dst netip.Addr
	switch family {
	case unix.AF_INET:
		src, dst = netip.AddrFrom4([4]byte(b[8:12])), netip.AddrFrom4([4]byte(b[24:28]))
	case unix.AF_INET6:
		src, dst = netip.AddrFrom16([16]byte(b[8:24])).Unmap(), netip.AddrFrom16([16]byte(b[24:40])).Unmap()
	default:
		return s, false, fmt.Errorf("sock_diag: address family %d", family)
	}
	s = Socket{
		Cookie: uint64(binary.NativeEndian.Uint32(b[48:]))<<32 | uint64(binary.NativeEndian.Uint32(b[44:])),
		Inode:  binary.NativeEndian.Uint32(b[68:]),
		Local:  netip.AddrPortFrom(src, binary.BigEndian.Uint16(b[4:])),
		Remote: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(b[6:])),
		State:  state,
	}
	for a := b[sizeofDiagMsg:]; len(a) >= 4; {
		l, typ := int(binary.NativeEndian.Uint16(a)), binary.NativeEndian.Uint16(a[2:])
		if l < 4 || l > len(a) {
			return s, false, fmt.Errorf("sock_diag: attribute of %d bytes in %d", l, len(a))
		}
		if typ == attrInfo {
			info := a[4:l]
			if len(info) < offBytesReceived+8 {
				return s, false, fmt.Errorf("sock_diag: tcp_info of %d bytes", len(info))
			}
			s.Recv = binary.NativeEndian.Uint64(info[offBytesReceived:])
			s.Sent = binary.NativeEndian.Uint64(info[offBytesAcked:])
			s.SinceData = msDuration(binary.NativeEndian.Uint32(info[offLastDataRecv:]))
			s.SinceAck = msDuration(binary.NativeEndian.Uint32(info[offLastAckRecv:]))
			ok = true
		}
		a = a[min(align4(l), len(a)):]
	}
	return s, ok, nil
}

func align4(n int) int { return (n + 3) &^ 3 }
