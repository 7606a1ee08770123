package cache

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coldtrace/coldtrace/manifest"
)

func writeManifest(t *testing.T, path, name, tenant string) {
	t.Helper()
	m := manifest.New(name)
	m.Spec.Tenant = tenant
	m.Spec.Images = []manifest.Image{{Ref: "registry.example/app:v1"}}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteFile(path); err != nil {
		t.Fatal(err)
	}
}

// TestReadDirConfigMap reads a directory laid out as the kubelet mounts ConfigMaps: keys
// are links into ..data, which links to a timestamped directory.
func TestReadDirConfigMap(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, filepath.Join(dir, "top.yaml"), "top", "")
	ts := filepath.Join(dir, "team-a", "..2026_11_28_14_00_00.1")
	writeManifest(t, filepath.Join(ts, "llm.yaml"), "llm", "")
	for _, l := range [][2]string{
		{"..2026_11_28_14_00_00.1", filepath.Join(dir, "team-a", "..data")},
		{"..data/llm.yaml", filepath.Join(dir, "team-a", "llm.yaml")},
	} {
		if err := os.Symlink(l[0], l[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "team-a", "broken.json"), []byte(`{"apiVersion":`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "README.txt"), []byte("not a manifest"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadDir(dir, manifest.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range got {
		switch {
		case strings.HasSuffix(f.Source, "broken.json"):
			if f.Err == nil || f.Tenant != "team-a" {
				t.Errorf("broken manifest: %+v", f)
			}
			continue
		case f.Err != nil:
			t.Errorf("%s: %v", f.Source, f.Err)
			continue
		}
		names = append(names, f.Tenant+"/"+f.Manifest.Metadata.Name)
	}
	if strings.Join(names, ",") != "team-a/llm,/top" {
		t.Errorf("read %v, want team-a/llm and /top (the ..data copies skipped)", names)
	}
}

func TestTenant(t *testing.T) {
	for _, c := range []struct {
		given, spec, namespace, want string
		refused                      bool
	}{
		{want: DefaultTenant},
		{spec: "team-a", want: "team-a"},
		{namespace: "team-b", want: "team-b"},
		{spec: "team-a", namespace: "team-b", want: "team-a"},
		{given: "team-a", want: "team-a"},
		{given: "team-a", spec: "team-a", want: "team-a"},
		{given: "team-a", spec: "team-b", refused: true},
		{given: "team-a", namespace: "team-b", refused: true},
	} {
		m := manifest.New("m")
		m.Spec.Tenant, m.Metadata.Namespace = c.spec, c.namespace
		got, err := Tenant(c.given, m)
		if (err != nil) != c.refused || got != c.want {
			t.Errorf("Tenant(%q, spec %q, namespace %q) = %q, %v", c.given, c.spec, c.namespace, got, err)
		}
	}
}

func TestFetch(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, filepath.Join(dir, "m.json"), "served", "team-a")
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	ctx := context.Background()
	f := Fetch(ctx, srv.Client(), srv.URL+"/m.json", manifest.Limits{})
	if f.Err != nil || f.Manifest.Metadata.Name != "served" || f.Tenant != "" {
		t.Fatalf("Fetch = %+v", f)
	}
	if g := Fetch(ctx, srv.Client(), srv.URL+"/m.json", manifest.Limits{}); g.Sum != f.Sum {
		t.Error("the same manifest fetched twice has two sums")
	}
	for _, bad := range []string{srv.URL + "/missing.json", "file:///etc/passwd", "ftp://x/y"} {
		if g := Fetch(ctx, srv.Client(), bad, manifest.Limits{}); g.Err == nil {
			t.Errorf("Fetch(%s) succeeded", bad)
		}
	}
	// A manifest bigger than the limit is refused, not read whole.
	if g := Fetch(ctx, srv.Client(), srv.URL+"/m.json", manifest.Limits{MaxBytes: 64}); g.Err == nil || !strings.Contains(g.Err.Error(), "limit") {
		t.Errorf("over the size limit: %v", g.Err)
	}
}
