package containerd

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// IngestLog watches containerd's content ingests in every namespace for as long as it
// runs: what a watcher of the node knows of the pulls that containerd makes itself (CRI)
// or that its clients make (ctr pull, nerdctl), which it does not see otherwise. While
// ingests are active it also samples the TCP sockets of its network namespace, for the
// pulls' registry connections.
type IngestLog struct {
	w        *ingestWatch
	hostsDir string
	unwatch  func() // stops the ingest directory's watch
}

// LogIngests starts polling the node's ingests every IngestPoll until Close, while any is
// active or containerd's ingest directory is out of sight (see watchIngestDir); an ingest
// (and a socket) is remembered for keep after it ended. hostsDir is containerd's
// registry hosts directory, whose hosts.toml name the mirrors a pull may connect to; ""
// for none.
func (c *Client) LogIngests(ctx context.Context, keep time.Duration, hostsDir string) *IngestLog {
	wake, unwatch := c.watchIngestDir(ctx)
	return &IngestLog{w: c.startIngestWatch(ctx, keep, newSockWatch(), wake), hostsDir: hostsDir, unwatch: unwatch}
}

// Close stops the polls.
func (l *IngestLog) Close() {
	l.w.cancel()
	<-l.w.done
	l.unwatch()
	l.w.socks.close()
}

// blob is what the log saw of the download of one blob into namespace ns.
type blobSeen struct {
	start    time.Time
	complete bool // seen from its first byte
}

// blob returns the earliest download of d into ns that the log saw.
func (l *IngestLog) blob(ns string, d digest.Digest) (blobSeen, bool) {
	l.w.mu.Lock()
	defer l.w.mu.Unlock()
	var b blobSeen
	found := false
	for _, s := range l.w.seen {
		if s.ns != ns || s.st.Expected != d {
			continue
		}
		if start := s.started(); !found || start.Before(b.start) {
			b, found = blobSeen{start: start, complete: s.fromZero}, true
		}
	}
	return b, found
}

// RecentPull rebuilds the pull of image ref in the client's namespace when its content
// arrived within window before the instant before (a container's create) while the log
// ran: nil when none of its blobs did. The content store tells when each blob was committed (Fetched) and
// how big it is; the log adds when its download began. A blob committed between two
// polls counts from its commit: all its bytes, received at an instant. The unpack of a
// layer ends at the commit of its snapshot; it starts at the end of the previous layer's
// unpack or at the layer's commit, whichever is later, the earliest it can have begun.
// Others are the blobs other pulls downloaded meanwhile. Warnings say what the log
// could not see.
func (c *Client) RecentPull(ctx context.Context, log *IngestLog, ref string, before time.Time, window time.Duration) (*Pulled, []string, error) {
	img, err := c.c.ImageService().Get(ctx, ref)
	if err != nil {
		return nil, nil, fmt.Errorf("image %s: %w", ref, err)
	}
	manifest, diffIDs, err := c.imageLayers(ctx, img)
	if err != nil {
		return nil, nil, fmt.Errorf("image %s: %w", ref, err)
	}
	cs := c.c.ContentStore()

	p := &Pulled{Ref: img.Name, Digest: img.Target.Digest.String()}
	if named, err := reference.ParseNormalizedNamed(img.Name); err == nil {
		p.Registry = reference.Domain(named)
	}
	var warnings []string
	log.w.mu.Lock()
	logStart := log.w.start
	log.w.mu.Unlock()
	ours := map[digest.Digest]bool{}
	// fetched tells whether the blob arrived within the window, while the log ran: its
	// bytes, the start of its download and its commit.
	fetched := func(desc ocispec.Descriptor) (bytes int64, start, commit time.Time, ok bool) {
		ours[desc.Digest] = true
		info, err := cs.Info(ctx, desc.Digest)
		if err != nil || info.CreatedAt.Before(before.Add(-window)) || info.CreatedAt.After(before) {
			return 0, time.Time{}, time.Time{}, false
		}
		if info.CreatedAt.Before(logStart) {
			warnings = append(warnings, fmt.Sprintf("blob %s arrived before the agent watched: it is not in the pull", desc.Digest))
			return 0, time.Time{}, time.Time{}, false
		}
		start = info.CreatedAt
		if b, seen := log.blob(c.namespace, desc.Digest); seen {
			start = b.start
			if !b.complete {
				warnings = append(warnings, fmt.Sprintf("blob %s was downloading when the agent began to watch: its download started before %s", desc.Digest, start.Format(time.RFC3339Nano)))
			}
		}
		return info.Size, start, info.CreatedAt, true
	}
	var end time.Time
	note := func(bytes int64, start, commit time.Time) {
		p.Bytes += bytes
		if p.Start.IsZero() || start.Before(p.Start) {
			p.Start = start
		}
		if commit.After(end) {
			end = commit
		}
	}
	for _, desc := range []ocispec.Descriptor{img.Target, manifest.Config} {
		if bytes, start, commit, ok := fetched(desc); ok {
			note(bytes, start, commit)
		}
	}
	if images.IsIndexType(img.Target.MediaType) {
		// The index's manifests that the pull fetched: those in the store.
		subs, err := images.Children(ctx, cs, img.Target)
		if err != nil {
			return nil, nil, fmt.Errorf("image %s: %w", ref, err)
		}
		for _, desc := range subs {
			if bytes, start, commit, ok := fetched(desc); ok {
				note(bytes, start, commit)
			}
		}
	}
	for i, l := range manifest.Layers {
		lp := LayerPull{Index: i, Digest: l.Digest.String(), DiffID: diffIDs[i].String(), Size: l.Size}
		if bytes, start, commit, ok := fetched(l); ok {
			lp.Bytes, lp.Start, lp.Fetched = bytes, start, commit
			note(bytes, start, commit)
		}
		p.Layers = append(p.Layers, lp)
	}
	if p.Start.IsZero() {
		return nil, nil, nil // nothing of the image arrived within the window while the log ran
	}
	fetchEnd := end

	sn := c.c.SnapshotService(DefaultSnapshotter)
	var prev time.Time
	for i, chain := range identity.ChainIDs(diffIDs) {
		info, err := sn.Stat(ctx, chain.String())
		if err != nil || info.Created.Before(p.Start) || info.Created.After(before) {
			continue // unpacked before this pull, or not by it
		}
		l := &p.Layers[i]
		l.UnpackStart, l.UnpackEnd = later(prev, l.Fetched), info.Created
		prev = info.Created
		if prev.After(end) {
			end = prev
		}
	}
	p.End = end

	log.w.mu.Lock()
	p.Others = log.w.others(func(d digest.Digest) bool { return ours[d] }, p.Start, fetchEnd)
	failed := log.w.failed
	log.w.mu.Unlock()
	if !failed.Before(p.Start.Add(-IngestPoll)) && !failed.After(end) {
		warnings = append(warnings, "containerd's ingests could not be listed during the pull: download starts and other pulls may be missing")
	}
	p.fetchEnd = fetchEnd
	return p, warnings, nil
}

// RegistryConns gives a pull that RecentPull found the sockets to its registry's
// addresses that carried bytes while it downloaded, and says what they may miss or hold
// besides. It resolves the registry's names: call it off the path of containerd's events.
func (l *IngestLog) RegistryConns(ctx context.Context, p *Pulled) []string {
	var warnings []string
	fetchEnd := p.fetchEnd
	addrs, err := registryAddrs(ctx, p.Registry, l.hostsDir)
	if err != nil {
		warnings = append(warnings, "resolving the registry's addresses: "+err.Error())
	}
	s := l.w.socks
	p.Conns = s.conns(addrs, p.Start, fetchEnd)
	s.mu.Lock()
	failed, sockErr := s.failed, s.err
	s.mu.Unlock()
	if !failed.Before(p.Start) && !failed.After(fetchEnd.Add(sockGrace)) {
		warnings = append(warnings, "the sockets could not be sampled during the pull ("+sockErr.Error()+"): registry connections may be missing")
	}
	var recv int64
	for _, c := range p.Conns {
		recv += c.Recv
	}
	if recv < p.Bytes {
		warnings = append(warnings, fmt.Sprintf("the registry connections seen received %d bytes, less than the pull's %d: "+
			"connections that opened and closed between two samples, or to other hosts (a blob redirect), are missing", recv, p.Bytes))
	}
	if len(p.Conns) > 0 && len(p.Others) > 0 {
		warnings = append(warnings, fmt.Sprintf("%d other downloads overlapped the pull: a registry connection is given whole to each pull it served, so one to the same registry may carry their bytes too", len(p.Others)))
	}
	return warnings
}

// later is the later of two instants.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
