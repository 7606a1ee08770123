package collector

import (
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/trace"
)

// LayerFunc tells which layer of a container's file system provides a path inside the
// container, and the path on the host that holds the file (empty where there is none, as
// for /proc); containerd.Rootfs.LayerOf is one.
type LayerFunc func(path string) (trace.LayerRef, string, error)

// ResolveLayers ties each file that the container's processes opened to the layer that
// provides it, and folds into it what the kernel reported under the file's real inode.
// Through overlayfs a process opens and reads the overlay's inode, but a mapping maps the
// real file of the layer and the page cache is the real file's: page faults and page-cache
// misses carry the real (dev, ino). Call it before Trace, while the container's writable
// layer still exists.
func (c *Collector) ResolveLayers(layerOf LayerFunc) {
	c.nameInterpreters(layerOf)
	for key, f := range c.files {
		if strings.HasPrefix(f.Path, "inode:") {
			continue
		}
		ref, real, err := follow(layerOf, f.Path)
		if err != nil {
			continue
		}
		f.Layer = &ref
		if real == "" {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(real, &st) != nil {
			continue
		}
		f.Size = max(f.Size, st.Size) // an exec'd file is known without its size
		rk := fileKey{kernelDev(st.Dev), st.Ino}
		if r, ok := c.files[rk]; ok && rk != key {
			f.fold(r)
			delete(c.files, rk)
		}
	}
}

// nameInterpreters names the ELF interpreters (dynamic loaders) of the container's
// executables: the kernel maps them at exec without an open, so only their page faults,
// under the real inode, show them.
func (c *Collector) nameInterpreters(layerOf LayerFunc) {
	seen := map[string]bool{}
	for _, p := range c.procs {
		if p.Exe == "" || seen[p.Exe] {
			continue
		}
		seen[p.Exe] = true
		_, exe, err := follow(layerOf, p.Exe)
		if err != nil || exe == "" {
			continue
		}
		interp := interpreter(exe)
		if interp == "" {
			continue
		}
		_, real, err := follow(layerOf, interp)
		var st unix.Stat_t
		if err != nil || real == "" || unix.Stat(real, &st) != nil {
			continue
		}
		if f := c.files[fileKey{kernelDev(st.Dev), st.Ino}]; f != nil && strings.HasPrefix(f.Path, "inode:") {
			f.Path = interp
		}
	}
}

// follow is layerOf after the symbolic links at the end of the path, resolved as inside
// the container: an absolute target starts at the container's root, not the host's. Links
// among the parent directories resolve on the host, which is right for relative ones.
func follow(layerOf LayerFunc, p string) (trace.LayerRef, string, error) {
	for range 16 {
		ref, real, err := layerOf(p)
		if err != nil || real == "" {
			return ref, real, err
		}
		target, err := os.Readlink(real)
		if err != nil {
			return ref, real, nil // not a link
		}
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(p), target)
		}
		p = target
	}
	return trace.LayerRef{}, "", fmt.Errorf("%s: too many levels of symbolic links", p)
}

// fold adds what was seen of r, the same file under another inode, to f.
func (f *fileState) fold(r *fileState) {
	f.reads = append(f.reads, r.reads...)
	f.faults = append(f.faults, r.faults...)
	f.misses = append(f.misses, r.misses...)
	f.BytesRead += r.BytesRead
	f.ReadTime += r.ReadTime
	f.Mmaps += r.Mmaps
	f.Size = max(f.Size, r.Size)
}

// FirstExec is the time of the first exec of a traced process, or zero before any.
func (c *Collector) FirstExec() trace.Duration { return c.firstExec() }
