// Package example is coldtrace's built-in example: a small inference-server-like workload
// with a model download, mmapped weights and a listen, so that a new user can see a real
// phase breakdown with nothing but the binary.
package example

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Sizes of the example's files.
const (
	ModelBytes = 64 << 20 // local weights, read through mmap
	ShardBytes = 32 << 20 // downloaded at start-up
)

// Env is a prepared example: a directory with the model, and a loopback origin serving
// the shard that the workload downloads.
type Env struct {
	Dir string
	URL string
	srv *http.Server
}

// Prepare writes the example's files under dir, drops them from the page cache so that
// the start is cold, and starts the origin on 127.0.0.1.
func Prepare(dir string) (*Env, error) {
	if err := writeEvicted(filepath.Join(dir, "model.safetensors"), ModelBytes); err != nil {
		return nil, err
	}
	cfg := []byte(`{"architectures": ["ExampleForCausalLM"], "hidden_size": 1024, "num_layers": 8}` + "\n")
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644); err != nil {
		return nil, err
	}
	shard := safetensors(ShardBytes)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(shard)))
		w.Write(shard)
	})}
	go srv.Serve(ln)
	return &Env{Dir: dir, URL: "http://" + ln.Addr().String() + "/shard.safetensors", srv: srv}, nil
}

// Close stops the origin.
func (e *Env) Close() error { return e.srv.Close() }

// Command is the workload's command line: this binary's hidden example-workload command.
func (e *Env) Command(self string) []string {
	return []string{self, "example-workload", "--dir", e.Dir, "--url", e.URL}
}

// safetensors returns a file of n bytes in the safetensors layout: an 8-byte header
// length, a JSON header describing eight tensors, then their data.
func safetensors(n int) []byte {
	const headerLen = 4096 - 8
	b := make([]byte, n)
	rand.Read(b[4096:])
	per := (n - 4096) / 8
	header := map[string]any{}
	for i := 0; i < 8; i++ {
		header[fmt.Sprintf("layers.%d.weight", i)] = map[string]any{
			"dtype": "F16", "shape": []int{per / 2}, "data_offsets": []int{i * per, (i + 1) * per},
		}
	}
	h, _ := json.Marshal(header)
	binary.LittleEndian.PutUint64(b, headerLen)
	copy(b[8:], h)
	for i := 8 + len(h); i < 4096; i++ {
		b[i] = ' '
	}
	return b
}

func writeEvicted(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(safetensors(n)); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// Run is the workload: read the config, download the shard, map the local weights and
// touch half of their tensors, read the shard, then listen until killed.
func Run(dir, url string, out io.Writer) error {
	if _, err := os.ReadFile(filepath.Join(dir, "config.json")); err != nil {
		return err
	}
	shardPath := filepath.Join(dir, "shard.safetensors")
	if err := download(url, shardPath); err != nil {
		return err
	}
	sum, err := touchHalf(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		return err
	}
	if _, err := os.ReadFile(shardPath); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "example: weights checksum %d, serving on %s\n", sum, ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		c.Close()
	}
}

func download(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// touchHalf maps the weights and reads one byte per page of every other tensor, as a
// model that loads only some layers onto this device would. The checksum is printed so
// that the reads cannot be optimised away.
func touchHalf(path string) (byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return 0, err
	}
	defer syscall.Munmap(m)
	per := (len(m) - 4096) / 8
	var sum byte
	for i := 0; i < 8; i += 2 {
		start := 4096 + i*per
		for o := start; o < start+per; o += 4096 {
			sum += m[o]
		}
	}
	return sum, nil
}
