package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/manifest"
)

// Action is what Stage did.
type Action string

// The actions of Stage.
const (
	// Hit: the file was present and verified; nothing was fetched.
	Hit Action = "hit"
	// Fetched: the file was missing and came from the origin.
	Fetched Action = "fetched"
	// Resumed: the file came from the origin, continuing a partial download.
	Resumed Action = "resumed"
	// Refetched: the file was present but corrupt; it was removed and fetched again.
	Refetched Action = "refetched"
)

// Result is what one Stage call did.
type Result struct {
	Action Action
	// Path is the published file.
	Path string
	// ResumedFrom is the length of the partial download that was kept, when resumed.
	ResumedFrom int64
	// Fetched is the bytes received from the origin.
	Fetched int64
	// Restarted says that a partial download was thrown away: the origin's content changed,
	// it ignored the range asked for, or the partial bytes turned out wrong.
	Restarted bool
	Duration  time.Duration
}

// Stage makes the artifact present for tenant. A file already there is a hit when its size
// is right and its sha256 is known good: from its stamp when it is unchanged since it was
// last hashed, else (and always, with Options.Verify) by hashing it in full. A missing one
// is fetched from the artifact's origin; a corrupt one is removed first and fetched again.
// A download goes to a partial file outside the tenant's published directory, continuing
// what an earlier call or process left there (a Range request, with If-Range on the
// origin's ETag or Last-Modified), is checked for size and sha256 while it is written, and
// is synced, renamed into place and stamped only when it verifies. Quota is made by
// evicting the least recently used files of any tenant first. A download that another
// process (a `coldtrace warm` beside the agent) is making is waited for, and its file then
// taken as found. progress, when set, is
// called with the bytes present so far and the size.
func (s *Store) Stage(ctx context.Context, tenant string, a manifest.Artifact, progress func(done, total int64)) (Result, error) {
	start := time.Now()
	r, err := s.stage(ctx, tenant, a, progress)
	r.Duration = time.Since(start)
	c := &s.stats
	c.nanos.Add(int64(r.Duration))
	c.fetched.Add(r.Fetched)
	if r.Restarted {
		c.restarts.Add(1)
	}
	if err != nil {
		c.failures.Add(1)
		return r, err
	}
	switch r.Action {
	case Hit:
		c.hits.Add(1)
	case Refetched:
		c.refetches.Add(1)
	default:
		c.misses.Add(1)
	}
	if r.ResumedFrom > 0 {
		c.resumes.Add(1)
	}
	return r, nil
}

func (s *Store) stage(ctx context.Context, tenant string, a manifest.Artifact, progress func(done, total int64)) (Result, error) {
	h, err := checkKey(tenant, a.Digest)
	if err != nil {
		return Result{}, err
	}
	if err := checkOrigin(a.Origin); err != nil {
		return Result{}, err
	}
	if a.Size <= 0 {
		return Result{}, fmt.Errorf("store: %w: %s: size %d: an artifact needs its size, to check what the origin sends and to count it against the quota", ErrInvalid, a.Path, a.Size)
	}
	key := tenant + "/" + h
	if err := s.lock(ctx, key); err != nil {
		return Result{}, err
	}
	defer s.unlock(key)

	blobs, err := mkdirs(s.dir, blobDir(tenant), 0o755)
	if err != nil {
		return Result{}, fmt.Errorf("store: %w", err)
	}
	defer blobs.Close()
	r := Result{Path: filepath.Join(blobs.Name(), h)}
	var bad stamp // a corrupt copy found before the lock is not hashed again after it
	if err := s.check(tenant, blobs, h, a.Size, true, &bad); err == nil {
		r.Action = Hit
		return r, nil
	} else if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrCorrupt) {
		return r, fmt.Errorf("store: %w", err)
	}
	// Only the holder of the download's lock changes the file: another process (an agent
	// and a `coldtrace warm`) may be fetching it now, and may have published it once the
	// lock is ours.
	parts, err := mkdirs(s.dir, partialsDir(tenant), 0o700)
	if err != nil {
		return r, fmt.Errorf("store: %w", err)
	}
	defer parts.Close()
	fl, err := lockDownload(ctx, parts, h)
	if err != nil {
		return r, fmt.Errorf("store: %w", err)
	}
	defer fl.unlock()
	switch err := s.check(tenant, blobs, h, a.Size, true, &bad); {
	case err == nil:
		r.Action = Hit
		return r, nil
	case errors.Is(err, ErrNotFound):
		r.Action = Fetched
	case errors.Is(err, ErrCorrupt):
		// Unpublish it at once: until the new copy is in place, a pod finds nothing
		// rather than bad bytes.
		if err := unlinkAt(blobs, h); err != nil {
			return r, fmt.Errorf("store: %w", err)
		}
		s.dropStamp(tenant, h)
		r.Action = Refetched
	default:
		return r, fmt.Errorf("store: %w", err)
	}
	if err := s.reserve(key, a.Size); err != nil {
		return r, err
	}
	defer s.release(key)
	if err := s.fetch(ctx, tenant, h, a, parts, blobs, &r, progress); err != nil {
		return r, err
	}
	if r.Action == Fetched && r.ResumedFrom > 0 {
		r.Action = Resumed
	}
	return r, nil
}

// checkOrigin accepts an http or https URL with a host; a manifest that knows only the peer
// address of a download gives nothing to fetch from.
func checkOrigin(origin string) error {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("store: %w: origin %q is no URL (want http:// or https://): nothing to fetch from", ErrInvalid, origin)
	}
	return nil
}

// lock waits until no other call stages key, then marks it busy.
func (s *Store) lock(ctx context.Context, key string) error {
	for {
		s.mu.Lock()
		ch, held := s.busy[key]
		if !held {
			s.busy[key] = make(chan struct{})
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Store) unlock(key string) {
	s.mu.Lock()
	close(s.busy[key])
	delete(s.busy, key)
	s.mu.Unlock()
}

// partialMeta is saved beside a partial download so that another process can resume it.
type partialMeta struct {
	Origin       string `json:"origin"`
	Size         int64  `json:"size"`
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"lastModified,omitempty"`
}

// fetch downloads the artifact into the tenant's partial file in parts, verifies it and
// publishes it in blobs. The caller holds the download's lock.
func (s *Store) fetch(ctx context.Context, tenant, h string, a manifest.Artifact, parts, blobs *os.File, r *Result, progress func(done, total int64)) error {
	f, err := openAt(parts, h, unix.O_RDWR|unix.O_CREAT, 0o600)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	d := &download{s: s, a: a, f: f, parts: parts, name: h, r: r, progress: progress}
	d.loadMeta()
	err = d.run(ctx)
	if errors.Is(err, errBadPartial) {
		// The kept bytes were wrong: start over once, from nothing (the second run cannot
		// return errBadPartial, since it keeps nothing).
		r.Restarted, r.ResumedFrom = true, 0
		d.meta = partialMeta{}
		err = d.run(ctx)
	}
	if err != nil {
		// Wrong bytes are no use to resume from; after a full disk, nothing is kept.
		if errors.Is(err, ErrFull) || errors.Is(err, ErrCorrupt) {
			d.discard()
		}
		return fmt.Errorf("store: staging %s for tenant %s from %s: %w", a.Digest, tenant, a.Origin, err)
	}
	if err := publish(f, parts, h, blobs); err != nil {
		return err
	}
	// Verified while written, and touched by publish: stamp it as it now is.
	if fi, err := f.Stat(); err == nil {
		s.writeStamp(tenant, h, fi.Sys().(*syscall.Stat_t))
	}
	return nil
}

// errBadPartial: a download that continued a partial file does not hash to its digest.
var errBadPartial = errors.New("the resumed download does not match its digest")

type download struct {
	s        *Store
	a        manifest.Artifact
	f        *os.File
	parts    *os.File
	name     string
	meta     partialMeta
	r        *Result
	progress func(done, total int64)
}

func (d *download) metaName() string { return d.name + ".json" }

// loadMeta reads the partial file's metadata; without it, or when it is for another origin
// or size, the partial bytes are not trusted.
func (d *download) loadMeta() {
	if mf, err := openAt(d.parts, d.metaName(), unix.O_RDONLY, 0); err == nil {
		_ = json.NewDecoder(io.LimitReader(mf, 1<<16)).Decode(&d.meta)
		mf.Close()
	}
	if d.meta.Origin != d.a.Origin || d.meta.Size != d.a.Size {
		d.meta = partialMeta{}
	}
}

// saveMeta writes the metadata beside the partial file (a temporary file renamed over it).
func (d *download) saveMeta() error {
	b, err := json.Marshal(d.meta)
	if err != nil {
		return err
	}
	tmp := d.metaName() + ".tmp"
	mf, err := openAt(d.parts, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := renameOver(d.parts, mf, tmp, d.metaName(), b); err != nil {
		return full(fmt.Errorf("%s: %w", filepath.Join(d.parts.Name(), d.metaName()), err), d.f.Name(), 0, d.a.Size)
	}
	return nil
}

// discard removes the partial file and its metadata.
func (d *download) discard() {
	_ = unlinkAt(d.parts, d.name)
	_ = unlinkAt(d.parts, d.metaName())
}

// run continues the partial file (from its length, when its metadata is trusted) to the
// artifact's size and checks its sha256.
func (d *download) run(ctx context.Context) error {
	off := int64(0)
	if d.meta.Origin != "" {
		fi, err := d.f.Stat()
		if err != nil {
			return err
		}
		off = fi.Size()
	}
	if off > d.a.Size {
		off = 0
	}
	sum := sha256.New()
	if off > 0 {
		if _, err := io.Copy(sum, io.NewSectionReader(d.f, 0, off)); err != nil {
			return err
		}
		d.r.ResumedFrom = off
	}
	if off < d.a.Size || off == 0 {
		if err := d.get(ctx, off, sum); err != nil {
			return err
		}
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != d.name {
		if d.r.ResumedFrom > 0 {
			return errBadPartial
		}
		return fmt.Errorf("%w: what the origin served does not hash to the digest", ErrCorrupt)
	}
	return nil
}

// get requests the artifact from off on and writes it into the partial file, hashing it into
// sum, to the artifact's size.
func (d *download) get(ctx context.Context, off int64, sum hash.Hash) error {
	// Cancelled with errStalled when the origin stops sending.
	ctx, stall := context.WithCancelCause(ctx)
	defer stall(nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.a.Origin, nil)
	if err != nil {
		return err
	}
	// Bytes as stored: a transparently decompressed body would break ranges and lengths.
	req.Header.Set("Accept-Encoding", "identity")
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
		// If-Range: a changed file comes whole (200) instead of a wrong remainder. A weak
		// ETag is not allowed there; without a validator the digest still catches a mix.
		if v := d.meta.ETag; v != "" && !strings.HasPrefix(v, "W/") {
			req.Header.Set("If-Range", v)
		} else if v := d.meta.LastModified; v != "" {
			req.Header.Set("If-Range", v)
		}
	}
	resp, err := d.s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		// A refused address or redirect is the artifact's fault, not the network's.
		var oe *net.OpError
		if errors.As(err, &oe) && errors.Is(oe.Err, ErrInvalid) {
			return oe.Err
		}
		if errors.Is(err, ErrInvalid) {
			return err
		}
		return fmt.Errorf("origin unreachable: %w", err)
	}
	defer resp.Body.Close()
	switch {
	case off > 0 && resp.StatusCode == http.StatusPartialContent:
		if start, total, ok := contentRange(resp.Header.Get("Content-Range")); !ok || start != off || (total >= 0 && total != d.a.Size) {
			return fmt.Errorf("origin answered bytes=%d- with another range or size", off)
		}
	case resp.StatusCode == http.StatusOK:
		if off > 0 {
			// The origin ignored the range, or its content changed since (If-Range).
			d.r.Restarted, d.r.ResumedFrom, off = true, 0, 0
			sum.Reset()
		}
		if resp.ContentLength >= 0 && resp.ContentLength != d.a.Size {
			return fmt.Errorf("%w: the origin serves another size than the manifest says (%d bytes)", ErrCorrupt, d.a.Size)
		}
		if err := d.f.Truncate(0); err != nil {
			return err
		}
		d.meta = partialMeta{Origin: d.a.Origin, Size: d.a.Size, ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")}
		if err := d.saveMeta(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("origin answered %s", resp.Status)
	}
	if _, err := d.f.Seek(off, io.SeekStart); err != nil {
		return err
	}
	body := newIdleReader(resp.Body, d.s.opt.IdleTimeout, stall)
	buf := make([]byte, 256<<10)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if off+int64(n) > d.a.Size {
				return fmt.Errorf("%w: the origin sends more than the manifest's %d bytes", ErrCorrupt, d.a.Size)
			}
			if l := d.s.opt.Limiter; l != nil {
				if err := l.Wait(ctx, n); err != nil {
					return err
				}
			}
			if _, err := d.f.Write(buf[:n]); err != nil {
				return full(err, d.f.Name(), off, d.a.Size)
			}
			sum.Write(buf[:n])
			off += int64(n)
			d.r.Fetched += int64(n)
			if d.progress != nil {
				d.progress(off, d.a.Size)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if cause := context.Cause(ctx); errors.Is(cause, errStalled) {
				rerr = cause
			}
			return fmt.Errorf("download interrupted at %d of %d bytes (kept to resume): %w", off, d.a.Size, rerr)
		}
	}
	if off != d.a.Size {
		return fmt.Errorf("the origin ended before the manifest's %d bytes (kept to resume)", d.a.Size)
	}
	return nil
}

// contentRange parses "bytes START-END/TOTAL"; total is -1 for "*".
func contentRange(v string) (start, total int64, ok bool) {
	rng, tot, found := strings.Cut(strings.TrimPrefix(v, "bytes "), "/")
	first, _, found2 := strings.Cut(rng, "-")
	if !found || !found2 || !strings.HasPrefix(v, "bytes ") {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	if tot == "*" {
		return start, -1, true
	}
	total, err = strconv.ParseInt(tot, 10, 64)
	return start, total, err == nil
}

// full turns a disk-full error into one that says so, with the file and the sizes.
func full(err error, name string, written, size int64) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: the disk is full: staging %s stopped at %d of %d bytes (removed): %w", ErrFull, name, written, size, err)
	}
	return err
}

// publish makes the verified partial file f the published blob: read-only, synced, renamed
// into blobs (atomic: a pod sees the whole file or none), the directory synced.
func publish(f, parts *os.File, name string, blobs *os.File) error {
	if err := f.Chmod(0o444); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("store: sync %s: %w", f.Name(), err)
	}
	if err := unix.Renameat(int(parts.Fd()), name, int(blobs.Fd()), name); err != nil {
		return fmt.Errorf("store: publish %s: %w", filepath.Join(blobs.Name(), name), err)
	}
	touch(f)
	if err := blobs.Sync(); err != nil {
		return fmt.Errorf("store: sync %s: %w", blobs.Name(), err)
	}
	_ = unlinkAt(parts, name+".json")
	return nil
}
