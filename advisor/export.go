package advisor

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/coldtrace/coldtrace/manifest"
)

// The hot-set export formats of the lazy-pull snapshotters' tools. Each was checked against
// the source of the tool that reads it (see export_test.go).
const (
	// ExportEStargz is the record list that `ctr-remote image optimize --record-out`
	// writes (stargz-snapshotter's analyzer/recorder): one JSON object per line,
	// {"path":"usr/bin/python3","manifestDigest":"sha256:...","layerIndex":2}, the path
	// relative to the root without a leading slash, the layer the upper-most one holding it.
	ExportEStargz = "estargz"
	// ExportNydus is the prefetch list that dragonflyoss/nydus reads two ways: from standard
	// input by `nydus-image create --prefetch-policy fs` (builder/src/core/prefetch.rs,
	// get_patterns: each line trimmed, one that is not absolute dropped) and as the file of
	// `nydusd --prefetch-files` (src/bin/nydusd/main.rs: lines, trimmed, blank ones skipped),
	// which nydus-snapshotter passes from its prefetch endpoint. One absolute path a line.
	ExportNydus = "nydus"
	// ExportSOCI is the file of `soci create|convert --prefetch-files-json`
	// (awslabs/soci-snapshotter cmd/soci/commands/internal/prefetch.go: a JSON array of
	// strings, each trimmed of spaces; soci/soci_index.go buildPrefetchLayer cleans each
	// to a root-relative name and looks it up in the zTOCs, upper-most layer first).
	ExportSOCI = "soci"
	// ExportOverlaybd is the file list of overlaybd's DynamicPrefetcher
	// (containerd/overlaybd src/prefetch.cpp), read from the recordTracePath that the
	// snapshotter label containerd.io/snapshot/overlaybd/record-trace-path sets when the
	// file is not empty and does not start with the binary trace's magic: one path a line,
	// trimmed of spaces, each matched against overlaybdPath and resolved in the image's
	// merged filesystem; a file over overlaybdMaxList bytes is refused whole.
	ExportOverlaybd = "overlaybd"
)

// ExportFormats lists the formats Export writes.
var ExportFormats = []string{ExportEStargz, ExportNydus, ExportSOCI, ExportOverlaybd}

// overlaybdPath is the regular expression DynamicPrefetcher::invalid_abs_path matches a
// line against (it skips, silently, a line that does not match), and overlaybdMaxList is
// its MAX_FILE_SIZE.
var overlaybdPath = regexp.MustCompile(`^((/)?((([a-zA-Z0-9_\-.]+/)*[a-zA-Z0-9_\-.]+/?)|(\.\.?))?)$`)

const overlaybdMaxList = 65536

// Export writes the hot set of m in the list format of a lazy-pull snapshotter, in the
// manifest's first-access order. These tools prefetch whole files of the image, so only
// entries in image layers are exported, each path once. A path the tool would alter or
// skip without a word, and for overlaybd what would push the list over its size limit
// (the latest-needed paths first), is left out of the list and named in left, with why:
// the list says exactly what the tool will prefetch. It is an error when nothing is left.
func Export(w io.Writer, m *manifest.Manifest, format string) (left []string, err error) {
	var paths []string
	var layers []int
	seen := map[string]bool{}
	for _, e := range m.Spec.HotSet {
		if e.Layer == "" || seen[e.Path] {
			continue
		}
		seen[e.Path] = true
		idx := -1
		if e.LayerIndex != nil {
			idx = *e.LayerIndex
		}
		paths, layers = append(paths, e.Path), append(layers, idx)
	}
	if len(paths) == 0 {
		return nil, errors.New("export: the hot set has no files of image layers (are these traces of a container?)")
	}
	keep, left, err := fit(paths, format)
	if err != nil {
		return nil, err
	}
	if len(keep) == 0 {
		return left, fmt.Errorf("export %s: none of the %d paths can be written: %s", format, len(paths), strings.Join(left[:min(3, len(left))], "; "))
	}
	bw := bufio.NewWriter(w)
	switch format {
	case ExportEStargz:
		type entry struct {
			Path           string `json:"path"`
			ManifestDigest string `json:"manifestDigest,omitempty"`
			LayerIndex     *int   `json:"layerIndex,omitempty"`
		}
		enc := json.NewEncoder(bw)
		for _, i := range keep {
			e := entry{Path: paths[i], ManifestDigest: m.Spec.Workload.Digest}
			if layers[i] >= 0 {
				e.LayerIndex = &layers[i]
			}
			if err := enc.Encode(e); err != nil {
				return left, err
			}
		}
	case ExportNydus, ExportOverlaybd:
		for _, i := range keep {
			fmt.Fprintf(bw, "/%s\n", paths[i])
		}
	case ExportSOCI:
		abs := make([]string, len(keep))
		for j, i := range keep {
			abs[j] = "/" + paths[i]
		}
		if err := json.NewEncoder(bw).Encode(abs); err != nil {
			return left, err
		}
	}
	return left, bw.Flush()
}

// fit returns the indexes of the paths that format carries unaltered, and a line for each
// path it leaves out.
func fit(paths []string, format string) (keep []int, left []string, err error) {
	var bad func(p string) bool
	var why string
	switch format {
	case ExportEStargz:
		bad = func(string) bool { return false }
	case ExportNydus:
		// Rust reads the list into a String, which fails on bytes that are not UTF-8; each
		// line is trimmed, so a newline splits a path and white space at its end is lost.
		bad = func(p string) bool {
			return !utf8.ValidString(p) || strings.ContainsAny(p, "\n\r") || p != strings.TrimRightFunc(p, unicode.IsSpace)
		}
		why = "nydus reads UTF-8 lines, one path a line, and trims white space from each"
	case ExportSOCI:
		// JSON strings hold UTF-8 only; soci trims each and cleans it as a path.
		bad = func(p string) bool {
			return !utf8.ValidString(p) || p != strings.TrimRightFunc(p, unicode.IsSpace) || path.Clean("/"+p) != "/"+p
		}
		why = "soci reads UTF-8 JSON strings, trims white space from each and cleans it as a path"
	case ExportOverlaybd:
		bad = func(p string) bool { return !overlaybdPath.MatchString("/" + p) }
		why = "overlaybd skips a path with a character other than A-Z a-z 0-9 _ - . /"
	default:
		return nil, nil, fmt.Errorf("export: unknown format %q (want one of %v)", format, ExportFormats)
	}
	size := 0
	for i, p := range paths {
		switch line := len(p) + 2; {
		case bad(p):
			left = append(left, fmt.Sprintf("%q: %s", p, why))
		case format == ExportOverlaybd && size+line > overlaybdMaxList:
			left = append(left, fmt.Sprintf("%q: overlaybd refuses a list over %d bytes whole (bound the hot set with --budget)", p, overlaybdMaxList))
		default:
			size += line
			keep = append(keep, i)
		}
	}
	return keep, left, nil
}
