package origin

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
)

// TestHTTP checks the origin against what a client received on the wire: the counted
// bytes are every byte of the responses, and Range requests get their slice.
func TestHTTP(t *testing.T) {
	h := StartHTTP(t, "/m/shard.bin", Random(1<<20), 0)
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", h.Port()))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /m/shard.bin HTTP/1.0\r\nHost: x\r\n\r\n")
	raw, err := io.ReadAll(c)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(raw, []byte("\r\n\r\n"))
	if i < 0 || !bytes.Equal(raw[i+4:], h.body) {
		t.Fatalf("a GET of the file did not return its %d bytes", len(h.body))
	}
	if h.Sent() != int64(len(raw)) {
		t.Errorf("counted %d bytes, the client received %d", h.Sent(), len(raw))
	}

	req, _ := http.NewRequest("GET", h.URL(), nil)
	req.Header.Set("Range", "bytes=1000-1999")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, h.body[1000:2000]) {
		t.Errorf("range: status %d, %d bytes", resp.StatusCode, len(b))
	}
	if resp, err := http.Get(h.URL() + "x"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("another path: %v %v", resp.Status, err)
	}
}
