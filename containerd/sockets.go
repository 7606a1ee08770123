package containerd

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/coldtrace/coldtrace/containerd/sockdiag"
)

// sockGrace is how long the sockets are still sampled after the last poll that saw an
// active ingest: the samples that hold the last blob's bytes come after its commit.
const sockGrace = 3 * IngestPoll

// maxSockets bounds the sockets remembered: a busy node opens and closes many while a
// pull runs, and all but its registry's are dropped only once the pull is known.
const maxSockets = 1 << 16

// sockWatch samples the node's TCP sockets (of the agent's network namespace, the
// host's) at each ingest poll while ingests are active, and takes the final counts of
// those destroyed meanwhile from the kernel's notices: the counters of the connections
// that containerd or ctr pull over, which the probes do not see. Which of them are a
// pull's is decided later, when the pull's image, and so its registry, is known.
type sockWatch struct {
	mu        sync.Mutex
	until     time.Time // sample until then
	destroyed *sockdiag.Destroyed
	seen      map[uint64]*sockSeen
	failed    time.Time // the last failed dump, or the last time a socket was missed
	err       error
}

// sockSeen is what the samples saw of one socket.
type sockSeen struct {
	local, remote netip.AddrPort
	first, last   time.Time // the first and last dumps (or notice) that held it
	gone          time.Time // the first dump that no longer held it, or its destruction
	// samples are the cumulative counts at the socket's first sight and at each sight
	// that found them changed, each at the instant they last changed (the kernel's
	// last data or ack received), so that counts seen first were already there then.
	samples []sockSample
}

type sockSample struct {
	at         time.Time
	recv, sent int64
}

func newSockWatch() *sockWatch { return &sockWatch{seen: map[uint64]*sockSeen{}} }

// poll samples the sockets when ingests are active now or were a moment ago, listening
// to the notices of destroyed sockets for as long; it forgets the sockets gone for
// longer than keep. It says whether it sampled.
func (w *sockWatch) poll(now time.Time, active bool, keep time.Duration) bool {
	w.mu.Lock()
	if active {
		w.until = now.Add(sockGrace)
	}
	sample := now.Before(w.until)
	if sample && w.destroyed == nil {
		w.listen(now)
	}
	if !sample && w.destroyed != nil {
		w.destroyed.Close()
		w.destroyed = nil
	}
	w.mu.Unlock()
	if !sample {
		return false
	}
	socks, err := sockdiag.TCP()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.failed, w.err = now, err
		return true
	}
	live := make(map[uint64]bool, len(socks))
	for _, s := range socks {
		live[s.Cookie] = true
		if st := w.note(s, now); st != nil {
			st.gone = time.Time{}
		}
	}
	for c, st := range w.seen {
		switch {
		case live[c]:
		case st.gone.IsZero():
			st.gone = now // it keeps its last counts
		case keep > 0 && now.Sub(st.gone) > keep:
			delete(w.seen, c)
		}
	}
	return true
}

// note records a sight of socket s at now, called with w.mu held; nil when the watch is
// full.
func (w *sockWatch) note(s sockdiag.Socket, now time.Time) *sockSeen {
	sm := sockSample{recv: int64(s.Recv), sent: int64(s.Sent)}
	st := w.seen[s.Cookie]
	switch {
	case st == nil && len(w.seen) >= maxSockets:
		w.failed, w.err = now, fmt.Errorf("more than %d sockets", maxSockets)
		return nil
	case st == nil:
		sm.at = now.Add(-min(s.SinceData, s.SinceAck))
		st = &sockSeen{local: s.Local, remote: s.Remote, first: now, samples: []sockSample{sm}}
		w.seen[s.Cookie] = st
	default:
		l := st.samples[len(st.samples)-1]
		if l.recv != sm.recv || l.sent != sm.sent {
			// Received bytes are the pull's measure: they date from the last data, even
			// when the peer's FIN or an ack came later.
			sm.at = now.Add(-s.SinceAck)
			if l.recv != sm.recv {
				sm.at = now.Add(-s.SinceData)
			}
			sm.at = later(sm.at, l.at.Add(time.Nanosecond)) // the kernel's clocks are in ms
			st.samples = append(st.samples, sm)
		}
	}
	st.last = now
	return st
}

// listen starts taking the notices of destroyed sockets, called with w.mu held. Without
// them, the bytes a socket received after its last sample are lost.
func (w *sockWatch) listen(now time.Time) {
	d, err := sockdiag.WatchDestroyed()
	if err != nil {
		w.failed, w.err = now, err
		return
	}
	w.destroyed = d
	go func() {
		for {
			socks, err := d.Read()
			if errors.Is(err, os.ErrClosed) {
				return
			}
			now := time.Now()
			w.mu.Lock()
			if err != nil {
				w.failed, w.err = now, err
			}
			for _, s := range socks {
				if st := w.note(s, now); st != nil && st.gone.IsZero() {
					st.gone = now
				}
			}
			w.mu.Unlock()
		}
	}()
}

// close stops the notices.
func (w *sockWatch) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.destroyed != nil {
		w.destroyed.Close()
		w.destroyed = nil
	}
}

// countAt is the socket's counts at t as far as the samples tell: those of the last
// sample at or before t, zero before the first.
func (st *sockSeen) countAt(t time.Time) sockSample {
	i, _ := slices.BinarySearchFunc(st.samples, t, func(s sockSample, t time.Time) int {
		if s.at.After(t) {
			return 1
		}
		return -1
	})
	if i == 0 {
		return sockSample{}
	}
	return st.samples[i-1]
}

// conns are the sockets to one of addrs that carried bytes during the download
// [from, to], with the bytes of that window: from the socket's counts before from (zero
// for one whose first counts came later: it opened for this download), to its counts at
// the last sample by to plus two polls, which holds the last bytes. Each connection goes
// whole to every download whose window it overlaps.
func (w *sockWatch) conns(addrs map[netip.AddrPort]bool, from, to time.Time) []RegistryConn {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []RegistryConn
	for _, st := range w.seen {
		if !addrs[st.remote] || st.last.Before(from) || st.first.After(to.Add(sockGrace)) {
			continue
		}
		base := st.countAt(from.Add(-time.Nanosecond))
		end := st.countAt(to.Add(2 * IngestPoll))
		if end.recv-base.recv <= 1 && end.sent-base.sent <= 1 {
			continue // idle through the download, but for a FIN each way
		}
		c := RegistryConn{
			Local: st.local.String(), Remote: st.remote.String(), Open: st.first,
			Recv: end.recv - base.recv, Sent: end.sent - base.sent,
		}
		if !st.gone.IsZero() {
			c.Close = st.last
		}
		prev := base.recv
		for _, sm := range st.samples {
			if sm.at.Before(from) || sm.at.After(end.at) || sm.recv == prev {
				continue // before the window, after it, or a change of the sent bytes only
			}
			prev = sm.recv
			// A sample sees bytes up to a poll after they came; those of the download
			// came by its end, its last blob's commit.
			at := sm.at
			if at.After(to) {
				at = to
			}
			if c.FirstRecv.IsZero() {
				c.FirstRecv = at
			}
			c.LastRecv = at
			c.Samples = append(c.Samples, ConnSample{At: at, Recv: sm.recv - base.recv})
		}
		// It opened by its first receive; one kept alive from an earlier download opens,
		// for this one, at its start.
		if !c.FirstRecv.IsZero() && c.FirstRecv.Before(c.Open) {
			c.Open = c.FirstRecv
		}
		c.Open = later(c.Open, from)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b RegistryConn) int { return a.Open.Compare(b.Open) })
	return out
}
