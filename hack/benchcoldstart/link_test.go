package benchcoldstart

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// link is the node's one link: a network namespace holding the registry and the model
// origin, joined to the host by a veth pair whose namespace end is shaped by a token
// bucket (tc tbf), so everything the node downloads shares one rate.
type link struct {
	ns, peer     string
	hostIP, nsIP string
}

// newLink makes the namespace and the pair, named and numbered after this process so that
// concurrent benchmarks and tests do not collide, shaped to bytesPerSec.
func newLink(t testing.TB, bytesPerSec int64) *link {
	t.Helper()
	id := os.Getpid() % 100000
	l := &link{
		ns: fmt.Sprintf("ctbench%d", id), peer: fmt.Sprintf("ctbn%d", id),
		hostIP: fmt.Sprintf("10.213.%d.1", id%250), nsIP: fmt.Sprintf("10.213.%d.2", id%250),
	}
	host := fmt.Sprintf("ctbh%d", id)
	sh(t, "ip", "netns", "add", l.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.ns).Run() })
	sh(t, "ip", "link", "add", host, "type", "veth", "peer", "name", l.peer)
	t.Cleanup(func() { exec.Command("ip", "link", "del", host).Run() })
	sh(t, "ip", "link", "set", l.peer, "netns", l.ns)
	sh(t, "ip", "addr", "add", l.hostIP+"/30", "dev", host)
	sh(t, "ip", "link", "set", host, "up")
	in := func(args ...string) { sh(t, append([]string{"ip", "netns", "exec", l.ns}, args...)...) }
	in("ip", "addr", "add", l.nsIP+"/30", "dev", l.peer)
	in("ip", "link", "set", l.peer, "up")
	in("ip", "link", "set", "lo", "up")
	// A bucket of 20 ms of traffic (at least 256 KiB): enough for the segments veth
	// passes whole (64 KiB with GSO) at any rate, small enough that bursts stay short.
	burst := max(bytesPerSec/50, 256<<10)
	in("tc", "qdisc", "add", "dev", l.peer, "root", "tbf", "rate", fmt.Sprintf("%dbit", bytesPerSec*8),
		"burst", strconv.FormatInt(burst, 10), "latency", "200ms")
	return l
}

// listen opens a TCP listener on the namespace's address. A listening socket belongs to
// the namespace it was made in, so the servers run in this process on any thread; only
// the thread that makes it enters the namespace, and never leaves it: a goroutine locked
// to its thread at exit takes the thread with it.
func (l *link) listen(t testing.TB) net.Listener {
	t.Helper()
	type res struct {
		ln  net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + l.ns)
		if err != nil {
			ch <- res{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{nil, fmt.Errorf("setns %s: %w", l.ns, err)}
			return
		}
		ln, err := net.Listen("tcp", l.nsIP+":0")
		ch <- res{ln, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.ln
}

var sentRE = regexp.MustCompile(`Sent (\d+) bytes`)

// sent is the bytes the shaped end has sent to the node so far, as tc counts them.
func (l *link) sent(t testing.TB) int64 {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", l.ns, "tc", "-s", "qdisc", "show", "dev", l.peer).Output()
	m := sentRE.FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("tc -s qdisc show: %v\n%s", err, out)
	}
	n, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return n
}

func sh(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
}
