package collector

import (
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
	for key, f := range c.files {
		if strings.HasPrefix(f.Path, "inode:") {
			continue
		}
		ref, real, err := layerOf(f.Path)
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
