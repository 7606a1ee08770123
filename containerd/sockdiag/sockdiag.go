// Package sockdiag reads the byte counters of the TCP sockets of the current network
// namespace from the kernel's socket diagnostics (NETLINK_SOCK_DIAG, inet_diag with
// INET_DIAG_INFO): what a process sees of other processes' connections without BPF.
package sockdiag

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Socket is one TCP socket's identity and counters at the dump.
type Socket struct {
	// Cookie is the kernel's socket cookie: unique while the kernel runs, unlike
	// addresses (reused) and inodes (zero once the socket is orphaned).
	Cookie        uint64
	Inode         uint32
	Local, Remote netip.AddrPort
	State         uint8
	// Recv is tcpi_bytes_received, Sent tcpi_bytes_acked: payload bytes since the
	// connection opened (and one for the peer's FIN), retransmissions not counted twice.
	Recv, Sent uint64
	// SinceData and SinceAck are how long ago the last data and the last ack arrived (the
	// kernel's millisecond clocks): when Recv and Sent last changed, but for the peer's
	// FIN, which counts in Recv without being data.
	SinceData, SinceAck time.Duration
}

// tcpListen is TCP_LISTEN in the kernel's state numbering.
const tcpListen = 10

// TCP dumps the TCP sockets of both families that carry counters: every state but
// listen, time-wait and the half-open requests (which have no tcp_info).
func TCP() ([]Socket, error) {
	var out []Socket
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		resps, err := netlink.SocketDiagTCPInfo(family)
		// An interrupted dump (sockets came or went meanwhile) still holds every socket
		// that lived through it: good enough for counters sampled again next time.
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, fmt.Errorf("inet_diag dump: %w", err)
		}
		for _, r := range resps {
			m := r.InetDiagMsg
			if r.TCPInfo == nil || m == nil || m.State == tcpListen {
				continue
			}
			out = append(out, Socket{
				Cookie:    uint64(m.ID.Cookie[1])<<32 | uint64(m.ID.Cookie[0]),
				Inode:     m.INode,
				Local:     addrPort(m.ID.Source, m.ID.SourcePort),
				Remote:    addrPort(m.ID.Destination, m.ID.DestinationPort),
				State:     m.State,
				Recv:      r.TCPInfo.Bytes_received,
				Sent:      r.TCPInfo.Bytes_acked,
				SinceData: msDuration(r.TCPInfo.Last_data_recv),
				SinceAck:  msDuration(r.TCPInfo.Last_ack_recv),
			})
		}
	}
	return out, nil
}

// addrPort converts an inet_diag address; IPv4-mapped IPv6 addresses become IPv4.
func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}

func msDuration(ms uint32) time.Duration { return time.Duration(ms) * time.Millisecond }
