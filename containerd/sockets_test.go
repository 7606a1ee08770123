package containerd

import (
	"net/netip"
	"testing"
	"time"
)

// TestSockWatchConns splits sockets' samples by a download's window: a connection kept
// alive from an earlier download gives only what it received within the window, one
// idle through it is left out, one opened for it gives all its bytes, and one to
// another address is not the registry's.
func TestSockWatchConns(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	reg := netip.MustParseAddrPort("10.0.0.1:443")
	w := newSockWatch()
	add := func(cookie uint64, remote netip.AddrPort, first, last int, samples ...sockSample) {
		w.seen[cookie] = &sockSeen{local: netip.MustParseAddrPort("10.0.0.2:40000"), remote: remote, first: at(first), last: at(last), samples: samples}
	}
	add(1, reg, 0, 2000, sockSample{at(0), 100, 10}, sockSample{at(500), 5000, 20}, sockSample{at(1200), 7000, 30}, sockSample{at(1600), 9000, 40})
	add(2, reg, 0, 2000, sockSample{at(400), 800, 10})
	add(3, reg, 1100, 1400, sockSample{at(1050), 300, 5}, sockSample{at(1300), 4000, 9})
	add(4, netip.MustParseAddrPort("10.0.0.9:443"), 1100, 1400, sockSample{at(1300), 4000, 9})
	got := w.conns(map[netip.AddrPort]bool{reg: true}, at(1000), at(1250))
	if len(got) != 2 {
		t.Fatalf("%d connections, want 2: %+v", len(got), got)
	}
	// The window's last sample is the one by its end plus two polls: 1200 for the first.
	if c := got[0]; c.Recv != 2000 || c.Sent != 10 || !c.Open.Equal(at(1000)) || !c.LastRecv.Equal(at(1200)) || len(c.Samples) != 1 {
		t.Errorf("kept-alive connection %+v: want 2000 bytes received in the window, opening at its start", c)
	}
	if c := got[1]; c.Recv != 4000 || !c.Open.Equal(at(1050)) || !c.FirstRecv.Equal(at(1050)) || len(c.Samples) != 2 {
		t.Errorf("new connection %+v: want all its 4000 bytes, open at its first receive", c)
	}
	// Its bytes seen at 1300 came by the download's end.
	if c := got[1]; !c.LastRecv.Equal(at(1250)) {
		t.Errorf("new connection's last receive %v, want the download's end %v", c.LastRecv, at(1250))
	}
}
