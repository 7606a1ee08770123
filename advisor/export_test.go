package advisor

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coldtrace/coldtrace/manifest"
)

func exportManifest() *manifest.Manifest {
	m := manifest.New("x")
	zero, two := 0, 2
	m.Spec.Workload.Digest = testDigest
	m.Spec.HotSet = []manifest.HotEntry{
		{Layer: testLayer, LayerIndex: &two, Path: "usr/bin/python3", Ranges: []manifest.Range{{Off: 0, Len: 4096}}, Confidence: 1},
		{Path: "/host/only", Ranges: []manifest.Range{{Off: 0, Len: 4096}}, Confidence: 1},
		{Layer: testLayer, LayerIndex: &zero, Path: "etc/ld.so.cache", Ranges: []manifest.Range{{Off: 0, Len: 4096}}, Confidence: 1},
	}
	return m
}

func TestExports(t *testing.T) {
	want := map[string]string{
		ExportEStargz: `{"path":"usr/bin/python3","manifestDigest":"` + testDigest + `","layerIndex":2}` + "\n" +
			`{"path":"etc/ld.so.cache","manifestDigest":"` + testDigest + `","layerIndex":0}` + "\n",
		ExportNydus:     "/usr/bin/python3\n/etc/ld.so.cache\n",
		ExportOverlaybd: "/usr/bin/python3\n/etc/ld.so.cache\n",
		ExportSOCI:      `["/usr/bin/python3","/etc/ld.so.cache"]` + "\n",
	}
	for _, f := range ExportFormats {
		var buf bytes.Buffer
		if _, err := Export(&buf, exportManifest(), f); err != nil {
			t.Fatal(err)
		}
		if buf.String() != want[f] {
			t.Errorf("%s:\n got %q\nwant %q", f, buf.String(), want[f])
		}
	}
}

func TestExportRefuses(t *testing.T) {
	var buf bytes.Buffer
	if _, err := Export(&buf, exportManifest(), "tar"); err == nil || !strings.Contains(err.Error(), "unknown format") {
		t.Errorf("unknown format: %v", err)
	}
	m := exportManifest()
	m.Spec.HotSet = m.Spec.HotSet[1:2]
	if _, err := Export(&buf, m, ExportNydus); err == nil || !strings.Contains(err.Error(), "image layers") {
		t.Errorf("host-only hot set: %v", err)
	}
}

// The readers below do what each tool does with the file, line for line from its source, so
// that the tests check the export against the tool rather than against Export itself.

// nydusdPrefetchFiles reads the file of `nydusd --prefetch-files` (dragonflyoss/nydus
// src/bin/nydusd/main.rs): std::fs::read_to_string, which fails on bytes that are not
// UTF-8, then
//
//	for line in content.lines() {
//	    if line.is_empty() || line.trim().is_empty() { continue; }
//	    prefetch_files.push(line.trim().to_string());
//	}
func nydusdPrefetchFiles(b []byte) ([]string, error) {
	if !utf8.Valid(b) {
		return nil, errors.New("stream did not contain valid UTF-8")
	}
	var files []string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if line != "" {
			files = append(files, line)
		}
	}
	return files, nil
}

// nydusImagePatterns reads standard input as `nydus-image create --prefetch-policy fs`
// does (builder/src/core/prefetch.rs generate_patterns): each line trimmed, then
//
//	if !file_trimmed.is_absolute() { warn!("Illegal file path {} specified, should be absolute path", file); continue; }
func nydusImagePatterns(b []byte) []string {
	var patterns []string
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if p := strings.TrimSpace(line); strings.HasPrefix(p, "/") {
			patterns = append(patterns, p)
		}
	}
	return patterns
}

// sociPrefetchPaths reads the file of `soci create --prefetch-files-json`
// (awslabs/soci-snapshotter cmd/soci/commands/internal/prefetch.go loadPrefetchFilesFromJSON:
// json.Unmarshal(data, &files) into []string, strings.TrimSpace each, drop the empty ones)
// and names each as soci/soci_index.go buildPrefetchLayer (v0.16.1) does before it looks
// the name up in the zTOCs:
//
//	prefetchPath = strings.TrimPrefix(filepath.Clean(string(os.PathSeparator)+prefetchPath), string(os.PathSeparator))
func sociPrefetchPaths(b []byte) ([]string, error) {
	var files []string
	if err := json.Unmarshal(b, &files); err != nil {
		return nil, err
	}
	var names []string
	for _, f := range files {
		if f = strings.TrimSpace(f); f != "" {
			names = append(names, strings.TrimPrefix(filepath.Clean("/"+f), "/"))
		}
	}
	return names, nil
}

// overlaybdDynamicList reads a prefetch list as overlaybd's DynamicPrefetcher::reload does
// (containerd/overlaybd src/prefetch.cpp):
//
//	if (filesize > MAX_FILE_SIZE) { LOG_ERROR_RETURN(0, -1, "prefetch list file too large"); }
//	while (std::getline(file, line)) {
//	    line = trim(line, ' ');
//	    if (line.empty() || !invalid_abs_path(line)) { continue; }
//	    files.push_back(line);
//	}
//
// with MAX_FILE_SIZE = 65536 and invalid_abs_path matching the regular expression below.
// new_prefetcher takes the file for this list, not a binary trace, when it is not empty
// and its header's magic is not TRACE_MAGIC (3270449184).
func overlaybdDynamicList(b []byte) ([]string, error) {
	if len(b) > 65536 {
		return nil, errors.New("prefetch list file too large")
	}
	if len(b) == 0 || binary.LittleEndian.Uint32(append(b, 0, 0, 0)[:4]) == 3270449184 {
		return nil, errors.New("not a dynamic prefetch list")
	}
	re := regexp.MustCompile(`^(` + `((\/)?((([a-zA-Z0-9_\-\.]+\/)*[a-zA-Z0-9_\-\.]+\/?)|(\.\.?))?)` + `)$`)
	var files []string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		line = strings.Trim(line, " ")
		if line != "" && re.MatchString(line) {
			files = append(files, line)
		}
	}
	return files, nil
}

// TestExportsReadBack reads each export of a known manifest back as its tool does: the tool
// must get every image-layer file of the hot set, in first-access order, by the name it
// resolves from the image's root.
func TestExportsReadBack(t *testing.T) {
	abs := []string{"/usr/bin/python3", "/etc/ld.so.cache"}
	export := func(f string) []byte {
		var buf bytes.Buffer
		if _, err := Export(&buf, exportManifest(), f); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	nydus := export(ExportNydus)
	if got, err := nydusdPrefetchFiles(nydus); err != nil || !slices.Equal(got, abs) {
		t.Errorf("nydusd --prefetch-files reads %q, %v; want %q", got, err, abs)
	}
	if got := nydusImagePatterns(nydus); !slices.Equal(got, abs) {
		t.Errorf("nydus-image --prefetch-policy fs reads %q, want %q", got, abs)
	}
	if got, err := sociPrefetchPaths(export(ExportSOCI)); err != nil || !slices.Equal(got, []string{"usr/bin/python3", "etc/ld.so.cache"}) {
		t.Errorf("soci --prefetch-files-json reads %q, %v", got, err)
	}
	if got, err := overlaybdDynamicList(export(ExportOverlaybd)); err != nil || !slices.Equal(got, abs) {
		t.Errorf("overlaybd reads %q, %v; want %q", got, err, abs)
	}
}

// TestExportLeavesOutUnfit: a path the tool would alter or skip is left out of the list,
// named with why; the others are written, and estargz takes every path.
func TestExportLeavesOutUnfit(t *testing.T) {
	read := map[string]func([]byte) ([]string, error){ExportNydus: nydusdPrefetchFiles, ExportOverlaybd: overlaybdDynamicList,
		ExportSOCI: func(b []byte) ([]string, error) {
			names, err := sociPrefetchPaths(b)
			for i := range names {
				names[i] = "/" + names[i]
			}
			return names, err
		}}
	for _, c := range []struct{ format, path string }{
		{ExportNydus, "opt/app/notes "},
		{ExportNydus, "opt/two\nlines"},
		{ExportNydus, "opt/latin1-\xe9"},
		{ExportSOCI, "opt/app/notes\t"},
		{ExportSOCI, "opt/latin1-\xe9"},
		{ExportOverlaybd, "usr/lib/x86_64-linux-gnu/libstdc++.so.6"},
		{ExportOverlaybd, "opt/app/my notes"},
	} {
		m := exportManifest()
		m.Spec.HotSet[0].Path = c.path
		var buf bytes.Buffer
		left, err := Export(&buf, m, c.format)
		if err != nil || len(left) != 1 || !strings.Contains(left[0], fmt.Sprintf("%q", c.path)) {
			t.Errorf("%s %q: left %q, %v", c.format, c.path, left, err)
		}
		if got, err := read[c.format](buf.Bytes()); err != nil || !slices.Equal(got, []string{"/etc/ld.so.cache"}) {
			t.Errorf("%s %q: the tool reads %q, %v; want the other path alone", c.format, c.path, got, err)
		}
		if left, err := Export(&buf, m, ExportEStargz); err != nil || len(left) != 0 {
			t.Errorf("estargz %q: left %q, %v", c.path, left, err)
		}
	}
	// Nothing left to write is an error.
	m := exportManifest()
	m.Spec.HotSet = m.Spec.HotSet[:1]
	m.Spec.HotSet[0].Path = "opt/app/my notes"
	var buf bytes.Buffer
	if _, err := Export(&buf, m, ExportOverlaybd); err == nil || buf.Len() != 0 {
		t.Errorf("no path fits: %v, wrote %d bytes", err, buf.Len())
	}
}

// TestExportOverlaybdLimit: the largest list overlaybd takes is exported whole; a path that
// would take it over the limit is left out.
func TestExportOverlaybdLimit(t *testing.T) {
	one := 0
	hot := func(n, lastLen int) *manifest.Manifest {
		m := manifest.New("x")
		for i := range n {
			p := fmt.Sprintf("opt/f%0*d", 62-len("opt/f"), i) // a 64-byte line
			if i == n-1 {
				p = p[:lastLen]
			}
			m.Spec.HotSet = append(m.Spec.HotSet, manifest.HotEntry{Layer: testLayer, LayerIndex: &one, Path: p, Ranges: []manifest.Range{{Off: 0, Len: 1}}, Confidence: 1})
		}
		return m
	}
	var buf bytes.Buffer
	if _, err := Export(&buf, hot(1024, 62), ExportOverlaybd); err != nil {
		t.Fatal(err)
	}
	got, err := overlaybdDynamicList(buf.Bytes())
	if buf.Len() != 65536 || err != nil || len(got) != 1024 {
		t.Fatalf("a %d-byte list: overlaybd reads %d paths, %v", buf.Len(), len(got), err)
	}
	buf.Reset()
	m := hot(1024, 62)
	m.Spec.HotSet = append(m.Spec.HotSet, manifest.HotEntry{Layer: testLayer, LayerIndex: &one, Path: "", Ranges: []manifest.Range{{Off: 0, Len: 1}}})
	left, err := Export(&buf, m, ExportOverlaybd)
	if err != nil || len(left) != 1 || !strings.Contains(left[0], "over 65536 bytes") || buf.Len() != 65536 {
		t.Errorf("65538 bytes: left %q, %v, wrote %d", left, err, buf.Len())
	}
}

// FuzzExportReadBack: for any path, an export either leaves it out (and fails, having
// nothing else to write) or its tool reads back exactly that path.
func FuzzExportReadBack(f *testing.F) {
	for _, p := range []string{"usr/bin/python3", "a b", "x ", "é", "\xe9", "a//b", "a/./b", "libstdc++.so", "", "."} {
		f.Add(p)
	}
	read := map[string]func([]byte) ([]string, error){
		ExportNydus: nydusdPrefetchFiles,
		ExportSOCI: func(b []byte) ([]string, error) {
			names, err := sociPrefetchPaths(b)
			for i := range names {
				names[i] = "/" + names[i]
			}
			return names, err
		},
		ExportOverlaybd: overlaybdDynamicList,
	}
	f.Fuzz(func(t *testing.T, p string) {
		m := exportManifest()
		m.Spec.HotSet = m.Spec.HotSet[:1]
		m.Spec.HotSet[0].Path = p
		for format, readBack := range read {
			var buf bytes.Buffer
			left, err := Export(&buf, m, format)
			if err != nil || len(left) > 0 {
				if err == nil || len(left) != 1 || buf.Len() != 0 {
					t.Errorf("%s %q: left %q, %v, wrote %d bytes", format, p, left, err, buf.Len())
				}
				continue
			}
			if got, err := readBack(buf.Bytes()); err != nil || !slices.Equal(got, []string{"/" + p}) {
				t.Errorf("%s %q: read back %q, %v", format, p, got, err)
			}
		}
	})
}
