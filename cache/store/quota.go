package store

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// entry is one file that counts against the quota: a published blob or a partial download
// (with its metadata).
type entry struct {
	dir     string // beneath the root
	name    string
	key     string // tenant/hex
	size    int64
	lastUse int64 // modification time, ns
}

// reserve holds size bytes of the quota for the download of key, evicting the least recently
// used files of any tenant to make room. A file whose key a call is staging (a download in
// flight, or a hit being verified) is never evicted.
func (s *Store) reserve(key string, size int64) error {
	q := s.opt.Quota
	if q <= 0 {
		return nil
	}
	if size > q {
		return fmt.Errorf("store: %s is %d bytes, more than the whole quota of %d: %w", key, size, q, ErrFull)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	entries, err := s.entries()
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	// A download in flight counts at its full size, whatever it has written yet.
	s.reserved[key] = size
	var used int64
	for _, n := range s.reserved {
		used += n
	}
	var evictable []entry
	for _, e := range entries {
		if _, ok := s.reserved[e.key]; ok {
			continue
		}
		used += e.size
		if _, ok := s.busy[e.key]; !ok {
			evictable = append(evictable, e)
		}
	}
	slices.SortFunc(evictable, func(a, b entry) int { return cmp.Compare(a.lastUse, b.lastUse) })
	for _, e := range evictable {
		if used <= q {
			break
		}
		evicted, err := s.evict(e)
		if err != nil {
			delete(s.reserved, key)
			return fmt.Errorf("store: evicting to make room: %w", err)
		}
		if evicted {
			used -= e.size
		}
	}
	if used > q {
		delete(s.reserved, key)
		return fmt.Errorf("store: quota full: %s needs %d bytes, and %d of the quota's %d are in files being staged: %w", key, size, used-size, q, ErrFull)
	}
	return nil
}

func (s *Store) release(key string) {
	s.mu.Lock()
	delete(s.reserved, key)
	s.mu.Unlock()
}

// evict removes e; it leaves (and says so) a partial download that another process is
// writing: busy and reserved only know this process's calls.
func (s *Store) evict(e entry) (bool, error) {
	d, err := openAt(s.dir, e.dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return false, err
	}
	defer d.Close()
	partial := strings.HasPrefix(e.dir, partialDir+"/")
	if partial {
		l, err := tryLock(d, e.name)
		if err != nil || l == nil {
			return false, err
		}
		defer l.unlock()
	}
	// A pod that has the file open or mapped keeps it until it closes it.
	if err := unlinkAt(d, e.name); err != nil {
		return false, err
	}
	if partial {
		_ = unlinkAt(d, e.name+".json")
	} else {
		tenant, _, _ := strings.Cut(e.key, "/")
		s.dropStamp(tenant, e.name)
	}
	s.stats.evictions.Add(1)
	s.stats.evicted.Add(e.size)
	return true, nil
}

// entries lists the published blobs and partial downloads of every tenant.
func (s *Store) entries() ([]entry, error) {
	var out []entry
	for _, top := range []string{tenantsDir, partialDir} {
		tenants, err := s.readDir(top)
		if err != nil {
			return nil, err
		}
		for _, t := range tenants {
			dir := top + "/" + t
			if top == tenantsDir {
				dir = blobDir(t)
			}
			d, err := openAt(s.dir, dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			// A planted link is refused where it is looked up; it blocks no other tenant.
			if errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrUnsafe) || errors.Is(err, unix.ENOTDIR) {
				continue
			}
			if err != nil {
				return nil, err
			}
			names, err := d.Readdirnames(-1)
			for _, n := range names {
				var st unix.Stat_t
				// Only regular files named by a digest: metadata and symbolic links do not count.
				if len(n) != 64 || unix.Fstatat(int(d.Fd()), n, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
					continue
				}
				out = append(out, entry{dir: dir, name: n, key: t + "/" + n, size: st.Size, lastUse: st.Mtim.Nano()})
			}
			d.Close()
			if err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func (s *Store) readDir(rel string) ([]string, error) {
	d, err := openAt(s.dir, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}
