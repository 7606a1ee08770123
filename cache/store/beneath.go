package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Every path is built from a validated tenant and a hex digest, and still the kernel resolves
// it beneath the root without following any symbolic link: a link planted in the store
// (a blob pointing at /etc/shadow, or at another tenant's blob) is refused, never followed.
const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openAt opens rel beneath the directory dir.
func openAt(dir *os.File, rel string, flags int, mode uint32) (*os.File, error) {
	how := &unix.OpenHow{
		// O_NONBLOCK: a FIFO planted in the store must not hang the agent.
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK),
		Mode:    uint64(mode),
		Resolve: resolve,
	}
	name := filepath.Join(dir.Name(), rel)
	for {
		fd, err := unix.Openat2(int(dir.Fd()), rel, how)
		switch {
		// EAGAIN: a concurrent rename raced the resolution; the kernel asks to retry.
		case err == unix.EAGAIN || err == unix.EINTR:
			continue
		case err != nil:
			return nil, pathError("open", name, err)
		}
		return os.NewFile(uintptr(fd), name), nil
	}
}

// mkdirs creates the directories of rel beneath dir, one component at a time (each with
// perm), and opens the last one.
func mkdirs(dir *os.File, rel string, perm uint32) (*os.File, error) {
	parts := strings.Split(rel, "/")
	for i := range parts {
		parent := dir
		if i > 0 {
			p, err := openAt(dir, strings.Join(parts[:i], "/"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				return nil, err
			}
			defer p.Close()
			parent = p
		}
		if err := unix.Mkdirat(int(parent.Fd()), parts[i], perm); err != nil && err != unix.EEXIST {
			return nil, pathError("mkdir", filepath.Join(parent.Name(), parts[i]), err)
		}
	}
	return openAt(dir, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
}

// pathError names the path, and says plainly when the kernel refused to resolve it.
func pathError(op, name string, err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("%s %s: %w: a symbolic link or a path leaving the store (%v)", op, name, ErrUnsafe, err)
	}
	return &os.PathError{Op: op, Path: name, Err: err}
}

// renameOver writes b to f, the file tmp just created in dir, closes f and renames tmp over
// name, so that a reader of name sees its old content or all of b. When a step fails, tmp
// is removed.
func renameOver(dir, f *os.File, tmp, name string, b []byte) error {
	_, err := f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(int(dir.Fd()), tmp, int(dir.Fd()), name)
	}
	if err != nil {
		_ = unlinkAt(dir, tmp)
	}
	return err
}

// unlinkAt removes the entry name of dir, a link itself and never its target.
func unlinkAt(dir *os.File, name string) error {
	if err := unix.Unlinkat(int(dir.Fd()), name, 0); err != nil && err != unix.ENOENT {
		return pathError("remove", filepath.Join(dir.Name(), name), err)
	}
	return nil
}
