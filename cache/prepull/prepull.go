// Package prepull pulls images into containerd before a container needs them, as the
// cache agent's first action: by digest, into the namespace the kubelet uses, unpacked for
// its snapshotter, under a concurrency and a bandwidth limit, and always second to a pull
// that a live container waits for: while containerd ingests content for another client
// (the kubelet through CRI, ctr, nerdctl), the agent stops reading from the registry, so
// that removing the first bottleneck does not create a second one through contention.
package prepull

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/coldtrace/coldtrace/containerd"
	"github.com/coldtrace/coldtrace/internal/rate"
)

// Options tune a Puller. Zero fields take their defaults.
type Options struct {
	// Snapshotter is the snapshotter to unpack for: the kubelet's (containerd's default,
	// containerd.DefaultSnapshotter, "overlayfs").
	Snapshotter string
	// PlainHTTP talks HTTP to registries instead of HTTPS; HostsDir is a registry hosts
	// directory (like /etc/containerd/certs.d) with mirrors and TLS settings.
	PlainHTTP bool
	HostsDir  string
	// Images is how many images are pulled at once (default 1); Downloads how many
	// blobs of one image (default 3).
	Images, Downloads int
	// Rate bounds the bytes per second of all pulls together; 0 does not limit.
	Rate int64
	// Poll is how often containerd's active ingests are listed to find foreign pulls
	// (default 150 ms): the longest the agent keeps reading after one starts.
	Poll time.Duration
	// RecvBuffer is the socket receive buffer of registry connections (default 256 KiB).
	// It is kept small so that when the agent pauses, the registry stops sending within
	// a buffer's worth, instead of the megabytes a self-tuned buffer grows to.
	RecvBuffer int
}

func (o Options) withDefaults() Options {
	if o.Snapshotter == "" {
		o.Snapshotter = containerd.DefaultSnapshotter
	}
	if o.Images <= 0 {
		o.Images = 1
	}
	if o.Downloads <= 0 {
		o.Downloads = 3
	}
	if o.Poll <= 0 {
		o.Poll = 150 * time.Millisecond
	}
	if o.RecvBuffer <= 0 {
		o.RecvBuffer = 256 << 10
	}
	return o
}

// Puller pre-pulls images into one containerd namespace.
type Puller struct {
	c     *client.Client
	opt   Options
	limit *rate.Limiter
	slots chan struct{}
	y     *yielder
}

// New connects to the containerd socket at address and pulls into namespace ("k8s.io"
// for the kubelet's images).
func New(address, namespace string, opt Options) (*Puller, error) {
	c, err := containerd.Dial(address, namespace)
	if err != nil {
		return nil, err
	}
	opt = opt.withDefaults()
	return &Puller{
		c:     c,
		opt:   opt,
		limit: rate.New(opt.Rate),
		slots: make(chan struct{}, opt.Images),
		y:     newYielder(c, namespace, opt.Poll),
	}, nil
}

// Close closes the connection.
func (p *Puller) Close() error { return p.c.Close() }

// Client is the puller's containerd connection, in its namespace, for other work on the
// images it pulls (finding their layers' snapshots).
func (p *Puller) Client() *client.Client { return p.c }

// Result is one image's pre-pull.
type Result struct {
	// Name is the image's name in containerd: "registry/repo@sha256:...", or the name of
	// the record found when the image was present (a tag, where the kubelet or ctr pulled it).
	Name   string
	Digest string
	// Present says the image was already there, unpacked: nothing was fetched.
	Present bool
	// Bytes counts the blob bytes received from the registry.
	Bytes int64
	// Start and End bound the pull (after waiting for a slot); Yielded is the time the
	// pull spent paused for foreign pulls.
	Start, End time.Time
	Yielded    time.Duration
}

// Pull pre-pulls the image ref ("registry/repo:tag@sha256:..." or "registry/repo@sha256:...")
// at digest (which may be empty when ref has one; they must agree when both are set). An
// image already there with that digest and unpacked is left alone, without a request to
// the registry. Otherwise it is fetched (under the limits) and unpacked, and stored as
// "registry/repo@sha256:...". A reference that CheckRef refuses is an error wrapping
// ErrInvalid.
func (p *Puller) Pull(ctx context.Context, ref, dgst string, progress func(received int64)) (*Result, error) {
	name, err := canonical(ref, dgst)
	if err != nil {
		return nil, err
	}
	r := &Result{Name: name.String(), Digest: name.Digest().String()}
	fail := func(err error) (*Result, error) {
		return r, fmt.Errorf("pre-pull %s: %w", r.Name, err)
	}
	select {
	case p.slots <- struct{}{}:
		defer func() { <-p.slots }()
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	r.Start = time.Now()
	defer func() { r.End = time.Now() }()

	present, err := p.present(ctx, r.Digest)
	if err != nil {
		return fail(err)
	}
	if present != "" {
		r.Present, r.Name = true, present
		return r, nil
	}

	hosts := config.HostOptions{UpdateClient: p.smallBuffers}
	if p.opt.PlainHTTP {
		hosts.DefaultScheme = "http"
	}
	if p.opt.HostsDir != "" {
		hosts.HostDir = config.HostDirFromRoot(p.opt.HostsDir)
	}
	res := &resolver{
		Resolver: docker.NewResolver(docker.ResolverOptions{Hosts: config.ConfigureHosts(ctx, hosts)}),
		limit:    p.limit,
		y:        p.y,
		progress: progress,
	}
	_, err = p.c.Pull(ctx, r.Name,
		client.WithResolver(res),
		client.WithPlatformMatcher(platforms.Default()),
		client.WithPullUnpack,
		client.WithPullSnapshotter(p.opt.Snapshotter),
		client.WithMaxConcurrentDownloads(p.opt.Downloads))
	r.Bytes, r.Yielded = res.stats()
	if err != nil {
		if errdefs.IsNotFound(err) {
			return fail(fmt.Errorf("not in the registry: %w", err))
		}
		return fail(err)
	}
	return r, nil
}

// ErrInvalid says that an image cannot be pulled as given: its reference does not parse, or
// names no sha256 digest, or one that is not the digest given beside it.
var ErrInvalid = errors.New("invalid image reference")

// CheckRef says whether Pull accepts ref at dgst, without pulling: an error wrapping
// ErrInvalid when it does not.
func CheckRef(ref, dgst string) error {
	_, err := canonical(ref, dgst)
	return err
}

// canonical is ref pinned to its digest, without its tag.
func canonical(ref, dgst string) (reference.Canonical, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return nil, fmt.Errorf("pre-pull %s: %w: %w", ref, ErrInvalid, err)
	}
	if c, ok := named.(reference.Canonical); ok {
		if dgst != "" && c.Digest().String() != dgst {
			return nil, fmt.Errorf("pre-pull %s: %w: the reference's digest is not %s", ref, ErrInvalid, dgst)
		}
		dgst = c.Digest().String()
	}
	if dgst == "" {
		return nil, fmt.Errorf("pre-pull %s: %w: no digest: the agent pulls by digest only, so that it pulls the image that was traced", ref, ErrInvalid)
	}
	d, err := digest.Parse(dgst)
	if err != nil {
		return nil, fmt.Errorf("pre-pull %s: %w: digest %q: %w", ref, ErrInvalid, dgst, err)
	}
	if d.Algorithm() != digest.SHA256 {
		return nil, fmt.Errorf("pre-pull %s: %w: digest %s is not sha256: the agent pulls by sha256 digest only", ref, ErrInvalid, d)
	}
	c, err := reference.WithDigest(reference.TrimNamed(named), d)
	if err != nil {
		return nil, fmt.Errorf("pre-pull %s: %w: %w", ref, ErrInvalid, err)
	}
	return c, nil
}

// present returns the name of an image record with the manifest digest dgst that is
// unpacked for the snapshotter, or "" where there is none.
func (p *Puller) present(ctx context.Context, dgst string) (string, error) {
	imgs, err := p.c.ImageService().List(ctx, "target.digest=="+dgst)
	if err != nil {
		return "", err
	}
	for _, rec := range imgs {
		ok, err := client.NewImageWithPlatform(p.c, rec, platforms.Default()).IsUnpacked(ctx, p.opt.Snapshotter)
		if err == nil && ok {
			return rec.Name, nil
		}
	}
	return "", nil
}

// smallBuffers sets the receive buffer of the registry connections (see Options.RecvBuffer).
func (p *Puller) smallBuffers(c *http.Client) error {
	tr, ok := c.Transport.(*http.Transport)
	if !ok {
		return errors.New("registry client has no *http.Transport")
	}
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, p.opt.RecvBuffer)
		})
		return errors.Join(err, serr)
	}}
	tr.DialContext = d.DialContext
	return nil
}

// Yield waits while another client pulls through containerd (the kubelet for a starting
// pod, most often), and says how long it waited: the agent's other downloads call it, so
// that they too leave the link to a live pull.
func (p *Puller) Yield(ctx context.Context) (time.Duration, error) {
	return p.y.wait(ctx, func() {})
}
