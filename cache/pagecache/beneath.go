// Package pagecache brings the hot byte ranges of a prefetch manifest into this node's page
// cache before a container needs them: it finds each file in the image layer that provides
// it (through containerd's snapshotter), opens it without ever leaving the layer's directory,
// reads the ranges in first-access order under a rate limit, and measures with mincore how
// much of them is resident.
package pagecache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/manifest"
)

// ErrRefused says that a manifest path would leave its root or names no regular file.
var ErrRefused = errors.New("refused")

// ErrChanged says that a file's size differs from the manifest's: it changed since it was
// traced, and its ranges may no longer be the ones needed.
var ErrChanged = errors.New("the file changed since it was traced")

// OpenBeneath opens the regular file rel beneath the directory root for reading. The
// kernel resolves the whole path inside root (openat2 with RESOLVE_BENEATH): a symbolic
// link that stays inside root is followed, and one that points outside it (absolute, or up
// through ".."), a magic link of /proc, an absolute rel or a ".." component is refused
// with an error wrapping ErrRefused that says why.
func OpenBeneath(root, rel string) (*os.File, error) {
	refuse := func(why string) (*os.File, error) {
		return nil, fmt.Errorf("open %q beneath %s: %w: %s", rel, root, ErrRefused, why)
	}
	switch {
	case rel == "":
		return refuse("empty path")
	case filepath.IsAbs(rel):
		return refuse("absolute path; manifest paths are relative to their layer")
	case strings.ContainsRune(rel, 0):
		return refuse("NUL byte in path")
	case manifest.HasDotDot(rel):
		return refuse(`".." component`)
	}
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open root %s: %w", root, err)
	}
	defer unix.Close(dir)
	how := &unix.OpenHow{
		// O_NONBLOCK: opening a FIFO planted in a layer must not hang the agent.
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	}
	var fd int
	for {
		fd, err = unix.Openat2(dir, rel, how)
		// EAGAIN: a concurrent rename raced the resolution; the kernel asks to retry.
		if err != unix.EAGAIN && err != unix.EINTR {
			break
		}
	}
	switch {
	case err == unix.EXDEV:
		return refuse("the path or a symbolic link in it leads outside the root")
	case err == unix.ELOOP:
		return refuse("too many symbolic links, or a /proc magic link")
	case err != nil:
		return nil, fmt.Errorf("open %q beneath %s: %w", rel, root, err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(root, rel))
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return refuse("not a regular file (" + fi.Mode().Type().String() + ")")
	}
	return f, nil
}
