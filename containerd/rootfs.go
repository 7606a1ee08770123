package containerd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"

	"github.com/containerd/containerd/v2/client"
	"github.com/opencontainers/image-spec/identity"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/trace"
)

// Where a file comes from, for trace.LayerRef.Where.
const (
	WhereImage  = "image"
	WhereRW     = "rw"
	WhereVolume = "volume"
)

// Rootfs is a container's root file system: an overlay of the image's layers under the
// container's writable layer, with mounts (volumes, /proc, /dev) on top.
type Rootfs struct {
	Upper string
	// Lowers are the image layers' directories, topmost first as in the overlay's
	// lowerdir option, each with the layer it holds.
	Lowers []Lower
	// Mounts are the container's other mounts, from its runtime spec.
	Mounts []specs.Mount
	// opaque is the overlay xattr that marks an opaque directory.
	opaque string
}

// Lower is one image layer's directory in the overlay.
type Lower struct {
	Dir   string
	Layer trace.LayerRef
}

// rootfs reads the container's overlay mount from its snapshotter and ties each lower
// directory to its image layer through the snapshot chain: the parent of the container's
// snapshot is the committed snapshot named by the chain id of all the image's layers, its
// parent that of all but the last, and so on down to the base layer.
func (c *Client) rootfs(ctx context.Context, ctr client.Container) (*Rootfs, error) {
	info, err := ctr.Info(ctx)
	if err != nil {
		return nil, err
	}
	sn := c.c.SnapshotService(info.Snapshotter)
	mounts, err := sn.Mounts(ctx, info.SnapshotKey)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", info.SnapshotKey, err)
	}
	if len(mounts) != 1 || mounts[0].Type != "overlay" {
		return nil, fmt.Errorf("snapshot %s: want one overlay mount, got %v", info.SnapshotKey, mounts)
	}
	r := &Rootfs{opaque: "trusted.overlay.opaque"}
	var lowers []string
	for _, o := range mounts[0].Options {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "upperdir":
			r.Upper = v
		case "lowerdir":
			lowers = strings.Split(v, ":")
		case "userxattr":
			r.opaque = "user.overlay.opaque"
		}
	}

	img, err := c.c.ImageService().Get(ctx, info.Image)
	if err != nil {
		return nil, err
	}
	manifest, diffIDs, err := c.imageLayers(ctx, img)
	if err != nil {
		return nil, err
	}
	chain := identity.ChainIDs(slices.Clone(diffIDs)) // computes in place
	if len(lowers) != len(chain) {
		return nil, fmt.Errorf("overlay has %d lower dirs, image %s has %d layers", len(lowers), info.Image, len(chain))
	}
	parent := info.SnapshotKey
	for i, dir := range lowers {
		st, err := sn.Stat(ctx, parent)
		if err != nil {
			return nil, err
		}
		parent = st.Parent
		layer := len(chain) - 1 - i
		if parent != chain[layer].String() {
			return nil, fmt.Errorf("lower dir %d is snapshot %s, want layer %d's chain id %s", i, parent, layer, chain[layer])
		}
		r.Lowers = append(r.Lowers, Lower{Dir: dir, Layer: trace.LayerRef{
			Index:  layer,
			DiffID: diffIDs[layer].String(),
			Digest: manifest.Layers[layer].Digest.String(),
			Where:  WhereImage,
		}})
	}

	spec, err := ctr.Spec(ctx)
	if err != nil {
		return nil, err
	}
	r.Mounts = spec.Mounts
	// The deepest mount wins: look longer destinations up first.
	sort.SliceStable(r.Mounts, func(i, j int) bool { return len(r.Mounts[i].Destination) > len(r.Mounts[j].Destination) })
	return r, nil
}

// ErrNotInRootfs says that a path is in no layer: absent, or deleted by an upper layer.
var ErrNotInRootfs = errors.New("not in the container's file system")

// LayerOf tells where a path inside the container comes from, and the path on the host
// that holds it. Mounts come first (Where "volume"; the host path is empty for mounts that
// are not bind mounts, like /proc), then the writable layer ("rw"), then the topmost image
// layer that has the file ("image"); an overlay whiteout or opaque directory in a layer hides
// the layers below it. Index is -1 outside the image's layers. Symbolic links in the path
// are not followed: pass paths as the kernel resolved them.
func (r *Rootfs) LayerOf(p string) (trace.LayerRef, string, error) {
	p = path.Clean("/" + p)
	for _, m := range r.Mounts {
		if p != m.Destination && !strings.HasPrefix(p, m.Destination+"/") {
			continue
		}
		real := ""
		if m.Type == "bind" || hasOption(m.Options, "bind", "rbind") {
			real = filepath.Join(m.Source, strings.TrimPrefix(p, m.Destination))
		}
		return trace.LayerRef{Index: -1, Where: WhereVolume}, real, nil
	}
	dirs := append([]Lower{{Dir: r.Upper, Layer: trace.LayerRef{Index: -1, Where: WhereRW}}}, r.Lowers...)
	for _, l := range dirs {
		real := filepath.Join(l.Dir, p)
		fi, err := os.Lstat(real)
		switch {
		case err == nil && isWhiteout(fi):
			return trace.LayerRef{}, "", fmt.Errorf("%s: %w (deleted in %s)", p, ErrNotInRootfs, l.Dir)
		case err == nil:
			return l.Layer, real, nil
		case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
			return trace.LayerRef{}, "", err
		}
		if r.hides(l.Dir, p) {
			break
		}
	}
	return trace.LayerRef{}, "", fmt.Errorf("%s: %w", p, ErrNotInRootfs)
}

// hides says whether a layer hides the layers below it at p: one of p's parent directories
// is opaque, deleted or not a directory there.
func (r *Rootfs) hides(dir, p string) bool {
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		fi, err := os.Lstat(filepath.Join(dir, d))
		if err != nil {
			continue
		}
		if !fi.IsDir() {
			return true
		}
		buf := make([]byte, 1)
		if n, err := unix.Lgetxattr(filepath.Join(dir, d), r.opaque, buf); err == nil && n == 1 && buf[0] == 'y' {
			return true
		}
	}
	return false
}

// isWhiteout tells overlay's mark of a deleted file: a character device 0:0.
func isWhiteout(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return fi.Mode()&fs.ModeCharDevice != 0 && ok && st.Rdev == 0
}

func hasOption(opts []string, want ...string) bool {
	for _, o := range opts {
		for _, w := range want {
			if o == w {
				return true
			}
		}
	}
	return false
}
