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
// entries in image layers are exported, each path once. A hot set the format cannot carry
// as it is (a path the tool would alter or skip, a list over the tool's size limit) is an
// error, and nothing is written: the tool would otherwise prefetch less than the list says,
// without a word.
func Export(w io.Writer, m *manifest.Manifest, format string) error {
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
		return errors.New("export: the hot set has no files of image layers (are these traces of a container?)")
	}
	if err := fits(paths, format); err != nil {
		return err
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
		for i, p := range paths {
			e := entry{Path: p, ManifestDigest: m.Spec.Workload.Digest}
			if layers[i] >= 0 {
				e.LayerIndex = &layers[i]
			}
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
	case ExportNydus, ExportOverlaybd:
		for _, p := range paths {
			fmt.Fprintf(bw, "/%s\n", p)
		}
	case ExportSOCI:
		abs := make([]string, len(paths))
		for i, p := range paths {
			abs[i] = "/" + p
		}
		if err := json.NewEncoder(bw).Encode(abs); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// fits checks that format carries every path unaltered.
func fits(paths []string, format string) error {
	var bad func(p string) bool
	var why string
	switch format {
	case ExportEStargz:
		return nil
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
		return fmt.Errorf("export: unknown format %q (want one of %v)", format, ExportFormats)
	}
	var unfit []string
	size := 0
	for _, p := range paths {
		size += len(p) + 2
		if bad(p) {
			unfit = append(unfit, p)
		}
	}
	if len(unfit) > 0 {
		ex := unfit[:min(3, len(unfit))]
		return fmt.Errorf("export %s: %d of %d paths cannot be written as they are (%s): %q",
			format, len(unfit), len(paths), why, ex)
	}
	if format == ExportOverlaybd && size > overlaybdMaxList {
		return fmt.Errorf("export %s: the list of %d paths is %d bytes; overlaybd refuses a list over %d bytes whole (bound the hot set with --budget)",
			format, len(paths), size, overlaybdMaxList)
	}
	return nil
}
