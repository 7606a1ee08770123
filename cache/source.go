package cache

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/coldtrace/coldtrace/manifest"
)

// DefaultTenant owns the artifacts of manifests that name no tenant and come from a source
// that vouches for none.
const DefaultTenant = "default"

// Found is one manifest read from a source.
type Found struct {
	// Source is where it came from: a file path or a URL.
	Source string
	// Tenant is the tenant the source vouches for (a directory's name), or empty.
	Tenant   string
	Manifest *manifest.Manifest
	// Sum is the SHA-256 of the manifest's bytes, to notice a change.
	Sum [sha256.Size]byte
	// Err says why the source could not be read as a manifest; the others still apply.
	Err error
}

// Tenant decides whose artifacts a manifest may read and populate. A source that vouches
// for a tenant (a directory per namespace, --tenant) decides, and a manifest that claims
// another one is refused: the operator grants the directory, the manifest's author only
// writes into it. Otherwise the manifest's spec.tenant decides, then its
// metadata.namespace, then DefaultTenant.
func Tenant(given string, m *manifest.Manifest) (string, error) {
	claimed := m.Spec.Tenant
	if claimed == "" {
		claimed = m.Metadata.Namespace
	}
	switch {
	case given == "" && claimed == "":
		return DefaultTenant, nil
	case given == "":
		return claimed, nil
	case claimed != "" && claimed != given:
		return "", fmt.Errorf("manifest %s claims tenant %q but comes from tenant %q's source", m.Metadata.Name, claimed, given)
	}
	return given, nil
}

// ReadDir reads the manifests in dir: dir/NAME.{yaml,yml,json} vouch for no tenant, and
// dir/TENANT/NAME.{yaml,yml,json} for TENANT (mount one ConfigMap per namespace there).
// Names that start with a dot are skipped: a mounted ConfigMap keeps its versions in
// ..data and ..YYYY_MM_DD directories beside the symbolic links to its keys.
func ReadDir(dir string, lim manifest.Limits) ([]Found, error) {
	top, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("manifests: %w", err)
	}
	var out []Found
	for _, e := range top {
		name := e.Name()
		p := filepath.Join(dir, name)
		switch {
		case strings.HasPrefix(name, "."):
		case isManifestName(name):
			out = append(out, readFile(p, "", lim))
		case isDir(p):
			sub, err := os.ReadDir(p)
			if err != nil {
				out = append(out, Found{Source: p, Err: err})
				continue
			}
			for _, f := range sub {
				if !strings.HasPrefix(f.Name(), ".") && isManifestName(f.Name()) {
					out = append(out, readFile(filepath.Join(p, f.Name()), name, lim))
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b Found) int { return strings.Compare(a.Source, b.Source) })
	return out, nil
}

func isManifestName(n string) bool {
	switch filepath.Ext(n) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// isDir follows a symbolic link, as a ConfigMap's keys are links.
func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func readFile(p, tenant string, lim manifest.Limits) Found {
	f := Found{Source: p, Tenant: tenant}
	fh, err := os.Open(p)
	if err != nil {
		f.Err = err
		return f
	}
	defer fh.Close()
	f.Manifest, f.Sum, f.Err = parse(fh, lim)
	if f.Err != nil {
		f.Err = fmt.Errorf("%s: %w", p, f.Err)
	}
	return f
}

// parse reads a manifest from r (manifest.Read: at most the limit) and the SHA-256 of the
// bytes it read, by which a change is noticed.
func parse(r io.Reader, lim manifest.Limits) (*manifest.Manifest, [sha256.Size]byte, error) {
	h := sha256.New()
	m, err := manifest.Read(io.TeeReader(r, h), lim)
	return m, [sha256.Size]byte(h.Sum(nil)), err
}

// Fetch reads the manifest at an http or https URL with hc (nil: a client with a minute's
// timeout). The URL vouches for no tenant.
func Fetch(ctx context.Context, hc *http.Client, rawURL string, lim manifest.Limits) Found {
	if hc == nil {
		hc = &http.Client{Timeout: time.Minute}
	}
	f := Found{Source: rawURL}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		f.Err = fmt.Errorf("manifest URL %q: want http:// or https://", rawURL)
		return f
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		f.Err = err
		return f
	}
	resp, err := hc.Do(req)
	if err != nil {
		f.Err = fmt.Errorf("manifest %s: %w", rawURL, err)
		return f
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		f.Err = fmt.Errorf("manifest %s: %s", rawURL, resp.Status)
		return f
	}
	f.Manifest, f.Sum, f.Err = parse(resp.Body, lim)
	if f.Err != nil {
		f.Err = fmt.Errorf("%s: %w", rawURL, f.Err)
	}
	return f
}
