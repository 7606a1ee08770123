package store

import (
	"context"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Two processes (the agent and a `coldtrace warm`) share the store. A download of a tenant's
// file is theirs alone while they hold a flock on .partial/TENANT/HEX.lock: a file that is
// never renamed, so that a lock is never taken on the partial file's inode after another
// process published it. The holder removes the lock file before it lets go; a process that
// opened the old one and then got its lock finds it unlinked (or another file at its name)
// and opens it again. The kernel drops the lock when its holder dies.

func lockName(h string) string { return h + ".lock" }

// lockPollInterval is how often a call waiting for another process's download tries again.
const lockPollInterval = 50 * time.Millisecond

// fileLock is a held lock on a download.
type fileLock struct {
	parts *os.File
	f     *os.File
	name  string
}

// tryLock takes the lock on the download h in parts without waiting; it returns nil when
// another process holds it.
func tryLock(parts *os.File, h string) (*fileLock, error) {
	return takeLock(context.Background(), parts, h, false)
}

// lockDownload waits until it holds the lock on the download h in parts.
func lockDownload(ctx context.Context, parts *os.File, h string) (*fileLock, error) {
	return takeLock(ctx, parts, h, true)
}

func takeLock(ctx context.Context, parts *os.File, h string, wait bool) (*fileLock, error) {
	for {
		f, err := openAt(parts, lockName(h), unix.O_RDWR|unix.O_CREAT, 0o600)
		if err != nil {
			return nil, err
		}
		for {
			err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			if err == nil {
				break
			}
			if err != unix.EWOULDBLOCK {
				f.Close()
				return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
			}
			if !wait {
				f.Close()
				return nil, nil
			}
			select {
			case <-ctx.Done():
				f.Close()
				return nil, ctx.Err()
			case <-time.After(lockPollInterval):
			}
		}
		// The lock is good only on the file that still has the name: the holder it waited
		// for removed it before letting go.
		var held, named unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) == nil && held.Nlink > 0 &&
			unix.Fstatat(int(parts.Fd()), lockName(h), &named, unix.AT_SYMLINK_NOFOLLOW) == nil &&
			held.Dev == named.Dev && held.Ino == named.Ino {
			return &fileLock{parts: parts, f: f, name: lockName(h)}, nil
		}
		f.Close()
	}
}

// unlock removes the lock file, then lets go of it.
func (l *fileLock) unlock() {
	_ = unlinkAt(l.parts, l.name)
	l.f.Close()
}
