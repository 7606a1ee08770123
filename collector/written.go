package collector

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/bpf"
	"github.com/coldtrace/coldtrace/trace"
)

// MinArtifactSize is the size from which a file written during the recording is digested
// as a possible downloaded artifact (with kind weights or other): smaller files are logs,
// locks and caches.
const MinArtifactSize = trace.MinArtifactSize

// MaxDigestBytes bounds the size of a file that DigestWritten hashes.
const MaxDigestBytes = 64 << 30

// writer is what one process wrote to one file.
type writer struct {
	bytes uint64
	sk    uint64 // the connection that fed its writes, 0 if none
}

// written applies the bytes one process wrote to one file, which the kernel holds until
// the recording ends.
func (c *Collector) written(e *bpf.EventWrite) {
	key := fileKey{e.Dev, e.Ino}
	// The counts span the process's life: the init's writes before its exec (runc's to
	// /proc/self and the cgroup files) are in them. Files the workload opened are its own.
	if _, ok := c.files[key]; !ok && c.init != 0 {
		return
	}
	f := c.file(key, e.H.Pid, -1)
	if f.writers == nil {
		f.writers = map[uint32]writer{}
	}
	// Drain sends cumulative counts, so a repeated one replaces the last.
	f.writers[e.H.Pid] = writer{bytes: e.Bytes, sk: e.Sk}
}

// written is the number of bytes the traced processes wrote to f.
func (f *fileState) written() int64 {
	var n int64
	for _, w := range f.writers {
		n += int64(w.bytes)
	}
	return n
}

// payload keeps the first bytes sent on a connection the workload opened.
func (c *Collector) payload(e *bpf.EventPayload) {
	cs := c.connFor(e.Sk, e.H.Pid)
	if cs.request == nil {
		cs.request = append([]byte{}, e.Data[:min(int(e.Len), len(e.Data))]...)
	}
}

// finishWrites sets a file's written bytes and the origin of the process that wrote most
// of them.
func (c *Collector) finishWrites(f *fileState, out *trace.File) {
	out.WrittenBytes = f.written()
	var most uint64
	for _, w := range f.writers {
		if cs, ok := c.conns[w.sk]; ok && w.sk != 0 && w.bytes > most {
			most = w.bytes
			out.Origin = cs.Remote
			if cs.URL != "" {
				out.Origin = cs.URL
			}
		}
	}
}

// RequestURL returns the URL of the plain-HTTP/1.x request at the start of req, a
// connection's first bytes, sent to remote (host:port): http://HOST/PATH with the Host
// header's host, or remote without one. It returns "" for anything else (TLS, other
// protocols, a request line cut short).
func RequestURL(req []byte, remote string) string {
	r := bufio.NewReader(bytes.NewReader(req))
	line, err := r.ReadString('\n')
	if err != nil {
		return ""
	}
	method, rest, ok := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok || !ok2 || !validMethod(method) || !strings.HasPrefix(target, "/") || !printable(target) {
		return ""
	}
	if _, _, ok := http.ParseHTTPVersion(proto); !ok || !strings.HasPrefix(proto, "HTTP/1.") {
		return ""
	}
	host := ""
	if printable(remote) && !strings.ContainsAny(remote, "/@") {
		host = remote
	}
	for {
		h, err := r.ReadString('\n')
		if err != nil {
			break // headers cut short: the remote names the host
		}
		h = strings.TrimRight(h, "\r\n")
		if h == "" {
			break
		}
		name, value, ok := strings.Cut(h, ":")
		if ok && strings.EqualFold(name, "Host") {
			if v := strings.TrimSpace(value); printable(v) && !strings.ContainsAny(v, "/@") {
				host = v
			}
			break
		}
	}
	if host == "" {
		return ""
	}
	return "http://" + host + target
}

// printable reports whether s is non-empty visible ASCII: no spaces or control bytes.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return s != ""
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, ch := range m {
		if ch < 'A' || ch > 'Z' {
			return false
		}
	}
	return true
}

// DigestWritten sets the size and sha256 digest of every file written during the
// recording that may be a downloaded artifact: at least MinArtifactSize and at most
// MaxDigestBytes at the end, of kind weights or other. It reads each file through
// /proc/PID/root of a traced process that is still alive, the writers first, so that a
// file in a container's writable layer is reached while the container exists, and, with
// host, through the host's root too (a command recorded without a container). A file
// whose inode there is not the one written is left alone. ctx bounds the time spent: the
// files not hashed by its end get no digest. It returns a warning per file it could not
// hash.
func (c *Collector) DigestWritten(ctx context.Context, host bool) []string {
	var warnings []string
	for key, f := range c.files {
		if len(f.writers) == 0 || !strings.HasPrefix(f.Path, "/") {
			continue
		}
		file, size := c.openWritten(key, f, host)
		if file == nil {
			if k := Classify(f.Path, f.written()); f.written() >= MinArtifactSize && (k == trace.KindWeights || k == trace.KindOther) {
				warnings = append(warnings, fmt.Sprintf("no digest of %s: no live process of the workload shows the file written", f.Path))
			}
			continue
		}
		f.Size = size
		if k := Classify(f.Path, size); (k != trace.KindWeights && k != trace.KindOther) || size < MinArtifactSize || size > MaxDigestBytes {
			file.Close()
			continue
		}
		d, err := digest(ctx, file)
		file.Close()
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("no digest of %s: %v", f.Path, err))
			continue
		}
		f.Digest = d
	}
	return warnings
}

// openWritten opens the file f (the inode key) through the root of a live traced
// process, and returns it with its size; nil if no root shows that inode at f's path.
func (c *Collector) openWritten(key fileKey, f *fileState, host bool) (*os.File, int64) {
	var roots []string
	for pid := range f.writers {
		roots = append(roots, "/proc/"+strconv.Itoa(int(pid))+"/root")
	}
	for _, pid := range c.order {
		if _, ok := f.writers[pid]; !ok {
			roots = append(roots, "/proc/"+strconv.Itoa(int(pid))+"/root")
		}
	}
	if host {
		roots = append(roots, "")
	}
	for _, root := range roots {
		file, err := os.Open(root + f.Path)
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(int(file.Fd()), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG &&
			(fileKey{kernelDev(st.Dev), st.Ino}) == key {
			return file, st.Size
		}
		file.Close()
	}
	return nil, 0
}

// digest hashes r until its end or until ctx is done.
func digest(ctx context.Context, r io.Reader) (string, error) {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return "", fmt.Errorf("out of time: %w", err)
		}
		n, err := r.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
		}
		if err != nil {
			return "", err
		}
	}
}
