package containerd

import (
	"context"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// watchIngestDir wakes the returned channel whenever containerd's local content store
// begins an ingest, a directory created under its "ingest" directory (inotify), so that
// the node's ingest log need not poll while nothing is pulled. Nil when that directory
// cannot be watched (no local content store, containerd's root out of sight): the log then
// polls every IngestPoll. stop ends the watch.
func (c *Client) watchIngestDir(ctx context.Context) (wake <-chan struct{}, stop func()) {
	resp, err := c.c.IntrospectionService().Plugins(ctx, "type==io.containerd.content.v1,id==content")
	if err != nil || len(resp.Plugins) != 1 || resp.Plugins[0].Exports["root"] == "" {
		return nil, func() {}
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, func() {}
	}
	dir := filepath.Join(resp.Plugins[0].Exports["root"], "ingest")
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_ONLYDIR); err != nil {
		unix.Close(fd)
		return nil, func() {}
	}
	f := os.NewFile(uintptr(fd), "inotify "+dir) // non-blocking: Close ends a pending Read
	ch := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			select {
			case ch <- struct{}{}:
			default: // a wake is already pending
			}
		}
	}()
	return ch, func() { f.Close() }
}
