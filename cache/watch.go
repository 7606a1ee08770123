package cache

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/coldtrace/coldtrace/manifest"
)

// WatchOptions say where the agent finds manifests and how often it looks.
type WatchOptions struct {
	// Dir holds manifests (see ReadDir); URLs are fetched (see Fetch). Either may be empty.
	Dir  string
	URLs []string
	// Poll is how often the sources are read for changes (default 10 s); a changed or new
	// manifest is applied at once.
	Poll time.Duration
	// Every is how often every manifest is applied again even if unchanged (default 5 min),
	// which brings back what was evicted since: images removed by the kubelet's garbage
	// collection, artifacts evicted from the store, pages dropped from the page cache.
	Every  time.Duration
	Limits manifest.Limits
	Client *http.Client
	Log    io.Writer
}

// ApplyFunc applies one manifest for a tenant.
type ApplyFunc func(ctx context.Context, tenant string, m *manifest.Manifest) (*Summary, error)

// Watch applies the manifests of the sources at start (a node that just joined), whenever
// one changes, and again every opt.Every, until ctx ends. A manifest that cannot be read
// or is refused is logged and counted under refusals; the others are applied.
func Watch(ctx context.Context, opt WatchOptions, apply ApplyFunc, m *Metrics) error {
	if opt.Dir == "" && len(opt.URLs) == 0 {
		return fmt.Errorf("cache: no manifest directory or URL to watch")
	}
	if opt.Poll <= 0 {
		opt.Poll = 10 * time.Second
	}
	if opt.Every <= 0 {
		opt.Every = 5 * time.Minute
	}
	if opt.Log == nil {
		opt.Log = io.Discard
	}
	type seen struct {
		sum          [sha256.Size]byte
		applied      time.Time
		tenant, name string // of the manifest last applied from the source
	}
	state := map[string]seen{}
	for {
		found := read(ctx, opt)
		// Forget the manifests that are gone, so that one put back is applied at once.
		current := make(map[string]bool, len(found))
		for _, f := range found {
			current[f.Source] = true
		}
		for src, s := range state {
			if !current[src] {
				delete(state, src)
				m.forget(s.tenant, s.name)
			}
		}
		for _, f := range found {
			s, known := state[f.Source]
			due := !known || s.sum != f.Sum || time.Since(s.applied) >= opt.Every
			if !due {
				continue
			}
			if known && s.sum != f.Sum {
				m.forget(s.tenant, s.name) // the manifest changed: its name or tenant may have
			}
			state[f.Source] = seen{sum: f.Sum, applied: time.Now()}
			if f.Err != nil {
				fmt.Fprintf(opt.Log, "cache: %v\n", f.Err)
				m.refused(f.Tenant, ReasonManifest)
				continue
			}
			tenant, err := Tenant(f.Tenant, f.Manifest)
			if err != nil {
				fmt.Fprintf(opt.Log, "cache: %s: %v\n", f.Source, err)
				m.refused(f.Tenant, ReasonTenant)
				continue
			}
			state[f.Source] = seen{sum: f.Sum, applied: time.Now(), tenant: tenant, name: f.Manifest.Metadata.Name}
			sum, err := apply(ctx, tenant, f.Manifest)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				fmt.Fprintf(opt.Log, "cache: %s: %v\n", f.Source, err)
				continue
			}
			fmt.Fprintf(opt.Log, "cache: %s (tenant %s): %s\n", f.Source, tenant, sum.Line())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(opt.Poll):
		}
	}
}

func read(ctx context.Context, opt WatchOptions) []Found {
	var out []Found
	if opt.Dir != "" {
		fs, err := ReadDir(opt.Dir, opt.Limits)
		if err != nil {
			fmt.Fprintf(opt.Log, "cache: %v\n", err)
		}
		out = append(out, fs...)
	}
	for _, u := range opt.URLs {
		out = append(out, Fetch(ctx, opt.Client, u, opt.Limits))
	}
	return out
}
