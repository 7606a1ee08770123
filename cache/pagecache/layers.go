package pagecache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/opencontainers/image-spec/identity"
)

// Layers maps the layers of images in containerd to their directories on this node. It
// holds a read-only view of each image's snapshot chain while open, so that the layers'
// snapshots stay on disk while they are warmed; Close removes the views.
type Layers struct {
	sn     snapshots.Snapshotter
	name   string
	dirs   map[string]string // compressed layer digest -> directory
	views  []string
	leases leases.Manager
	lease  leases.Lease
}

// leaseTTL bounds how long the views outlive an agent that died before Close: the lease
// expires and containerd's garbage collector removes them.
const leaseTTL = 24 * time.Hour

// ImageLayers finds the directory of every layer of the image named ref (as containerd
// stores it: "registry/repo:tag" or "registry/repo@sha256:...") in the namespace of ctx
// (namespaces.WithNamespace; "k8s.io" for the kubelet's images), for snapshotter (only
// "overlayfs", containerd's default, keeps each layer in a directory of its own). Each
// layer's compressed digest maps to its diff id through the image config, the diff ids to
// chain ids, and the chain of the topmost layer to the lower directories of an overlay view.
func ImageLayers(ctx context.Context, c *client.Client, ref, snapshotter string) (*Layers, error) {
	l := &Layers{sn: c.SnapshotService(snapshotter), name: snapshotter, dirs: map[string]string{}, leases: c.LeasesService()}
	// Views that no lease holds are garbage: containerd collects them after any pull.
	lease, err := l.leases.Create(ctx, leases.WithRandomID(), leases.WithExpiration(leaseTTL))
	if err != nil {
		return nil, fmt.Errorf("layers of %s: lease: %w", ref, err)
	}
	l.lease = lease
	if err := l.Add(ctx, c, ref); err != nil {
		return nil, errors.Join(err, l.Close(ctx))
	}
	return l, nil
}

// Add adds the layers of another image.
func (l *Layers) Add(ctx context.Context, c *client.Client, ref string) error {
	fail := func(err error) error { return fmt.Errorf("layers of %s: %w", ref, err) }
	rec, err := c.ImageService().Get(ctx, ref)
	if err != nil {
		return fail(err)
	}
	platform := platforms.Default()
	img := client.NewImageWithPlatform(c, rec, platform)
	m, err := images.Manifest(ctx, c.ContentStore(), rec.Target, platform)
	if err != nil {
		return fail(err)
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		return fail(err)
	}
	if len(diffIDs) != len(m.Layers) || len(diffIDs) == 0 {
		return fail(fmt.Errorf("manifest has %d layers, config %d diff ids", len(m.Layers), len(diffIDs)))
	}
	if ok, err := img.IsUnpacked(ctx, l.name); err != nil || !ok {
		return fail(fmt.Errorf("not unpacked for the %s snapshotter (%v)", l.name, err))
	}
	chain := identity.ChainIDs(slices.Clone(diffIDs)) // computes in place
	var b [8]byte
	rand.Read(b[:])
	key := "coldtrace-warm-" + hex.EncodeToString(b[:])
	mounts, err := l.sn.View(leases.WithLease(ctx, l.lease.ID), key, chain[len(chain)-1].String())
	if err != nil {
		return fail(fmt.Errorf("view of its snapshot chain: %w", err))
	}
	l.views = append(l.views, key)
	if len(mounts) != 1 {
		return fail(fmt.Errorf("snapshotter %s: want one mount, got %d", l.name, len(mounts)))
	}
	// The overlayfs snapshotter mounts a view of one layer as a read-only bind of the
	// layer's directory, and of several as an overlay whose lowerdir lists them topmost first.
	var dirs []string
	switch mt := mounts[0]; mt.Type {
	case "bind":
		dirs = []string{mt.Source}
	case "overlay":
		for _, o := range mt.Options {
			if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
				dirs = strings.Split(v, ":")
			}
		}
	default:
		return fail(fmt.Errorf("snapshotter %s: mounts of type %q do not keep a directory per layer", l.name, mt.Type))
	}
	if len(dirs) != len(m.Layers) {
		return fail(fmt.Errorf("view has %d layer directories, the image %d layers", len(dirs), len(m.Layers)))
	}
	for i, desc := range m.Layers {
		l.dirs[desc.Digest.String()] = dirs[len(dirs)-1-i]
	}
	return nil
}

// Dir returns the directory that holds the layer with compressed digest layer.
func (l *Layers) Dir(layer string) (string, error) {
	d, ok := l.dirs[layer]
	if !ok {
		return "", fmt.Errorf("layer %s is in no image unpacked on this node", layer)
	}
	return d, nil
}

// Close removes the views and their lease; the directories from Dir may go away with their
// images after it.
func (l *Layers) Close(ctx context.Context) error {
	var errs []error
	for _, k := range l.views {
		if err := l.sn.Remove(ctx, k); err != nil {
			errs = append(errs, fmt.Errorf("remove view %s: %w", k, err))
		}
	}
	l.views = nil
	if err := l.leases.Delete(ctx, l.lease); err != nil && !errdefs.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete lease %s: %w", l.lease.ID, err))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
}
