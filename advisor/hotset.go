package advisor

import (
	"cmp"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/coldtrace/coldtrace/manifest"
	"github.com/coldtrace/coldtrace/trace"
)

const pageSize = manifest.PageSize

// fileKey identifies a file across runs: the layer that provides it and its path in the
// layer, or no layer and its host path.
type fileKey struct{ layer, path string }

// hotFile gathers one file's accesses over the runs.
type hotFile struct {
	key        fileKey
	layerIndex *int
	size       int64
	ranges     []manifest.Range // page-aligned, from every run, merged at the end
	firsts     []float64        // first access of each run that touched it, in seconds
	lastRun    int
}

// BuildManifest turns traces of one workload into a prefetch manifest: the image to
// pre-pull, the files downloaded during start-up, and the hot set — every file read in
// any run, its ranges from all runs coalesced to pages, confidence the share of runs that
// touched it, ordered by the median first access. With opt.Budget, the hot set keeps the
// entries that save the most expected seconds within that many bytes.
func BuildManifest(traces []*trace.Trace, opt Options) (*manifest.Manifest, error) {
	if err := CheckWorkloads(traces, opt.Force); err != nil {
		return nil, err
	}
	w := traces[0].Workload
	m := manifest.New(opt.Name)
	if m.Metadata.Name == "" {
		m.Metadata.Name = manifestName(w)
	}
	m.Spec.Tenant = opt.Tenant
	m.Spec.Runs = len(traces)
	m.Spec.BudgetBytes = max(opt.Budget, 0)
	m.Spec.Workload = manifest.Workload{Image: w.Image, Command: w.Command}
	if manifest.ValidDigest(w.ImageDigest) {
		m.Spec.Workload.Digest = w.ImageDigest
	}
	if w.Image != "" {
		m.Spec.Workload.Command = nil
		m.Spec.Images = []manifest.Image{{Ref: w.Image, Digest: m.Spec.Workload.Digest, Size: imageSize(traces)}}
	}
	m.Spec.Artifacts = artifacts(traces)
	m.Spec.HotSet = hotSet(traces, m.Spec.Artifacts, opt)
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("advisor: built an invalid manifest: %w", err)
	}
	return m, nil
}

func hotSet(traces []*trace.Trace, arts []manifest.Artifact, opt Options) []manifest.HotEntry {
	downloaded := map[string]bool{}
	for _, a := range arts {
		downloaded[a.Path] = true
	}
	files := map[fileKey]*hotFile{}
	for ti, t := range traces {
		for _, f := range t.Files {
			key, idx, ok := hotKey(f)
			if !ok || downloaded[key.path] {
				continue
			}
			h := files[key]
			if h == nil {
				h = &hotFile{key: key, layerIndex: idx, lastRun: -1}
				files[key] = h
			}
			h.size = max(h.size, f.Size)
			first := f.Ranges[0].First
			for _, r := range f.Ranges {
				first = min(first, r.First)
				off := r.Off / pageSize * pageSize
				end := (r.End() + pageSize - 1) / pageSize * pageSize
				h.ranges = append(h.ranges, manifest.Range{Off: off, Len: end - off})
			}
			if h.lastRun != ti {
				h.lastRun = ti
				h.firsts = append(h.firsts, secs(first))
			} else {
				h.firsts[len(h.firsts)-1] = min(h.firsts[len(h.firsts)-1], secs(first))
			}
		}
	}
	disk := measureLimits(traces, opt.Limits).Disk
	var entries []manifest.HotEntry
	for _, h := range files {
		e := manifest.HotEntry{
			Layer:         h.key.layer,
			LayerIndex:    h.layerIndex,
			Path:          h.key.path,
			Size:          h.size,
			Ranges:        coalesce(h.ranges),
			FirstAccessNs: int64(median(h.firsts) * 1e9),
			Confidence:    float64(len(h.firsts)) / float64(len(traces)),
		}
		e.ExpectedSavedSeconds = e.Confidence * float64(e.Bytes()) / disk
		entries = append(entries, e)
	}
	slices.SortFunc(entries, byFirstAccess)
	weights := make([]int64, len(entries))
	values := make([]float64, len(entries))
	for i, e := range entries {
		weights[i], values[i] = e.Bytes(), e.ExpectedSavedSeconds
	}
	var chosen []manifest.HotEntry
	for _, i := range choose(weights, values, opt.Budget) {
		chosen = append(chosen, entries[i])
	}
	if len(chosen) > manifest.DefaultMaxEntries {
		// Keep the manifest readable by every agent: drop the entries that save least.
		slices.SortStableFunc(chosen, func(a, b manifest.HotEntry) int {
			return cmp.Compare(b.ExpectedSavedSeconds, a.ExpectedSavedSeconds)
		})
		chosen = chosen[:manifest.DefaultMaxEntries]
		slices.SortFunc(chosen, byFirstAccess)
	}
	for i := range chosen {
		chosen[i].Order = i
	}
	return chosen
}

func byFirstAccess(a, b manifest.HotEntry) int {
	return cmp.Or(cmp.Compare(a.FirstAccessNs, b.FirstAccessNs), cmp.Compare(a.Path, b.Path), cmp.Compare(a.Layer, b.Layer))
}

// hotKey says where the agent will find f: in an image layer by digest and relative
// path, or on the host by absolute path. Files it cannot find on another node (the
// container's writable layer, volumes, pseudo-filesystems, devices) are left out.
func hotKey(f trace.File) (fileKey, *int, bool) {
	if f.Kind == trace.KindDevice || len(f.Ranges) == 0 || !usablePath(f.Path) {
		return fileKey{}, nil, false
	}
	p := path.Clean(f.Path)
	if f.Layer != nil {
		if f.Layer.Path != "" && usablePath(f.Layer.Path) {
			p = path.Clean(f.Layer.Path) // the layer's entry, not the link that was opened
		}
		if f.Layer.Where != "image" || !manifest.ValidDigest(f.Layer.Digest) || p == "/" {
			return fileKey{}, nil, false
		}
		idx := f.Layer.Index
		return fileKey{layer: f.Layer.Digest, path: p[1:]}, &idx, true
	}
	for _, pseudo := range []string{"/proc/", "/sys/", "/dev/"} {
		if strings.HasPrefix(p, pseudo) {
			return fileKey{}, nil, false
		}
	}
	return fileKey{path: p}, nil, true
}

// usablePath reports whether a traced path can go into a manifest: absolute, valid
// UTF-8, without NUL (the kernel side copies raw bytes).
func usablePath(p string) bool {
	return strings.HasPrefix(p, "/") && utf8.ValidString(p) && !strings.ContainsRune(p, 0)
}

// coalesce sorts ranges and merges those that overlap or touch.
func coalesce(rs []manifest.Range) []manifest.Range {
	slices.SortFunc(rs, func(a, b manifest.Range) int { return cmp.Compare(a.Off, b.Off) })
	var out []manifest.Range
	for _, r := range rs {
		if n := len(out); n > 0 && r.Off <= out[n-1].End() {
			out[n-1].Len = max(out[n-1].End(), r.End()) - out[n-1].Off
			continue
		}
		out = append(out, r)
	}
	return out
}

// artifacts lists the files downloaded during start-up: files of kind weights or other,
// outside the image's layers, of at least trace.MinArtifactSize, that the workload wrote from
// a connection in at least one run (a file written from nothing the trace saw arrive, a
// compilation cache or a log, is no download an agent could stage). Size is the largest
// seen (the bytes written, where the recorder could not see the file at the end), origin the URL (or else the peer address) the trace attributes the
// writes to, preferring a URL over an address and the most frequent otherwise. The digest
// is kept only when every run that wrote the file recorded one and all agree: a file
// whose content differs between runs (a moving "latest" revision, or a download cut
// short) has no single digest for an agent to check, and one run without a digest (out
// of time, or the container was gone) cannot vouch for the others.
func artifacts(traces []*trace.Trace) []manifest.Artifact {
	type seen struct {
		manifest.Artifact
		digests map[string]int // by digest, "" for a run without one
		origins map[string]int
	}
	byPath := map[string]*seen{}
	for _, t := range traces {
		for _, f := range t.Files {
			size := f.Size
			if f.Digest == "" {
				size = max(size, f.WrittenBytes) // the recorder did not see the file at the end
			}
			if f.WrittenBytes == 0 || (f.Kind != trace.KindWeights && f.Kind != trace.KindOther) ||
				(f.Layer != nil && f.Layer.Where == "image") || size < trace.MinArtifactSize || !usablePath(f.Path) {
				continue
			}
			p := path.Clean(f.Path)
			a := byPath[p]
			if a == nil {
				a = &seen{Artifact: manifest.Artifact{Path: p}, digests: map[string]int{}, origins: map[string]int{}}
				byPath[p] = a
			}
			a.Size = max(a.Size, size)
			a.digests[f.Digest]++
			if f.Origin != "" {
				a.origins[f.Origin]++
			}
		}
	}
	var out []manifest.Artifact
	for _, a := range byPath {
		if len(a.digests) == 1 {
			for d := range a.digests {
				if manifest.ValidDigest(d) {
					a.Digest = d
				}
			}
		}
		if a.Origin = likeliestOrigin(a.origins); a.Origin == "" {
			continue
		}
		out = append(out, a.Artifact)
	}
	slices.SortFunc(out, func(a, b manifest.Artifact) int { return cmp.Compare(a.Path, b.Path) })
	return out
}

// likeliestOrigin picks a URL over a bare address, then the origin most runs saw, then
// the first in order.
func likeliestOrigin(counts map[string]int) string {
	best, bestN := "", 0
	for o, n := range counts {
		isURL, bestURL := strings.Contains(o, "://"), strings.Contains(best, "://")
		if best == "" || (isURL && !bestURL) || (isURL == bestURL && (n > bestN || n == bestN && o < best)) {
			best, bestN = o, n
		}
	}
	return best
}

func imageSize(traces []*trace.Trace) int64 {
	for _, t := range traces {
		if t.Pull == nil {
			continue
		}
		var n int64
		for _, l := range t.Pull.Layers {
			n += l.Size
		}
		return n
	}
	return 0
}

var notName = regexp.MustCompile(`[^a-z0-9-]+`)

// manifestName derives a Kubernetes-style name from the workload: the image's repository
// name, or the command's program name.
func manifestName(w trace.Workload) string {
	s := w.Image
	if s == "" && len(w.Command) > 0 {
		s = w.Command[0]
	}
	s = path.Base(s)
	s, _, _ = strings.Cut(s, "@")
	s, _, _ = strings.Cut(s, ":")
	s = strings.Trim(notName.ReplaceAllString(strings.ToLower(s), "-"), "-")
	if len(s) > 63 {
		s = s[:63]
	}
	if s == "" {
		return "workload"
	}
	return s
}
