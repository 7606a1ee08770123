package containerd

import (
	"context"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/coldtrace/coldtrace/trace"
)

// RegistryConn is one connection of this process to a registry during a pull: the pull
// runs in this process (as ctr's does), so its connections are counted here, at the
// socket, rather than by the probes.
type RegistryConn struct {
	// PID owns the connection: this process for a pull of its own, 0 when unknown (a
	// connection of containerd or ctr, seen by the agent's socket samples).
	PID                 int
	Local, Remote       string
	Open, Close         time.Time // Close is zero while it is open
	Recv, Sent          int64     // bytes, TLS and HTTP framing included
	FirstRecv, LastRecv time.Time
	// Samples are the cumulative bytes received: for a pull of this process one per
	// sampleEvery window with reads, at the window's last read; for the agent's socket
	// samples one per ingest poll that found the count changed.
	Samples []ConnSample
}

// ConnSample is a connection's cumulative bytes received at an instant.
type ConnSample struct {
	At   time.Time
	Recv int64
}

// sampleEvery is the spacing of a connection's byte samples: fine enough to split a pull's
// bytes between the intervals another pull overlapped it, coarse enough to stay small.
const sampleEvery = 10 * time.Millisecond

// connLog counts the bytes of every connection the pull's HTTP clients dial.
type connLog struct {
	mu    sync.Mutex
	conns []*countedConn
}

// wrap makes the client's transport dial through the log; the resolver calls it for each
// registry host's client.
func (l *connLog) wrap(hc *http.Client) error {
	tr, ok := hc.Transport.(*http.Transport)
	if !ok {
		return nil
	}
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cc := &countedConn{Conn: c, log: l}
		cc.st.PID = os.Getpid()
		cc.st.Local, cc.st.Remote, cc.st.Open = c.LocalAddr().String(), c.RemoteAddr().String(), time.Now()
		l.mu.Lock()
		l.conns = append(l.conns, cc)
		l.mu.Unlock()
		return cc, nil
	}
	return nil
}

// snapshot returns the connections as they are now.
func (l *connLog) snapshot() []RegistryConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]RegistryConn, len(l.conns))
	for i, c := range l.conns {
		out[i] = c.st
		out[i].Samples = slices.Clone(c.st.Samples)
	}
	return out
}

type countedConn struct {
	net.Conn
	log    *connLog
	st     RegistryConn // guarded by log.mu, as window is
	window time.Time    // when the last sample's window opened
}

func (c *countedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		now := time.Now()
		c.log.mu.Lock()
		c.st.Recv += int64(n)
		if c.st.FirstRecv.IsZero() {
			c.st.FirstRecv = now
		}
		c.st.LastRecv = now
		if k := len(c.st.Samples); k == 0 || now.Sub(c.window) >= sampleEvery {
			c.st.Samples = append(c.st.Samples, ConnSample{At: now, Recv: c.st.Recv})
			c.window = now
		} else {
			// The window's sample moves to its latest read, so that the last sample is
			// the connection's last receive.
			c.st.Samples[k-1] = ConnSample{At: now, Recv: c.st.Recv}
		}
		c.log.mu.Unlock()
	}
	return n, err
}

func (c *countedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.log.mu.Lock()
	c.st.Sent += int64(n)
	c.log.mu.Unlock()
	return n, err
}

func (c *countedConn) Close() error {
	c.log.mu.Lock()
	if c.st.Close.IsZero() {
		c.st.Close = time.Now()
	}
	c.log.mu.Unlock()
	return c.Conn.Close()
}

// TraceConns are the pull's registry connections as trace connections, with times since
// zero.
func (p *Pulled) TraceConns(zero time.Time) []trace.Conn {
	since := func(t time.Time) trace.Duration { return sinceZero(zero, t) }
	out := make([]trace.Conn, 0, len(p.Conns))
	for _, c := range p.Conns {
		tc := trace.Conn{
			PID: c.PID, Local: c.Local, Remote: c.Remote, Dir: "connect", Role: "registry",
			Open: since(c.Open), Close: since(c.Close), BytesRecv: c.Recv, BytesSent: c.Sent,
			FirstRecv: since(c.FirstRecv), LastRecv: since(c.LastRecv),
		}
		for _, sm := range c.Samples {
			tc.Samples = append(tc.Samples, trace.Sample{At: since(sm.At), Recv: sm.Recv})
		}
		out = append(out, tc)
	}
	return out
}
