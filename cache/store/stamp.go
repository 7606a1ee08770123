package store

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A stamp records that a published file hashed to its digest, and the state its inode was
// in then. A file whose fresh fstat still shows that state has not been replaced, renamed
// over, linked, truncated or written since (each changes its inode, link count, size or
// ctime; a write its mtime too), so a hit trusts it without reading it. A change the inode
// does not show (bits rotting on the disk, a write to the block device beneath the
// filesystem) only Options.Verify finds, by hashing the file on every hit; so does a write
// that races a hit between its fstat and its touch (use), which renews the stamp.
//
// Stamps live beside the tenant's partial downloads (.partial/TENANT/HEX.stamp.json),
// where no pod looks or writes.
type stamp struct {
	Digest string `json:"digest"`
	Dev    uint64 `json:"dev"`
	Ino    uint64 `json:"ino"`
	Nlink  uint64 `json:"nlink"`
	Size   int64  `json:"size"`
	Mtime  int64  `json:"mtimeNs"`
	Ctime  int64  `json:"ctimeNs"`
}

func stampName(h string) string { return h + ".stamp.json" }

func stampOf(h string, st *syscall.Stat_t) stamp {
	return stamp{
		Digest: "sha256:" + h, Dev: st.Dev, Ino: st.Ino, Nlink: uint64(st.Nlink), Size: st.Size,
		Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(),
	}
}

// stamped says whether the tenant's stamp for h matches st.
func (s *Store) stamped(tenant, h string, st *syscall.Stat_t) bool {
	f, err := openAt(s.dir, partialsDir(tenant)+"/"+stampName(h), unix.O_RDONLY, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	var got stamp
	if err != nil || json.Unmarshal(b, &got) != nil {
		return false
	}
	return got == stampOf(h, st)
}

// writeStamp records st as the verified state of the tenant's file h, in a temporary file
// renamed over the old stamp. Best effort: without a stamp, the next hit hashes the file.
func (s *Store) writeStamp(tenant, h string, st *syscall.Stat_t) {
	parts, err := mkdirs(s.dir, partialsDir(tenant), 0o700)
	if err != nil {
		return
	}
	defer parts.Close()
	b, err := json.Marshal(stampOf(h, st))
	if err != nil {
		return
	}
	// A unique name: a Lookup and a Stage, or two processes, may stamp the file at once.
	tmp := fmt.Sprintf("%s.stamp.%016x.tmp", h, rand.Uint64())
	if f, err := openAt(parts, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600); err == nil {
		_ = renameOver(parts, f, tmp, stampName(h), b)
	}
}

// dropStamp removes the tenant's stamp for h, once its file is corrupt or gone.
func (s *Store) dropStamp(tenant, h string) {
	if parts, err := openAt(s.dir, partialsDir(tenant), unix.O_RDONLY|unix.O_DIRECTORY, 0); err == nil {
		_ = unlinkAt(parts, stampName(h))
		parts.Close()
	}
}

// use records a use of the tenant's open file f (its modification time is its last use, for
// the eviction) and, when its content is known good, stamps the state the use leaves it in:
// touching it changes its times, so the stamp is renewed after.
func (s *Store) use(tenant, h string, f *os.File, good bool) {
	touch(f)
	if !good {
		return
	}
	if fi, err := f.Stat(); err == nil {
		s.writeStamp(tenant, h, fi.Sys().(*syscall.Stat_t))
	}
}

// touch records a use of the open file f: a file's modification time is its last use.
func touch(f *os.File) {
	now := unix.NsecToTimespec(time.Now().UnixNano())
	// Best effort: a file that cannot be touched is only evicted sooner.
	_ = unix.UtimesNanoAt(int(f.Fd()), "", []unix.Timespec{now, now}, unix.AT_EMPTY_PATH)
}
