package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// The store's downloads run in a privileged agent on every node, from URLs that a manifest
// names: an origin must not be able to freeze the agent, nor a manifest make it fetch from
// the node itself or the cloud's metadata service.
const (
	dialTimeout   = 30 * time.Second
	headerTimeout = 60 * time.Second
	// DefaultIdleTimeout is how long a download may receive nothing before it is aborted.
	DefaultIdleTimeout = 60 * time.Second
	maxRedirects       = 5
)

// newClient returns the store's HTTP client: bounded dials, TLS handshakes and waits for
// headers, no proxy (the address policy must see the real destination), and the address
// policy applied to every connection, those of redirects included.
func newClient(allow []netip.Prefix) *http.Client {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second, Control: addressPolicy(allow)}
	return &http.Client{
		Transport: &http.Transport{
			DialContext:           d.DialContext,
			TLSHandshakeTimeout:   dialTimeout,
			ResponseHeaderTimeout: headerTimeout,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          16,
			IdleConnTimeout:       90 * time.Second,
		},
		CheckRedirect: checkRedirect,
	}
}

// addressPolicy refuses, at connect time (after name resolution, so a DNS name or a
// redirect cannot get around it), the addresses that reach the node itself or its
// cloud's metadata service: loopback, link-local (169.254.0.0/16 holds 169.254.169.254;
// fe80::/10), unspecified and multicast, unless allow holds them.
func addressPolicy(allow []netip.Prefix) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("%w: origin address %q is not an IP address and port", ErrInvalid, address)
		}
		ip := ap.Addr().Unmap()
		for _, p := range allow {
			if p.Contains(ip) {
				return nil
			}
		}
		var kind string
		switch {
		case ip.IsLoopback():
			kind = "loopback"
		case ip.IsLinkLocalUnicast():
			kind = "link-local (where cloud metadata services are)"
		case ip.IsUnspecified():
			kind = "unspecified"
		case ip.IsMulticast():
			kind = "multicast"
		default:
			return nil
		}
		return fmt.Errorf("%w: origin address %s is %s: refused (an operator allows it with --origin-allow CIDR)", ErrInvalid, ip, kind)
	}
}

// checkRedirect follows at most maxRedirects redirects and never from https to http.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return fmt.Errorf("%w: more than %d redirects", ErrInvalid, maxRedirects)
	}
	for _, v := range via {
		if v.URL.Scheme == "https" && req.URL.Scheme != "https" {
			return fmt.Errorf("%w: redirect from https to %s://%s refused", ErrInvalid, req.URL.Scheme, req.URL.Host)
		}
	}
	return nil
}

// errStalled: the origin sent no body bytes for the idle timeout.
var errStalled = errors.New("the origin sent nothing")

// idleReader reads a response body whose request was made with a context that cancel
// cancels: a Read that waits longer than idle for a byte cancels it with errStalled.
// Time spent outside Read (the rate limiter, a pause for an image pull, the disk) does
// not count.
type idleReader struct {
	r     io.Reader
	idle  time.Duration
	timer *time.Timer
}

func newIdleReader(r io.Reader, idle time.Duration, cancel context.CancelCauseFunc) *idleReader {
	t := time.AfterFunc(idle, func() { cancel(fmt.Errorf("%w for %v", errStalled, idle)) })
	t.Stop()
	return &idleReader{r: r, idle: idle, timer: t}
}

func (ir *idleReader) Read(p []byte) (int, error) {
	ir.timer.Reset(ir.idle)
	n, err := ir.r.Read(p)
	ir.timer.Stop()
	return n, err
}
