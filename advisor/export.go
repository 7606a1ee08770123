package advisor

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/coldtrace/coldtrace/manifest"
)

// The hot-set export formats of the lazy-pull snapshotters' tools.
const (
	// ExportEStargz is the record list that `ctr-remote image optimize --record-out`
	// writes (stargz-snapshotter's analyzer/recorder): one JSON object per line,
	// {"path":"usr/bin/python3","manifestDigest":"sha256:...","layerIndex":2}, the path
	// relative to the root without a leading slash, the layer the upper-most one holding it.
	ExportEStargz = "estargz"
	// ExportNydus is the prefetch list of `nydus-image create --prefetch-policy fs` (read
	// from standard input) and nydusd's prefetch files: one absolute path per line.
	ExportNydus = "nydus"
	// ExportSOCI is the file of `soci create --prefetch-files-json`: a JSON array of paths.
	ExportSOCI = "soci"
	// ExportOverlaybd is overlaybd's dynamic trace-prefetch list (its recordTracePath
	// file in dynamic mode): one absolute path per line.
	ExportOverlaybd = "overlaybd"
)

// ExportFormats lists the formats Export writes.
var ExportFormats = []string{ExportEStargz, ExportNydus, ExportSOCI, ExportOverlaybd}

// Export writes the hot set of m in the list format of a lazy-pull snapshotter, in the
// manifest's first-access order. These tools prefetch whole files of the image, so only
// entries in image layers are exported, each path once.
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
	default:
		return fmt.Errorf("export: unknown format %q (want one of %v)", format, ExportFormats)
	}
	return bw.Flush()
}
