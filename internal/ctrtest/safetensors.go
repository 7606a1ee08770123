package ctrtest

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
)

// Tensor is one tensor of a safetensors file; Off and Len are absolute in the file.
type Tensor struct {
	Name  string
	DType string
	Shape []int64
	Off   int64
	Len   int64
}

// Safetensors returns a valid safetensors file holding n F16 tensors of about size/n bytes
// each (size in all), filled with deterministic pseudo-random data that, like real weights,
// hardly compresses, and the tensors with their offsets in the file.
//
// The format: an 8-byte little-endian header length, a JSON header mapping each tensor
// name to its dtype, shape and data_offsets (relative to the end of the header), then the
// data.
func Safetensors(size int64, n int) ([]byte, []Tensor) {
	type entry struct {
		DType   string   `json:"dtype"`
		Shape   []int64  `json:"shape"`
		Offsets [2]int64 `json:"data_offsets"`
	}
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	tensors := make([]Tensor, n)
	var off int64
	for i := range tensors {
		end := size * int64(i+1) / int64(n) &^ 1 // F16: whole 2-byte elements
		if i == n-1 {
			end = size &^ 1
		}
		name := fmt.Sprintf("model.layers.%d.weight", i)
		shape := []int64{(end - off) / 2}
		header[name] = entry{DType: "F16", Shape: shape, Offsets: [2]int64{off, end}}
		tensors[i] = Tensor{Name: name, DType: "F16", Shape: shape, Off: off, Len: end - off}
		off = end
	}
	js, err := json.Marshal(header)
	if err != nil {
		panic(err) // a map of plain values always marshals
	}
	// Pad the header with spaces so that the data starts 8-byte aligned, as writers do.
	for (8+len(js))%8 != 0 {
		js = append(js, ' ')
	}
	start := int64(8 + len(js))
	buf := make([]byte, start+off)
	binary.LittleEndian.PutUint64(buf, uint64(len(js)))
	copy(buf[8:], js)
	rand.NewChaCha8([32]byte{1}).Read(buf[start:])
	for i := range tensors {
		tensors[i].Off += start
	}
	return buf, tensors
}
