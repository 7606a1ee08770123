package collector

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/bpf"
	"github.com/coldtrace/coldtrace/trace"
)

func TestRequestURL(t *testing.T) {
	cases := []struct{ req, want string }{
		{"GET /shard HTTP/1.0\r\nHost: 127.0.0.1:8080\r\n\r\n", "http://127.0.0.1:8080/shard"},
		{"GET /m/a.safetensors?x=1 HTTP/1.1\r\nUser-Agent: x\r\nhost: hub.example:80\r\n\r\n", "http://hub.example:80/m/a.safetensors?x=1"},
		{"GET /shard HTTP/1.0\r\n\r\n", "http://10.0.0.1:80/shard"},                   // no Host: the peer
		{"GET /shard HTTP/1.1\r\nAccept: */*\r\nX-Cut: ", "http://10.0.0.1:80/shard"}, // headers cut at 256 bytes
		{"GET /shard HTTP/1.0\r\nHost: evil/x\r\n\r\n", "http://10.0.0.1:80/shard"},   // not a host
		{"GET /sh", ""}, // request line cut short
		{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", ""}, // TLS
		{"get /x HTTP/1.0\r\n\r\n", ""},                      // not a method
		{"GET x HTTP/1.0\r\n\r\n", ""},                       // not an origin-form target
		{"GET /x HTTP/2.0\r\n\r\n", ""},                      // not HTTP/1
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", ""},             // HTTP/2 preface
		{strings.Repeat("A", 300), ""},
	}
	for _, c := range cases {
		if got := RequestURL([]byte(c.req), "10.0.0.1:80"); got != c.want {
			t.Errorf("%q: %q, want %q", c.req, got, c.want)
		}
	}
}

func FuzzRequestURL(f *testing.F) {
	f.Add([]byte("GET /shard HTTP/1.0\r\nHost: 127.0.0.1:8080\r\n\r\n"), "10.0.0.1:80")
	f.Add([]byte("POST /v1 HTTP/1.1\r\nhost:x\r\n"), "")
	f.Fuzz(func(t *testing.T, req []byte, remote string) {
		u := RequestURL(req, remote)
		if u != "" && (!strings.HasPrefix(u, "http://") || strings.ContainsAny(u, " \r\n\x00")) {
			t.Fatalf("%q: URL %q", req, u)
		}
	})
}

// TestDigestWritten replays a download: a connection whose first bytes are an HTTP
// request, and the bytes a process wrote to two files of the host. The written model gets
// the sha256 of its content and the request's URL; a file replaced by another inode at its
// path, which is not the file written, gets no digest and a warning.
func TestDigestWritten(t *testing.T) {
	dir := t.TempDir()
	model, replaced := filepath.Join(dir, "model.safetensors"), filepath.Join(dir, "b.bin")
	data := make([]byte, 3<<20+5)
	rand.Read(data)
	for _, p := range []string{model, replaced} {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stat := func(p string) fileKey {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return fileKey{kernelDev(st.Dev), st.Ino}
	}
	mk, rk := stat(model), stat(replaced)
	// Another inode at the same path; the written one lives on under another name.
	if err := os.Rename(replaced, replaced+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(replaced, data, 0o644); err != nil {
		t.Fatal(err)
	}

	const pid, sk = 4242, 0xffff0000
	c := New(t0, Options{})
	open := func(fd int32, p string, k fileKey) []byte {
		e := bpf.EventOpen{H: hdr(bpf.EvOpen, pid, time.Millisecond), Dirfd: -100, Fd: fd, Mode: sIFREG | 0o644, Dev: k.dev, Ino: k.ino}
		cstr(e.Path[:], p)
		return bpf.Encode(&e)
	}
	conn := bpf.EventConn{H: hdr(bpf.EvConn, pid, time.Millisecond), Sk: sk, Family: 2, Sport: 40000, Dport: 8000, Dir: bpf.DirConnect, Daddr: [16]uint8{10, 0, 0, 1}}
	req := bpf.EventPayload{H: hdr(bpf.EvPayload, pid, time.Millisecond), Sk: sk}
	req.Len = uint32(copy(req.Data[:], "GET /m/model.safetensors HTTP/1.1\r\nHost: hub.example:8000\r\n\r\n"))
	w1 := bpf.EventWrite{H: bpf.Header{Type: bpf.EvWrite, Pid: pid}, Dev: mk.dev, Ino: mk.ino, Bytes: uint64(len(data)), Sk: sk}
	w2 := bpf.EventWrite{H: bpf.Header{Type: bpf.EvWrite, Pid: pid}, Dev: rk.dev, Ino: rk.ino, Bytes: uint64(len(data))}
	handle(t, c, open(3, model, mk), open(4, replaced, rk), bpf.Encode(&conn), bpf.Encode(&req), bpf.Encode(&w1), bpf.Encode(&w2))

	warnings := c.DigestWritten(context.Background(), true)
	tr := c.Trace(Meta{End: t0 + uint64(time.Second), Outcome: trace.OutcomeExited})
	files := map[string]trace.File{}
	for _, f := range tr.Files {
		files[f.Path] = f
	}
	sum := sha256.Sum256(data)
	want := "sha256:" + hex.EncodeToString(sum[:])
	if f := files[model]; f.Digest != want || f.WrittenBytes != int64(len(data)) || f.Size != int64(len(data)) || f.Origin != "http://hub.example:8000/m/model.safetensors" {
		t.Errorf("model: digest %s, wrote %d, size %d, origin %q; want %s, %d bytes", f.Digest, f.WrittenBytes, f.Size, f.Origin, want, len(data))
	}
	if f := files[replaced]; f.Digest != "" || f.WrittenBytes != int64(len(data)) || f.Origin != "" {
		t.Errorf("replaced: digest %q, wrote %d, origin %q; want no digest, no origin", f.Digest, f.WrittenBytes, f.Origin)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], replaced) {
		t.Errorf("warnings %q, want one about %s", warnings, replaced)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	late := New(t0, Options{})
	handle(t, late, open(3, model, mk), bpf.Encode(&w1))
	if ws := late.DigestWritten(ctx, true); len(ws) != 1 || !strings.Contains(ws[0], "out of time") {
		t.Errorf("out of time: warnings %q", ws)
	}
}
