package advisor

import (
	"bytes"
	"strings"
	"testing"

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
		if err := Export(&buf, exportManifest(), f); err != nil {
			t.Fatal(err)
		}
		if buf.String() != want[f] {
			t.Errorf("%s:\n got %q\nwant %q", f, buf.String(), want[f])
		}
	}
}

func TestExportRefuses(t *testing.T) {
	var buf bytes.Buffer
	if err := Export(&buf, exportManifest(), "tar"); err == nil || !strings.Contains(err.Error(), "unknown format") {
		t.Errorf("unknown format: %v", err)
	}
	m := exportManifest()
	m.Spec.HotSet = m.Spec.HotSet[1:2]
	if err := Export(&buf, m, ExportNydus); err == nil || !strings.Contains(err.Error(), "image layers") {
		t.Errorf("host-only hot set: %v", err)
	}
}
