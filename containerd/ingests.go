package containerd

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// IngestPoll is how often a pull looks at containerd's active content ingests for other
// pulls: often enough to bound each one's start and end, rarely enough to cost nothing.
const IngestPoll = 100 * time.Millisecond

// IngestIdlePoll is how often the node's ingest log (LogIngests) polls while no ingest is
// active and it watches containerd's ingest directory, which wakes it as an ingest begins:
// a safety net for a directory that is not the one containerd writes.
const IngestIdlePoll = 5 * time.Second

// Ingest is a blob that another pull downloaded into containerd's content store while
// this pull was downloading: one active content ingest that was not this pull's.
type Ingest struct {
	Namespace string
	Digest    string // the blob's digest; empty when the ingest does not tell
	// Image is the reference of an image that holds the blob, in Namespace, once
	// containerd has one (see NameIngests); empty when unknown.
	Image string
	// Start and End bound the download within this pull's download; Bytes is what it
	// received between them.
	Start, End time.Time
	Bytes      int64
}

// ingestSeen is what the polls saw of one ingest.
type ingestSeen struct {
	ns          string
	st          content.Status
	first       time.Time // our first poll that saw it
	firstOffset int64
	fromZero    bool      // it started after our first poll: every byte counts
	gone        time.Time // the poll that no longer saw it
	lastOffset  int64
	committed   bool
}

// started is when the ingest's download began: its start where it began after our first
// poll, else our first sight of it.
func (s *ingestSeen) started() time.Time {
	if s.fromZero {
		return s.st.StartedAt
	}
	return s.first
}

// ingestWatch polls the active ingests of every namespace while a pull downloads.
type ingestWatch struct {
	c      *Client
	cancel context.CancelFunc
	done   chan struct{}

	// keep, when not zero, is how long an ingest is remembered after it ended.
	keep time.Duration
	// socks, when not nil, samples the node's TCP sockets while ingests are active.
	socks *sockWatch

	mu     sync.Mutex
	start  time.Time // the first poll
	seen   map[string]*ingestSeen
	err    error
	failed time.Time // the last failed poll
}

// watchIngests starts polling until stop.
func (c *Client) watchIngests(ctx context.Context) *ingestWatch {
	return c.startIngestWatch(context.WithoutCancel(ctx), 0, nil, nil)
}

// startIngestWatch polls until ctx ends or the watch is stopped; keep and socks are the
// watch's fields, wake is run's.
func (c *Client) startIngestWatch(ctx context.Context, keep time.Duration, socks *sockWatch, wake <-chan struct{}) *ingestWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &ingestWatch{c: c, cancel: cancel, done: make(chan struct{}), seen: map[string]*ingestSeen{}, keep: keep, socks: socks}
	w.run(ctx, wake)
	return w
}

// run polls now and then every IngestPoll until ctx ends; with a wake channel, only while
// ingests are active (and the sockets are still sampled after them), and otherwise when
// wake says an ingest began, or every IngestIdlePoll.
func (w *ingestWatch) run(ctx context.Context, wake <-chan struct{}) {
	busy := w.sample(ctx)
	go func() {
		defer close(w.done)
		tick := time.NewTicker(IngestPoll)
		defer tick.Stop()
		idle := time.NewTicker(IngestIdlePoll)
		defer idle.Stop()
		for {
			t, i, wk := tick.C, idle.C, wake
			if busy || wake == nil {
				i, wk = nil, nil
			} else {
				t = nil
			}
			select {
			case <-ctx.Done():
				return
			case <-t:
			case <-i:
			case <-wk:
			}
			busy = w.sample(ctx)
		}
	}()
}

// sample polls the ingests, then the sockets, and says whether either is still active.
func (w *ingestWatch) sample(ctx context.Context) bool {
	active := w.poll(ctx)
	if w.socks != nil && ctx.Err() == nil {
		return w.socks.poll(time.Now(), active > 0, w.keep)
	}
	return active > 0
}

// poll records the ingests active now and those that ended since the last poll, and
// returns how many are active.
func (w *ingestWatch) poll(ctx context.Context) int {
	now := time.Now()
	nss, err := w.c.c.NamespaceService().List(ctx)
	if ctx.Err() != nil {
		return 0 // stopped in the middle of a poll: stop polls once more itself
	}
	if err != nil {
		w.fail(err)
		return 0
	}
	cs := w.c.c.ContentStore()
	active := map[string]bool{}
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		sts, err := cs.ListStatuses(nctx)
		if ctx.Err() != nil {
			return 0
		}
		if err != nil {
			w.fail(err)
			continue
		}
		w.mu.Lock()
		for _, st := range sts {
			key := ns + "/" + st.Ref
			active[key] = true
			s := w.seen[key]
			if s == nil {
				s = &ingestSeen{ns: ns, first: now, firstOffset: st.Offset}
				s.fromZero = !w.start.IsZero() && st.StartedAt.After(w.start)
				w.seen[key] = s
			}
			st.Expected = ingestDigest(st)
			s.st, s.lastOffset, s.gone = st, st.Offset, time.Time{}
		}
		w.mu.Unlock()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.start.IsZero() {
		w.start = now
	}
	for key, s := range w.seen {
		if w.keep > 0 && !s.gone.IsZero() && now.Sub(s.gone) > w.keep {
			delete(w.seen, key)
			continue
		}
		if active[key] || !s.gone.IsZero() || s.committed {
			continue
		}
		s.gone = now
		// Gone: committed when the blob is now in the store, else aborted.
		if s.st.Expected != "" {
			info, err := cs.Info(namespaces.WithNamespace(ctx, s.ns), s.st.Expected)
			if err == nil {
				s.committed, s.lastOffset = true, info.Size
			}
		}
	}
	return len(active)
}

// ingestDigest is the blob an ingest writes: the expected digest where the daemon reports
// it (containerd 1.6 does not), else the digest in the ref key that the client's fetch
// gives every ingest ("layer-sha256:...", remotes.MakeRefKey).
func ingestDigest(st content.Status) digest.Digest {
	if st.Expected != "" {
		return st.Expected
	}
	if _, d, ok := strings.Cut(st.Ref, "-"); ok {
		if d, err := digest.Parse(d); err == nil {
			return d
		}
	}
	return ""
}

func (w *ingestWatch) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
	w.failed = time.Now()
}

// stop polls a last time and returns the ingests that are not ours (in the client's
// namespace, a digest ours says it fetched), clipped to
// [from, to], the window of this pull's download. The error is the first failed poll:
// the ingests may then be incomplete.
func (w *ingestWatch) stop(ours func(digest.Digest) bool, from, to time.Time) ([]Ingest, error) {
	w.cancel()
	<-w.done
	w.poll(context.Background())
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.others(ours, from, to), w.err
}

// others are the ingests that are not ours, clipped to [from, to]; called with w.mu held.
func (w *ingestWatch) others(ours func(digest.Digest) bool, from, to time.Time) []Ingest {
	var out []Ingest
	for _, s := range w.seen {
		if s.ns == w.c.namespace && ours(s.st.Expected) {
			continue
		}
		// Its download ran from its start to its last write or the poll that found it gone.
		start, end := s.started(), s.st.UpdatedAt
		if !s.gone.IsZero() && s.gone.After(end) {
			end = s.gone
		}
		if from.After(start) {
			start = from
		}
		if to.Before(end) {
			end = to
		}
		if !end.After(start) {
			continue
		}
		base := s.firstOffset
		if s.fromZero {
			base = 0
		}
		out = append(out, Ingest{
			Namespace: s.ns, Digest: s.st.Expected.String(),
			Start: start, End: end, Bytes: max(0, s.lastOffset-base),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// NameIngests sets the Image of each ingest whose blob an image of its namespace other
// than own (the recording's, in the client's namespace) holds (a blob two images share is
// the other's). Call it late (at the end of a
// recording): the other pull creates its image only once all its blobs are in. A blob of
// a pull still running is named by digest instead, "host/repo@sha256:...", from the labels
// that pull put on its manifests (which give the registry's host without its port).
func (c *Client) NameIngests(ctx context.Context, ingests []Ingest, own string) {
	type names struct{ images, pulling map[string]string } // digest -> reference
	byNS := map[string]*names{}
	for i, in := range ingests {
		ctx := namespaces.WithNamespace(ctx, in.Namespace)
		skip := ""
		if in.Namespace == c.namespace {
			skip = own
		}
		n, ok := byNS[in.Namespace]
		if !ok {
			n = &names{images: c.blobOwners(ctx, skip)}
			byNS[in.Namespace] = n
		}
		ingests[i].Image = n.images[in.Digest]
		if ingests[i].Image == "" && in.Digest != "" {
			if n.pulling == nil {
				n.pulling = c.pulling(ctx, skip)
			}
			ingests[i].Image = n.pulling[in.Digest]
		}
	}
}

// Labels a pull puts on the blobs it fetches (containerd's images and remotes/docker
// packages): a manifest or index names its children's digests before they are fetched,
// and every blob the repositories it came from, per registry host.
const (
	childLabel    = "containerd.io/gc.ref.content."
	referrerLabel = "containerd.io/gc.ref.content.referrer."
	sourceLabel   = "containerd.io/distribution.source."
)

// pulling maps each manifest in ctx's content store, and each blob one lists, to a name
// by digest of its top manifest (an index, or the manifest itself): "host/repo@sha256:...".
// The digest pins the image; the host is the label's, without the registry's port. The
// image own is left out. Labels only: no blob is read.
func (c *Client) pulling(ctx context.Context, own string) map[string]string {
	var skip string
	if img, err := c.c.ImageService().Get(ctx, own); err == nil {
		skip = img.Target.Digest.String()
	}
	parents := map[string][]string{} // child digest -> the manifests and indexes that list it
	source := map[string]string{}    // digest -> host/repo
	c.c.ContentStore().Walk(ctx, func(info content.Info) error {
		for k, v := range info.Labels {
			switch {
			case strings.HasPrefix(k, referrerLabel):
			case strings.HasPrefix(k, childLabel):
				parents[v] = append(parents[v], info.Digest.String())
			case strings.HasPrefix(k, sourceLabel):
				// The first repository of the first host, whatever the labels' order.
				repo, _, _ := strings.Cut(v, ",")
				src, d := strings.TrimPrefix(k, sourceLabel)+"/"+repo, info.Digest.String()
				if cur, ok := source[d]; !ok || src < cur {
					source[d] = src
				}
			}
		}
		return nil
	}) // what it could walk is named; the rest stays unknown
	manifests := map[string]bool{} // the digests that list others
	for _, ps := range parents {
		for _, p := range ps {
			manifests[p] = true
		}
	}
	names := map[string]string{}
	// up climbs from d to the top manifests above blob: a layer's manifest, that
	// manifest's index; bounded, as labels could loop.
	var up func(blob, d string, depth int)
	up = func(blob, d string, depth int) {
		if ps := parents[d]; len(ps) > 0 && depth < 3 {
			for _, p := range ps {
				up(blob, p, depth+1)
			}
			return
		}
		if src, ok := source[d]; ok && d != skip && (d != blob || manifests[d]) && names[blob] == "" {
			names[blob] = src + "@" + d
		}
	}
	for blob := range parents {
		up(blob, blob, 0)
	}
	for m := range manifests {
		up(m, m, 0)
	}
	return names
}

// blobOwners maps every blob of every image of ctx's namespace but skip to the image, as
// far as the content store holds the image's manifests.
func (c *Client) blobOwners(ctx context.Context, skip string) map[string]string {
	owners := map[string]string{}
	imgs, err := c.c.ImageService().List(ctx)
	if err != nil {
		return owners
	}
	cs := c.c.ContentStore()
	for _, img := range imgs {
		if img.Name == skip {
			continue
		}
		children := images.ChildrenHandler(cs)
		walk := images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
			if _, ok := owners[desc.Digest.String()]; !ok {
				owners[desc.Digest.String()] = img.Name
			}
			subs, err := children(ctx, desc)
			if errdefs.IsNotFound(err) {
				return nil, nil // an index's manifests for other platforms
			}
			return subs, err
		})
		images.Walk(ctx, walk, img.Target) // what it could walk is named; the rest stays unknown
	}
	return owners
}
