// Package store is the cache agent's artifact store: model files kept by content (sha256),
// one directory per tenant that a pod mounts read-only, filled from the artifact's origin
// over HTTP(S) with resumable downloads, and held to a quota by evicting the least recently
// used files. A file is published only once it is complete and its digest verified, so a
// pod never sees a partial or a corrupt file. STORE.md describes the layout.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/manifest"
)

// Errors that a caller can tell apart with errors.Is.
var (
	// ErrNotFound: the tenant has no such file.
	ErrNotFound = errors.New("not in the store")
	// ErrCorrupt: a file's size or sha256 is not the one asked for.
	ErrCorrupt = errors.New("corrupt")
	// ErrUnsafe: a symbolic link (or something other than a regular file) where the store
	// keeps a file; it is refused, not followed, and left for the operator to look at.
	ErrUnsafe = errors.New("unsafe path in the store")
	// ErrFull: the disk or the quota has no room for the file.
	ErrFull = errors.New("no room")
	// ErrInvalid: the artifact cannot be staged as given: no digest, no origin URL, no size
	// or a wrong one, a bad tenant name, an origin at an address the store refuses.
	ErrInvalid = errors.New("invalid artifact")
)

// Limiter bounds the bytes per second of downloads; internal/rate's Limiter is one.
type Limiter interface {
	Wait(ctx context.Context, n int) error
}

// Options configure a Store.
type Options struct {
	// Quota bounds the bytes of all tenants' files and partial downloads together;
	// 0 means no quota (the disk is the limit).
	Quota int64
	// AllowOrigins are the addresses that downloads may connect to although the store
	// refuses them by default: loopback, link-local (the cloud metadata service at
	// 169.254.169.254), unspecified and multicast. The policy is checked on every
	// connection, after name resolution, redirects included.
	AllowOrigins []netip.Prefix
	// IdleTimeout aborts a download that receives no body bytes for that long, keeping
	// its partial file to resume; 0 means DefaultIdleTimeout. Dials and TLS handshakes
	// time out after 30 s, and an origin has 60 s to answer with its headers.
	IdleTimeout time.Duration
	// Limiter, when set, paces downloads.
	Limiter Limiter
	// Verify hashes a present file in full on every hit (and verified Lookup), to find bits
	// that rotted on the disk. Without it, a file unchanged since it was last hashed (its
	// stamp matches a fresh fstat: the same inode, link count, size, mtime and ctime) is a
	// hit without being read; a file that changed in any way the inode shows is hashed
	// again. A 16 GB model then costs a stat per hit instead of 16 GB of disk reads.
	Verify bool
}

// Store is an artifact store under one root directory. Its methods are safe for concurrent
// use; two Stage calls for the same tenant and digest run one after the other.
type Store struct {
	root   string
	dir    *os.File // the root; every path is resolved beneath it
	opt    Options
	client *http.Client

	mu sync.Mutex
	// busy holds the tenant/hex keys that a call is staging: a second call for the same
	// key waits on the channel, and eviction never touches them.
	busy map[string]chan struct{}
	// reserved is the quota held by each download in flight, counted at its full size.
	reserved map[string]int64

	stats struct {
		hits, misses, refetches, resumes, restarts, failures atomic.Int64
		fetched, evictions, evicted, nanos                   atomic.Int64
	}
}

// Layout beneath the root. The partial downloads are outside every tenant's directory, so
// that a pod that mounts its tenant's directory can never see one.
const (
	tenantsDir = "tenants"
	partialDir = ".partial"
	blobsDir   = "sha256"
)

// Open opens the store at root, creating its directories when they are missing.
func Open(root string, opt Options) (*Store, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	dir, err := os.OpenFile(root, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	for _, d := range []struct {
		name string
		perm uint32
	}{{tenantsDir, 0o755}, {partialDir, 0o700}} {
		f, err := mkdirs(dir, d.name, d.perm)
		if err != nil {
			dir.Close()
			return nil, fmt.Errorf("store: %w", err)
		}
		f.Close()
	}
	if opt.IdleTimeout <= 0 {
		opt.IdleTimeout = DefaultIdleTimeout
	}
	return &Store{root: root, dir: dir, opt: opt, client: newClient(opt.AllowOrigins), busy: map[string]chan struct{}{}, reserved: map[string]int64{}}, nil
}

// Close releases the store's root directory.
func (s *Store) Close() error { return s.dir.Close() }

// Dir returns the tenant's published directory, creating it when missing: the directory a
// pod mounts read-only (a hostPath volume). Its files are at Dir/sha256/<hex>, complete
// and verified; nothing else is ever in it.
func (s *Store) Dir(tenant string) (string, error) {
	if err := checkTenant(tenant); err != nil {
		return "", err
	}
	d, err := mkdirs(s.dir, blobDir(tenant), 0o755)
	if err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	d.Close()
	return filepath.Join(s.root, tenantsDir, tenant), nil
}

// Lookup returns the published path of digest for tenant when the tenant has it, intact:
// its size is size (a negative size skips the check) and, when verify is set, its sha256 is
// digest: known from its stamp when it is unchanged since it was last hashed, else (and
// always, with Options.Verify) read in full. Otherwise it returns an error wrapping
// ErrNotFound, ErrCorrupt or ErrUnsafe, or ErrInvalid when the file is intact and size is
// not its size. A lookup counts as a use for the
// least-recently-used eviction.
func (s *Store) Lookup(tenant, digest string, size int64, verify bool) (string, error) {
	h, err := checkKey(tenant, digest)
	if err != nil {
		return "", err
	}
	dir, err := openAt(s.dir, blobDir(tenant), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("store: tenant %s: %s: %w", tenant, digest, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	defer dir.Close()
	if err := s.check(tenant, dir, h, size, verify, nil); err != nil {
		return "", fmt.Errorf("store: tenant %s: %w", tenant, err)
	}
	return filepath.Join(dir.Name(), h), nil
}

// check says whether the tenant's file dir/h is a regular file of the given size (negative:
// any) and, when verify is set, whether its content hashes to h: known from its stamp, or
// read in full when the stamp does not match or the store always verifies. A file found
// intact is touched as used, and stamped again when its content is known good.
//
// A size that differs is never taken as proof of corruption by itself: the file is hashed,
// and when it is intact the size asked for is wrong (ErrInvalid), so that a wrong size in a
// manifest does not throw a good file away on every apply.
//
// bad, when not nil, records the state of a file that hashed wrong (as a stamp records a
// good one); a file still in that state is corrupt without being read again.
func (s *Store) check(tenant string, dir *os.File, h string, size int64, verify bool, bad *stamp) error {
	f, err := openAt(dir, h, unix.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sha256:%s: %w", h, ErrNotFound)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: %w: a %v, not a regular file", f.Name(), ErrUnsafe, fi.Mode().Type())
	}
	sizeOK := size < 0 || fi.Size() == size
	st := fi.Sys().(*syscall.Stat_t)
	good := s.stamped(tenant, h, st)
	if (verify || !sizeOK) && (!good || s.opt.Verify) {
		if bad != nil && *bad == stampOf(h, st) {
			return fmt.Errorf("%s: %w: unchanged since its content hashed wrong", f.Name(), ErrCorrupt)
		}
		sum := sha256.New()
		if _, err := io.Copy(sum, f); err != nil {
			return fmt.Errorf("%s: %w", f.Name(), err)
		}
		if got := hex.EncodeToString(sum.Sum(nil)); got != h {
			s.dropStamp(tenant, h)
			if bad != nil {
				*bad = stampOf(h, st)
			}
			if !sizeOK {
				return fmt.Errorf("%s: %w: %d bytes, want %d, and its content has sha256:%s", f.Name(), ErrCorrupt, fi.Size(), size, got)
			}
			return fmt.Errorf("%s: %w: its content has sha256:%s", f.Name(), ErrCorrupt, got)
		}
		good = true
	}
	if !sizeOK {
		return fmt.Errorf("%s: %w: the file is intact (its %d bytes hash to sha256:%s), so the artifact's size %d is wrong; the file is kept", f.Name(), ErrInvalid, fi.Size(), h, size)
	}
	s.use(tenant, h, f, good)
	return nil
}

// Stats are the store's counters since Open, for the caller to export as metrics.
type Stats struct {
	// Hits counts Stage calls that found the file intact; Misses those that found none and
	// fetched it; Refetches those that found it corrupt and fetched it again. A fallback to
	// the origin is a miss or a refetch.
	Hits, Misses, Refetches int64
	// Resumes counts downloads continued from a partial file, Restarts partial files thrown
	// away (the origin's content changed or ignored the range, or the bytes were wrong).
	Resumes, Restarts int64
	// Failures counts Stage calls that returned an error.
	Failures int64
	// BytesFetched is what came from origins into the store.
	BytesFetched int64
	// Evictions and EvictedBytes count the files removed to stay within the quota.
	Evictions, EvictedBytes int64
	// StageTime is the time spent in Stage, all calls together.
	StageTime time.Duration
}

// Stats returns the counters.
func (s *Store) Stats() Stats {
	c := &s.stats
	return Stats{
		Hits: c.hits.Load(), Misses: c.misses.Load(), Refetches: c.refetches.Load(),
		Resumes: c.resumes.Load(), Restarts: c.restarts.Load(), Failures: c.failures.Load(),
		BytesFetched: c.fetched.Load(), Evictions: c.evictions.Load(), EvictedBytes: c.evicted.Load(),
		StageTime: time.Duration(c.nanos.Load()),
	}
}

func blobDir(tenant string) string     { return tenantsDir + "/" + tenant + "/" + blobsDir }
func partialsDir(tenant string) string { return partialDir + "/" + tenant }

func checkTenant(tenant string) error {
	if !manifest.ValidTenant(tenant) {
		return fmt.Errorf("store: tenant %q is not a Kubernetes namespace name (lower-case letters, digits and '-', at most 63)", tenant)
	}
	return nil
}

// checkKey validates tenant and digest and returns the digest's hex part.
func checkKey(tenant, digest string) (string, error) {
	if err := checkTenant(tenant); err != nil {
		return "", err
	}
	if digest == "" {
		return "", fmt.Errorf("store: %w: it has no digest, so it cannot be stored by content", ErrInvalid)
	}
	if !manifest.ValidDigest(digest) {
		return "", fmt.Errorf("store: %w: digest %q is not sha256: and 64 lower-case hex digits", ErrInvalid, digest)
	}
	return strings.TrimPrefix(digest, "sha256:"), nil
}
