package containerd

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/containerd/v2/pkg/labels"
	"github.com/containerd/containerd/v2/pkg/rootfs"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/coldtrace/coldtrace/trace"
)

// PullOptions tune Pull.
type PullOptions struct {
	// PlainHTTP talks HTTP to the registry instead of HTTPS.
	PlainHTTP bool
	// HostsDir is a registry hosts directory (like /etc/containerd/certs.d) with mirrors
	// and TLS settings; empty for none.
	HostsDir string
	// Fresh removes the image first and lets containerd collect its content and snapshots,
	// as on a node that never had it (content shared with other images stays).
	Fresh bool
	// Progress, when set, is called as blob bytes arrive, from several goroutines at once.
	Progress func(digest string, received, size int64)
}

// LayerPull is one layer's download and unpack.
type LayerPull struct {
	Index  int
	Digest string // compressed, as in the manifest
	DiffID string // uncompressed, as in the image config
	Size   int64
	// Bytes counts the bytes received for the layer; zero when it was already present.
	Bytes int64
	// Start is the request for the blob; Fetched the commit of the blob in the content store.
	Start, Fetched time.Time
	// UnpackStart and UnpackEnd bound the layer's apply to its snapshot.
	UnpackStart, UnpackEnd time.Time
}

// Pulled is an image that Pull fetched and unpacked, or as far as a failed pull got.
type Pulled struct {
	Ref      string
	Registry string // the registry host of Ref
	Digest   string // the manifest digest
	// Start is the pull request; End the end of the unpack (or of the failed attempt).
	Start, End time.Time
	// Bytes counts all bytes received: manifests, config and layers.
	Bytes  int64
	Layers []LayerPull
	// Others are the blobs other pulls on the node downloaded while this one downloaded
	// (contention for the link and the registry).
	Others []Ingest
	// Conns are the pull's connections to the registry (and its mirrors or redirects).
	Conns []RegistryConn
	// fetchEnd is the last blob's commit, for RecentPull's.
	fetchEnd time.Time
}

// sinceZero is t as a trace time, since zero; a zero t (a moment that did not happen)
// stays 0.
func sinceZero(zero, t time.Time) trace.Duration {
	if t.IsZero() {
		return 0
	}
	return t.Sub(zero)
}

// Trace converts the pull for a trace whose time zero is zero.
func (p *Pulled) Trace(zero time.Time) *trace.Pull {
	since := func(t time.Time) trace.Duration { return sinceZero(zero, t) }
	tp := &trace.Pull{Ref: p.Ref, Registry: p.Registry, Start: since(p.Start), End: since(p.End)}
	for _, l := range p.Layers {
		tp.Layers = append(tp.Layers, trace.Layer{
			Index: l.Index, Digest: l.Digest, DiffID: l.DiffID, Size: l.Size, Bytes: l.Bytes,
			Fetched: since(l.Fetched), UnpackStart: since(l.UnpackStart), UnpackEnd: since(l.UnpackEnd),
		})
	}
	// One overlap per other pull: its image where known, else its namespace.
	byPull := map[[2]string]*trace.PullOverlap{}
	for _, in := range p.Others {
		key := [2]string{in.Namespace, in.Image}
		o := byPull[key]
		if o == nil {
			tp.Overlaps = append(tp.Overlaps, trace.PullOverlap{Ref: in.Image, Namespace: in.Namespace})
			o = &tp.Overlaps[len(tp.Overlaps)-1]
			byPull[key] = o
		}
		o.Blobs = append(o.Blobs, in.Digest)
		o.Bytes += in.Bytes
		o.Intervals = trace.Union(append(o.Intervals, trace.Interval{Start: since(in.Start), End: since(in.End)}))
	}
	for _, o := range tp.Overlaps {
		name := o.Ref
		if name == "" {
			name = fmt.Sprintf("%d blobs of an unknown image (namespace %s)", len(o.Blobs), o.Namespace)
		}
		tp.Contended = append(tp.Contended, name)
	}
	return tp
}

// blobStat is what the counting fetcher saw of one blob.
type blobStat struct {
	bytes          int64
	start, fetched time.Time
}

// Pull fetches ref into containerd's content store and unpacks it into the default
// snapshotter layer by layer, timing each layer's download and unpack. Layers are fetched
// in this process and streamed to containerd, as ctr and nerdctl do. While it downloads,
// it watches containerd's content ingests for other pulls (Pulled.Others).
//
// A pull that fails after its request returns what it got so far with the error: the
// layers it knows, the bytes received, and the other pulls.
func (c *Client) Pull(ctx context.Context, ref string, opts PullOptions) (*Pulled, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	p := &Pulled{Ref: named.String(), Registry: reference.Domain(named)}
	fail := func(err error) (*Pulled, error) {
		if p.Start.IsZero() {
			p = nil
		} else {
			p.End = time.Now()
		}
		return p, fmt.Errorf("pull %s from %s: %w", named, reference.Domain(named), err)
	}
	if opts.Fresh {
		err := c.c.ImageService().Delete(ctx, p.Ref, images.SynchronousDelete())
		if err != nil && !errdefs.IsNotFound(err) {
			return fail(fmt.Errorf("remove the old image: %w", err))
		}
	}
	ctx, done, err := c.c.WithLease(ctx)
	if err != nil {
		return fail(err)
	}
	defer done(context.WithoutCancel(ctx))

	conns := &connLog{}
	defer func() {
		if p != nil {
			p.Conns = conns.snapshot()
		}
	}()
	hosts := config.HostOptions{UpdateClient: conns.wrap}
	if opts.PlainHTTP {
		hosts.DefaultScheme = "http"
	}
	if opts.HostsDir != "" {
		hosts.HostDir = config.HostDirFromRoot(opts.HostsDir)
	}
	f := &countingResolver{
		Resolver: docker.NewResolver(docker.ResolverOptions{Hosts: config.ConfigureHosts(ctx, hosts)}),
		progress: opts.Progress,
		blobs:    map[digest.Digest]*blobStat{},
	}

	watch := c.watchIngests(ctx)
	p.Start = time.Now()
	img, err := c.c.Fetch(ctx, p.Ref, client.WithResolver(f), client.WithPlatformMatcher(c.platform))
	// Other pulls overlap ours while ours downloads: until its last blob's commit, not the
	// return of Fetch, which runs its handlers after that (long on a busy machine).
	fetched := f.lastCommit()
	if err != nil || fetched.IsZero() {
		fetched = time.Now()
	}
	var watchErr error
	p.Others, watchErr = watch.stop(f.fetched, p.Start, fetched)
	if err != nil {
		c.partialLayers(ctx, p, f)
		if errdefs.IsNotFound(err) {
			return fail(fmt.Errorf("image not found in the registry: %w", err))
		}
		return fail(err)
	}
	if watchErr != nil {
		return fail(fmt.Errorf("watch the other pulls: %w", watchErr))
	}
	p.Digest = img.Target.Digest.String()

	manifest, diffIDs, err := c.imageLayers(ctx, img)
	if err != nil {
		return fail(err)
	}
	p.Layers = f.layers(manifest, diffIDs)
	p.Bytes = f.total()

	if err := c.unpack(ctx, img, manifest, p.Layers); err != nil {
		return fail(err)
	}
	p.End = time.Now()
	return p, nil
}

// partialLayers fills a failed fetch's layers from the manifest, when it arrived, and its
// bytes.
func (c *Client) partialLayers(ctx context.Context, p *Pulled, f *countingResolver) {
	p.Bytes = f.total()
	ctx = context.WithoutCancel(ctx)
	f.mu.Lock()
	target := f.target
	f.mu.Unlock()
	if target.Digest == "" {
		return
	}
	p.Digest = target.Digest.String()
	manifest, err := images.Manifest(ctx, c.c.ContentStore(), target, c.platform)
	if err != nil {
		return
	}
	p.Layers = f.layers(manifest, nil)
}

// unpack applies the layers one by one, as the client's Image.Unpack does, so that each
// layer's apply can be timed.
// imageLayers reads an image's manifest for the client's platform and its layers' diff
// ids, one for each layer of the manifest.
func (c *Client) imageLayers(ctx context.Context, img images.Image) (ocispec.Manifest, []digest.Digest, error) {
	cs := c.c.ContentStore()
	manifest, err := images.Manifest(ctx, cs, img.Target, c.platform)
	if err != nil {
		return manifest, nil, err
	}
	diffIDs, err := img.RootFS(ctx, cs, c.platform)
	if err != nil {
		return manifest, nil, err
	}
	if len(diffIDs) != len(manifest.Layers) {
		return manifest, nil, fmt.Errorf("manifest has %d layers, config %d diff ids", len(manifest.Layers), len(diffIDs))
	}
	return manifest, diffIDs, nil
}

func (c *Client) unpack(ctx context.Context, img images.Image, manifest ocispec.Manifest, layers []LayerPull) error {
	sn := c.c.SnapshotService(DefaultSnapshotter)
	cs := c.c.ContentStore()
	var chain []digest.Digest
	for i, l := range manifest.Layers {
		diffID := digest.Digest(layers[i].DiffID)
		layer := rootfs.Layer{Blob: l, Diff: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: diffID}}
		layers[i].UnpackStart = time.Now()
		applied, err := rootfs.ApplyLayerWithOpts(ctx, layer, chain, sn, c.c.DiffService(), nil, nil)
		layers[i].UnpackEnd = time.Now()
		if err != nil {
			return fmt.Errorf("unpack layer %d (%s): %w", i, l.Digest, err)
		}
		if applied {
			// Record the verified uncompressed digest, as containerd's own unpack does.
			info := content.Info{Digest: l.Digest, Labels: map[string]string{labels.LabelUncompressed: diffID.String()}}
			if _, err := cs.Update(ctx, info, "labels."+labels.LabelUncompressed); err != nil {
				return err
			}
		}
		chain = append(chain, diffID)
	}
	// The garbage collector keeps the snapshots of an image through this label on its config.
	cfg, err := img.Config(ctx, cs, c.platform)
	if err != nil {
		return err
	}
	label := "containerd.io/gc.ref.snapshot." + DefaultSnapshotter
	info := content.Info{Digest: cfg.Digest, Labels: map[string]string{label: identity.ChainID(chain).String()}}
	_, err = cs.Update(ctx, info, "labels."+label)
	return err
}

// countingResolver wraps a resolver so that every blob fetched is counted and timed.
type countingResolver struct {
	remotes.Resolver
	progress func(digest string, received, size int64)

	mu     sync.Mutex
	blobs  map[digest.Digest]*blobStat
	target ocispec.Descriptor // the resolved image
}

// Resolve notes the image's descriptor, for the manifest of a pull that fails later.
func (r *countingResolver) Resolve(ctx context.Context, ref string) (string, ocispec.Descriptor, error) {
	name, desc, err := r.Resolver.Resolve(ctx, ref)
	if err == nil {
		r.mu.Lock()
		r.target = desc
		r.mu.Unlock()
	}
	return name, desc, err
}

// fetched says whether this pull requested the blob.
func (r *countingResolver) fetched(d digest.Digest) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.blobs[d] != nil
}

// lastCommit is the latest commit of a blob this pull downloaded; zero when none was.
func (r *countingResolver) lastCommit() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	var last time.Time
	for _, b := range r.blobs {
		if b.fetched.After(last) {
			last = b.fetched
		}
	}
	return last
}

// total is the bytes received for all blobs.
func (r *countingResolver) total() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for _, b := range r.blobs {
		n += b.bytes
	}
	return n
}

// layers are the manifest's layers with what was received of each; diffIDs, when not
// nil, are the config's.
func (r *countingResolver) layers(manifest ocispec.Manifest, diffIDs []digest.Digest) []LayerPull {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []LayerPull
	for i, l := range manifest.Layers {
		lp := LayerPull{Index: i, Digest: l.Digest.String(), Size: l.Size}
		if i < len(diffIDs) {
			lp.DiffID = diffIDs[i].String()
		}
		if b := r.blobs[l.Digest]; b != nil {
			lp.Bytes, lp.Start, lp.Fetched = b.bytes, b.start, b.fetched
		}
		out = append(out, lp)
	}
	return out
}

func (r *countingResolver) Fetcher(ctx context.Context, ref string) (remotes.Fetcher, error) {
	f, err := r.Resolver.Fetcher(ctx, ref)
	if err != nil {
		return nil, err
	}
	return remotes.FetcherFunc(func(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
		r.mu.Lock()
		st := &blobStat{start: time.Now()}
		r.blobs[desc.Digest] = st
		r.mu.Unlock()
		rc, err := f.Fetch(ctx, desc)
		if err != nil {
			return nil, fmt.Errorf("fetch %s: %w", desc.Digest, err)
		}
		return &countingReader{rc: rc, r: r, st: st, desc: desc}, nil
	}), nil
}

// countingReader counts a blob's bytes; containerd closes it after committing the blob.
type countingReader struct {
	rc   io.ReadCloser
	r    *countingResolver
	st   *blobStat
	desc ocispec.Descriptor
}

func (cr *countingReader) Read(b []byte) (int, error) {
	n, err := cr.rc.Read(b)
	cr.r.mu.Lock()
	cr.st.bytes += int64(n)
	got := cr.st.bytes
	cr.r.mu.Unlock()
	if n > 0 && cr.r.progress != nil {
		cr.r.progress(cr.desc.Digest.String(), got, cr.desc.Size)
	}
	// Only a bare io.EOF is the end of the blob; a failed reconnect wraps io.EOF too.
	if err != nil && err != io.EOF {
		err = fmt.Errorf("blob %s: received %d of %d bytes: %w", cr.desc.Digest, got, cr.desc.Size, err)
	}
	return n, err
}

func (cr *countingReader) Close() error {
	cr.r.mu.Lock()
	if cr.st.bytes == cr.desc.Size {
		cr.st.fetched = time.Now()
	}
	cr.r.mu.Unlock()
	return cr.rc.Close()
}
