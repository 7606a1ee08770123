package containerd

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestRegistryAddrs resolves a registry and the mirrors its hosts.toml names, each at its
// port or at its scheme's; a registry without hosts.toml falls back to _default's.
func TestRegistryAddrs(t *testing.T) {
	dir := t.TempDir()
	write := func(host, text string) {
		if err := os.MkdirAll(filepath.Join(dir, host), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, host, "hosts.toml"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("127.0.0.1:5000", `server = "https://127.0.0.3"

[host."http://127.0.0.2:5001"]
  capabilities = ["pull", "resolve"]
[host."https://[::1]:5002"]
  capabilities = ["pull"]
`)
	write("_default", `[host."http://127.0.0.4:6000"]`)
	for _, c := range []struct {
		host string
		want []string
	}{
		{"127.0.0.1:5000", []string{"127.0.0.1:5000", "127.0.0.2:5001", "127.0.0.3:443", "[::1]:5002"}},
		{"127.0.0.9", []string{"127.0.0.9:443", "127.0.0.9:80", "127.0.0.4:6000"}},
	} {
		got, err := registryAddrs(context.Background(), c.host, dir)
		if err != nil {
			t.Errorf("%s: %v", c.host, err)
		}
		var want []netip.AddrPort
		for _, w := range c.want {
			want = append(want, netip.MustParseAddrPort(w))
		}
		if len(got) != len(want) || slices.ContainsFunc(want, func(a netip.AddrPort) bool { return !got[a] }) {
			t.Errorf("%s: addresses %v, want %v", c.host, got, want)
		}
	}
	write("127.0.0.5", `server = [`)
	if _, err := registryAddrs(context.Background(), "127.0.0.5", dir); err == nil {
		t.Error("a malformed hosts.toml: no error")
	}
}
