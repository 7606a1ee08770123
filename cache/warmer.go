// Package cache is the cache agent: it consumes prefetch manifests (package manifest) so
// that the next cold start of a workload on this node is warm. It pre-pulls images through
// containerd (cache/prepull), stages model artifacts in a content-addressed store per tenant
// (cache/store), and brings the hot byte ranges of image layers and staged artifacts into
// the page cache (cache/pagecache), in first-access order and under rate limits.
package cache

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coldtrace/coldtrace/cache/pagecache"
	"github.com/coldtrace/coldtrace/cache/prepull"
	"github.com/coldtrace/coldtrace/cache/store"
	"github.com/coldtrace/coldtrace/containerd"
	"github.com/coldtrace/coldtrace/internal/rate"
	"github.com/coldtrace/coldtrace/manifest"
)

// Config configures the cache agent.
type Config struct {
	// Containerd is containerd's socket; Namespace the one to pull into (the kubelet's is
	// k8s.io). PlainHTTP and HostsDir tune pulls as for record --image.
	Containerd, Namespace string
	PlainHTTP             bool
	HostsDir              string
	// StoreRoot is the artifact store's directory and Quota its size limit (0: none).
	StoreRoot string
	Quota     int64
	// Verify hashes every artifact already in the store in full each time a manifest is
	// applied, to find bits rotted on the disk (store.Options.Verify); without it, a file
	// unchanged since it was last hashed is trusted from its stamp.
	Verify bool
	// OriginAllow are the addresses that artifact downloads may connect to although the
	// store refuses them by default (loopback, link-local, unspecified, multicast):
	// store.Options.AllowOrigins.
	OriginAllow []netip.Prefix
	// PullRate, StageRate and WarmRate bound bytes per second (0: no limit); Images is how
	// many images are pulled at once and WarmWorkers how many files are warmed at once.
	PullRate, StageRate, WarmRate int64
	Images, WarmWorkers           int
}

// Warmer applies manifests. Its methods may be called concurrently.
type Warmer struct {
	cfg      Config
	store    *store.Store
	puller   *prepull.Puller
	metrics  *Metrics
	progress *Progress
}

// New connects to containerd and opens the store. metrics and progress may be nil.
func New(cfg Config, metrics *Metrics, progress *Progress) (*Warmer, error) {
	puller, err := prepull.New(cfg.Containerd, cfg.Namespace, prepull.Options{
		PlainHTTP: cfg.PlainHTTP, HostsDir: cfg.HostsDir, Rate: cfg.PullRate, Images: cfg.Images,
	})
	if err != nil {
		return nil, err
	}
	st, err := store.Open(cfg.StoreRoot, store.Options{
		Quota: cfg.Quota, Limiter: yielding{rate.New(cfg.StageRate), puller}, Verify: cfg.Verify, AllowOrigins: cfg.OriginAllow,
	})
	if err != nil {
		puller.Close()
		return nil, err
	}
	return &Warmer{cfg: cfg, store: st, puller: puller, metrics: metrics, progress: progress}, nil
}

// yielding limits artifact downloads to a rate and pauses them while another client pulls
// an image: the agent's work must not slow down a container that is starting now.
type yielding struct {
	rate   *rate.Limiter
	puller *prepull.Puller
}

func (y yielding) Wait(ctx context.Context, n int) error {
	if _, err := y.puller.Yield(ctx); err != nil {
		return err
	}
	return y.rate.Wait(ctx, n)
}

// Close releases containerd's connections and the store.
func (a *Warmer) Close() error {
	return errors.Join(a.puller.Close(), a.store.Close())
}

// Apply makes the manifest's workload warm for tenant: its images pulled, its artifacts in
// the tenant's store, its hot set in the page cache, in that order. The images come
// before the artifacts although they come from different places, because both cross the
// node's one link: a container that lands on the node while the agent works (a node that
// joined just before its pod was scheduled) can start only once its image is unpacked,
// and reads its model only after it has started, so the model moves while the container
// unpacks and starts instead of slowing its pull. The hot set comes last, since it reads
// from both. Work already done is found and not done again, so Apply can be repeated to
// bring back what was evicted. The error is non-nil only when ctx ended; what failed or
// was refused is in the summary.
func (a *Warmer) Apply(ctx context.Context, tenant string, m *manifest.Manifest) (*Summary, error) {
	start := time.Now()
	s := &Summary{Manifest: m.Metadata.Name, Tenant: tenant}
	imgItems, images := a.pull(ctx, tenant, m) // containerd names of the images pulled or present
	artItems, staged := a.stage(ctx, tenant, m)
	s.Items = append(append(s.Items, imgItems...), artItems...)
	s.Items = append(s.Items, a.warm(ctx, tenant, m, images, staged)...)
	s.Took = time.Since(start)
	return s, ctx.Err()
}

// imagesOf lists the images to pre-pull: the manifest's, or else its workload's.
func imagesOf(m *manifest.Manifest) []manifest.Image {
	if len(m.Spec.Images) > 0 || m.Spec.Workload.Image == "" {
		return m.Spec.Images
	}
	return []manifest.Image{{Ref: m.Spec.Workload.Image, Digest: m.Spec.Workload.Digest}}
}

func (a *Warmer) pull(ctx context.Context, tenant string, m *manifest.Manifest) ([]Item, []string) {
	imgs := imagesOf(m)
	items := make([]Item, len(imgs))
	names := make([]string, len(imgs))
	var wg sync.WaitGroup
	for i, img := range imgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			it := Item{Action: ActionPrepull, Name: img.Ref}
			if err := prepull.CheckRef(img.Ref, img.Digest); errors.Is(err, prepull.ErrInvalid) {
				it.Result, it.Reason, it.Detail = ResultRefused, ReasonEntry, err.Error()
				items[i] = a.done(tenant, it)
				return
			}
			bar := a.progress.Start(ActionPrepull, img.Ref, img.Size)
			r, err := a.puller.Pull(ctx, img.Ref, img.Digest, bar.Set)
			switch {
			case err != nil:
				it.Result, it.Detail = ResultFailed, err.Error()
			case r.Present:
				it.Result, names[i], it.Took = ResultPresent, r.Name, r.End.Sub(r.Start)
			default:
				it.Result, names[i], it.Bytes, it.Took = ResultDone, r.Name, r.Bytes, r.End.Sub(r.Start)
				if r.Yielded > 0 {
					it.Detail = fmt.Sprintf("paused %s for the node's own pulls", r.Yielded.Round(time.Millisecond))
				}
			}
			bar.Set(it.Bytes)
			bar.Finish(result(it))
			items[i] = a.done(tenant, it)
		}()
	}
	wg.Wait()
	return items, names
}

// stage puts the artifacts in the tenant's store and returns their published files by the
// path where the workload saw them land.
func (a *Warmer) stage(ctx context.Context, tenant string, m *manifest.Manifest) ([]Item, map[string]string) {
	staged := map[string]string{}
	var items []Item
	for _, art := range m.Spec.Artifacts {
		it := Item{Action: ActionStage, Name: art.Path}
		bar := a.progress.Start(ActionStage, filepath.Base(art.Path), art.Size)
		r, err := a.store.Stage(ctx, tenant, art, func(done, _ int64) { bar.Set(done) })
		it.Bytes, it.Took = r.Fetched, r.Duration
		switch {
		case errors.Is(err, store.ErrInvalid):
			it.Result, it.Reason, it.Detail = ResultRefused, ReasonEntry, err.Error()
		case errors.Is(err, store.ErrUnsafe):
			it.Result, it.Reason, it.Detail = ResultRefused, ReasonPath, err.Error()
		case err != nil:
			it.Result, it.Detail = ResultFailed, err.Error()
		case r.Action == store.Hit:
			it.Result = ResultPresent
		default:
			it.Result = ResultDone
			switch {
			case r.Action == store.Refetched:
				it.Detail = "the cached copy was corrupt: fetched again"
				a.metrics.fallback(tenant, "corrupt")
			case r.ResumedFrom > 0:
				it.Detail = fmt.Sprintf("resumed a partial download at %d bytes", r.ResumedFrom)
			}
			if r.Restarted {
				a.metrics.fallback(tenant, "partial")
			}
		}
		if it.Result == ResultDone || it.Result == ResultPresent {
			staged[art.Path] = r.Path
		}
		bar.Finish(result(it))
		items = append(items, a.done(tenant, it))
		if ctx.Err() != nil {
			break
		}
	}
	return items, staged
}

// warm brings the hot set into the page cache. Entries of image layers are looked up in
// the pulled images' layers; entries without a layer name a file the workload downloaded,
// and are warmed from the tenant's staged copy. Any other host path is refused: the tenant
// directory of the store is the only host directory a manifest may read.
func (a *Warmer) warm(ctx context.Context, tenant string, m *manifest.Manifest, images []string, staged map[string]string) []Item {
	if len(m.Spec.HotSet) == 0 && len(staged) == 0 {
		return nil
	}
	dir, err := a.store.Dir(tenant)
	if err != nil {
		return []Item{a.done(tenant, Item{Action: ActionWarm, Name: "hot set", Result: ResultFailed, Detail: err.Error()})}
	}
	hot := make([]manifest.HotEntry, len(m.Spec.HotSet), len(m.Spec.HotSet)+len(staged))
	copy(hot, m.Spec.HotSet)
	landed := map[string]string{} // staged file -> where the workload saw it land
	next := 0
	for i, e := range hot {
		if p, ok := staged[e.Path]; ok && e.Layer == "" {
			hot[i].Path, landed[p] = p, e.Path
		}
		next = max(next, e.Order+1)
	}
	// A staged artifact that the hot set does not list (the advisor leaves downloads out
	// of it) is warmed whole, after the hot set: the workload loads it from the store, and
	// a hit in the store does not read it (it trusts the file's stamp).
	for _, art := range m.Spec.Artifacts {
		p, ok := staged[art.Path]
		if _, warmed := landed[p]; !ok || warmed {
			continue
		}
		hot = append(hot, manifest.HotEntry{Path: p, Size: art.Size, Ranges: []manifest.Range{{Off: 0, Len: art.Size}}, Order: next, Confidence: 1})
		landed[p] = art.Path
		next++
	}
	opt := pagecache.RunOptions{Workers: a.cfg.WarmWorkers, Rate: a.cfg.WarmRate, CacheRoot: dir}
	var layers *pagecache.Layers
	if !slices.ContainsFunc(hot, func(e manifest.HotEntry) bool { return e.Layer != "" }) {
		images = nil // no entry looks in an image's layers: no lease, no snapshot views
	}
	for _, name := range images {
		if name == "" {
			continue
		}
		if layers == nil {
			layers, err = pagecache.ImageLayers(ctx, a.puller.Client(), name, containerd.DefaultSnapshotter)
		} else {
			err = layers.Add(ctx, a.puller.Client(), name)
		}
		if err != nil {
			// The entries of this image's layers are skipped as unknown layers.
			a.progress.Note(fmt.Sprintf("warm: layers of %s: %v", name, err))
		}
	}
	if layers != nil {
		defer layers.Close(context.WithoutCancel(ctx))
		opt.LayerDir = layers.Dir
	}
	bar := a.progress.Start(ActionWarm, fmt.Sprintf("%d hot files", len(hot)), hotBytes(hot))
	opt.Progress = bar.Set
	rep, _ := pagecache.Run(ctx, hot, opt)
	resident := 0
	items := make([]Item, 0, len(rep.Entries))
	for _, r := range rep.Entries {
		name := r.Path
		if r.Layer != "" {
			name = strings.TrimPrefix(r.Layer, "sha256:")[:12] + ":/" + r.Path
		} else if p, ok := landed[r.Path]; ok {
			name = p + " (staged)"
		}
		it := Item{Action: ActionWarm, Name: name, Bytes: r.Bytes, Took: r.Took, Resident: r.Fraction()}
		switch {
		case r.Err == nil && r.Bytes == 0 && r.Cached > 0:
			it.Result = ResultPresent // every page was in the page cache already
			resident++
		case r.Err == nil:
			it.Result = ResultDone
		case errors.Is(r.Err, pagecache.ErrRefused):
			it.Result, it.Reason, it.Detail = ResultRefused, ReasonPath, r.Skipped
		case errors.Is(r.Err, pagecache.ErrChanged):
			it.Result, it.Reason, it.Detail = ResultRefused, ReasonChanged, r.Skipped
		default:
			it.Result, it.Detail = ResultFailed, r.Skipped
		}
		items = append(items, a.done(tenant, it))
	}
	bar.Finish(fmt.Sprintf("%d read, %d already in the page cache, %d skipped", len(rep.Entries)-rep.Skipped-resident, resident, rep.Skipped))
	if rep.Total > 0 {
		a.metrics.residentRatio(tenant, m.Metadata.Name, float64(rep.Resident)/float64(rep.Total))
	}
	return items
}

func hotBytes(hot []manifest.HotEntry) int64 {
	var n int64
	for _, e := range hot {
		n += e.Bytes()
	}
	return n
}

func (a *Warmer) done(tenant string, it Item) Item {
	a.metrics.observe(tenant, it)
	return it
}

func result(it Item) string {
	if it.Detail == "" {
		return it.Result
	}
	return it.Result + ": " + it.Detail
}
