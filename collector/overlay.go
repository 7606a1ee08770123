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
	layerOf = memo(layerOf)
	c.nameInterpreters(layerOf)
	for key, f := range c.files {
		if strings.HasPrefix(f.Path, "inode:") {
			continue
		}
		ref, real, resolved, err := follow(layerOf, f.Path)
		if err != nil {
			continue
		}
		if resolved != path.Clean(f.Path) {
			ref.Path = resolved
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

// memo answers each path once: follow asks about every parent directory of every file,
// and the files of a container share their directories.
func memo(layerOf LayerFunc) LayerFunc {
	type answer struct {
		ref  trace.LayerRef
		real string
		err  error
	}
	seen := map[string]answer{}
	return func(p string) (trace.LayerRef, string, error) {
		a, ok := seen[p]
		if !ok {
			a.ref, a.real, a.err = layerOf(p)
			seen[p] = a
		}
		return a.ref, a.real, a.err
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
		_, exe, _, err := follow(layerOf, p.Exe)
		if err != nil || exe == "" {
			continue
		}
		interp := interpreter(exe)
		if interp == "" {
			continue
		}
		_, real, _, err := follow(layerOf, interp)
		var st unix.Stat_t
		if err != nil || real == "" || unix.Stat(real, &st) != nil {
			continue
		}
		if f := c.files[fileKey{kernelDev(st.Dev), st.Ino}]; f != nil && strings.HasPrefix(f.Path, "inode:") {
			f.Path = interp
		}
	}
}

// follow is layerOf of the file that p names once every symbolic link in it, among its
// parent directories (a usrmerge /lib -> usr/lib) as at its end, is resolved as inside the
// container: an absolute target starts at the container's root, not the host's. It also
// returns that path: the file's name in its layer, which is what a lazy-pull snapshotter's
// prefetch list names (ctr-remote records the file fanotify reports, links resolved).
func follow(layerOf LayerFunc, p string) (trace.LayerRef, string, string, error) {
	links := 0
	rest := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	cur := "/"
	for len(rest) > 0 {
		comp := rest[0]
		rest = rest[1:]
		if comp == "" || comp == "." {
			continue
		}
		next := path.Join(cur, comp)
		ref, real, err := layerOf(next)
		if err != nil || real == "" {
			return ref, real, path.Join(append([]string{next}, rest...)...), err
		}
		target, err := os.Readlink(real)
		if err != nil {
			if len(rest) == 0 {
				return ref, real, next, nil // not a link
			}
			cur = next
			continue
		}
		if links++; links > 40 { // the kernel's MAXSYMLINKS
			return trace.LayerRef{}, "", "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		if !path.IsAbs(target) {
			target = path.Join(cur, target)
		}
		rest = append(strings.Split(strings.Trim(path.Clean(target), "/"), "/"), rest...)
		cur = "/"
	}
	ref, real, err := layerOf(cur)
	return ref, real, cur, err
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
