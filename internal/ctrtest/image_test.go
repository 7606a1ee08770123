package ctrtest

import (
	"archive/tar"
	"encoding/binary"
	"encoding/json"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestSafetensors(t *testing.T) {
	buf, tensors := Safetensors(1000, 3)
	hlen := binary.LittleEndian.Uint64(buf)
	var header map[string]json.RawMessage
	if err := json.Unmarshal(buf[8:8+hlen], &header); err != nil {
		t.Fatalf("header: %v", err)
	}
	start := int64(8 + hlen)
	if start%8 != 0 {
		t.Errorf("data starts at %d, not 8-byte aligned", start)
	}
	end := start
	for _, ts := range tensors {
		var e struct {
			DType   string   `json:"dtype"`
			Shape   []int64  `json:"shape"`
			Offsets [2]int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(header[ts.Name], &e); err != nil {
			t.Fatalf("tensor %s: %v", ts.Name, err)
		}
		if e.Offsets[0]+start != ts.Off || e.Offsets[1]-e.Offsets[0] != ts.Len || ts.Off != end {
			t.Errorf("tensor %s: header %v, returned off %d len %d", ts.Name, e.Offsets, ts.Off, ts.Len)
		}
		if e.DType != "F16" || e.Shape[0]*2 != ts.Len {
			t.Errorf("tensor %s: dtype %s shape %v for %d bytes", ts.Name, e.DType, e.Shape, ts.Len)
		}
		end = ts.Off + ts.Len
	}
	if end != int64(len(buf)) {
		t.Errorf("tensors end at %d, file is %d bytes", end, len(buf))
	}
}

func TestColdStartLayers(t *testing.T) {
	cs := ColdStartLayers(t, Sizes{Libs: 10, LibSize: 16, Weights: 1 << 10, Tensors: 4})
	files := func(l v1.Layer) map[string][]byte {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		m := map[string][]byte{}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				return m
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg {
				m["/"+h.Name], _ = io.ReadAll(tr)
			}
		}
	}
	if base := files(cs.Base); len(base["/bin/busybox"]) == 0 {
		t.Error("no /bin/busybox in the base layer")
	}
	libs := files(cs.Libs)
	if len(libs) != 10 || len(cs.LibPaths) != 10 || len(libs[cs.LibPaths[9]]) != 16 {
		t.Errorf("libs layer has %d files, %d paths", len(libs), len(cs.LibPaths))
	}
	w := files(cs.Weights)[WeightsPath]
	if last := cs.Tensors[3]; len(cs.Tensors) != 4 || last.Off+last.Len != int64(len(w)) {
		t.Errorf("weights file of %d bytes, tensors %+v", len(w), cs.Tensors)
	}
}
