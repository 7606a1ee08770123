package collector

import (
	"strings"
	"testing"
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
