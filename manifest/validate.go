package manifest

import (
	"errors"
	"fmt"
	"math"
	"path"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/coldtrace/coldtrace/trace"
)

// Limits bound what Parse accepts, so that a hostile manifest cannot exhaust the agent.
// A zero field takes its default.
type Limits struct {
	// MaxBytes is the largest input accepted (default 64 MiB).
	MaxBytes int64
	// MaxEntries is the largest number of hot-set entries (default 100,000); images and
	// artifacts are held to the same limit.
	MaxEntries int
}

// Default limits.
const (
	DefaultMaxBytes   = 64 << 20
	DefaultMaxEntries = 100_000
)

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	return l
}

// tenantRE is a Kubernetes namespace name: the agent uses it as a directory name.
var tenantRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// ValidDigest reports whether d is "sha256:" followed by 64 lower-case hex digits.
func ValidDigest(d string) bool { return trace.ValidDigest(d) }

// ValidTenant reports whether t is a Kubernetes namespace name, as spec.tenant must be.
func ValidTenant(t string) bool { return tenantRE.MatchString(t) }

// HasDotDot reports whether the slash-separated path p has a ".." component, one that
// could lead out of the directory it is resolved under.
func HasDotDot(p string) bool { return slices.Contains(strings.Split(p, "/"), "..") }

// Validate checks every invariant that a consumer of the manifest relies on, with the
// default limits.
func (m *Manifest) Validate() error { return m.validate(Limits{}.withDefaults()) }

func (m *Manifest) validate(lim Limits) error {
	if m.APIVersion != APIVersion {
		return fmt.Errorf("manifest: apiVersion %q is not supported (want %q)", m.APIVersion, APIVersion)
	}
	if m.Kind != Kind {
		return fmt.Errorf("manifest: kind %q is not supported (want %q)", m.Kind, Kind)
	}
	if m.Metadata.Name == "" {
		return errors.New("manifest: metadata.name is empty")
	}
	if err := checkText("metadata.name", m.Metadata.Name); err != nil {
		return err
	}
	s := &m.Spec
	if s.Tenant != "" && !ValidTenant(s.Tenant) {
		return fmt.Errorf("manifest: tenant %q is not a valid name (lower-case letters, digits and '-', at most 63)", s.Tenant)
	}
	if err := checkText("spec.workload.image", s.Workload.Image); err != nil {
		return err
	}
	if s.Workload.Digest != "" && !ValidDigest(s.Workload.Digest) {
		return fmt.Errorf("manifest: spec.workload.digest %q is not sha256: and 64 hex digits", s.Workload.Digest)
	}
	for i, a := range s.Workload.Command {
		if err := checkText(fmt.Sprintf("spec.workload.command[%d]", i), a); err != nil {
			return err
		}
	}
	if s.Runs < 0 || s.BudgetBytes < 0 {
		return errors.New("manifest: spec.runs and spec.budgetBytes must not be negative")
	}
	for _, n := range []struct {
		what string
		len  int
	}{{"images", len(s.Images)}, {"artifacts", len(s.Artifacts)}, {"hotSet", len(s.HotSet)}} {
		if n.len > lim.MaxEntries {
			return fmt.Errorf("manifest: spec.%s has %d entries, more than the limit of %d", n.what, n.len, lim.MaxEntries)
		}
	}
	for i, im := range s.Images {
		if err := im.validate(); err != nil {
			return fmt.Errorf("manifest: spec.images[%d]: %w", i, err)
		}
	}
	for i, a := range s.Artifacts {
		if err := a.validate(); err != nil {
			return fmt.Errorf("manifest: spec.artifacts[%d]: %w", i, err)
		}
	}
	seen := make(map[string]bool, len(s.HotSet))
	for i, e := range s.HotSet {
		if err := e.validate(); err != nil {
			return fmt.Errorf("manifest: spec.hotSet[%d]: %w", i, err)
		}
		key := e.Layer + "\x00" + e.Path
		if seen[key] {
			return fmt.Errorf("manifest: spec.hotSet[%d]: %s appears twice", i, e.Path)
		}
		seen[key] = true
	}
	return nil
}

func (im Image) validate() error {
	if im.Ref == "" {
		return errors.New("ref is empty")
	}
	if err := checkText("ref", im.Ref); err != nil {
		return err
	}
	if im.Digest != "" && !ValidDigest(im.Digest) {
		return fmt.Errorf("digest %q is not sha256: and 64 hex digits", im.Digest)
	}
	if im.Size < 0 {
		return fmt.Errorf("negative size %d", im.Size)
	}
	return nil
}

func (a Artifact) validate() error {
	if err := checkPath(a.Path, true); err != nil {
		return err
	}
	if err := checkText("origin", a.Origin); err != nil {
		return err
	}
	// The size is checked against what the origin sends and the copy in the store; a file
	// never has size 0 in a manifest (the advisor lists only files it saw written).
	if a.Size <= 0 {
		return fmt.Errorf("size %d: an artifact's size must be positive", a.Size)
	}
	if a.Digest != "" && !ValidDigest(a.Digest) {
		return fmt.Errorf("digest %q is not sha256: and 64 hex digits", a.Digest)
	}
	return nil
}

func (e HotEntry) validate() error {
	if e.Layer != "" && !ValidDigest(e.Layer) {
		return fmt.Errorf("layer %q is not sha256: and 64 hex digits", e.Layer)
	}
	if e.LayerIndex != nil && (*e.LayerIndex < 0 || e.Layer == "") {
		return errors.New("layerIndex needs a layer and must not be negative")
	}
	// Layer paths are relative to the layer root; host paths are absolute.
	if err := checkPath(e.Path, e.Layer == ""); err != nil {
		return err
	}
	if e.Size < 0 || e.Order < 0 || e.FirstAccessNs < 0 {
		return errors.New("size, order and firstAccessNs must not be negative")
	}
	if !(e.Confidence > 0 && e.Confidence <= 1) {
		return fmt.Errorf("confidence %v is outside (0, 1]", e.Confidence)
	}
	if !(e.ExpectedSavedSeconds >= 0) || math.IsInf(e.ExpectedSavedSeconds, 0) {
		return fmt.Errorf("expectedSavedSeconds %v is not a finite non-negative number", e.ExpectedSavedSeconds)
	}
	if len(e.Ranges) == 0 {
		return fmt.Errorf("%s has no ranges", e.Path)
	}
	var prevEnd int64
	for j, r := range e.Ranges {
		if r.Off < 0 || r.Len <= 0 || r.Off > math.MaxInt64-r.Len {
			return fmt.Errorf("range %d [%d,+%d) is negative, empty or overflows", j, r.Off, r.Len)
		}
		if r.Off%PageSize != 0 || r.Len%PageSize != 0 {
			return fmt.Errorf("range %d [%d,+%d) is not aligned to %d-byte pages", j, r.Off, r.Len, PageSize)
		}
		if j > 0 && r.Off < prevEnd {
			return fmt.Errorf("range %d [%d,+%d) overlaps or precedes the one before it", j, r.Off, r.Len)
		}
		prevEnd = r.End()
	}
	return nil
}

// checkPath refuses paths that could escape the root they are resolved under: empty,
// NUL, invalid UTF-8, ".." components, and anything not already in clean form. abs says
// whether the path must be absolute (host paths) or relative (paths in a layer).
func checkPath(p string, abs bool) error {
	switch {
	case p == "":
		return errors.New("path is empty")
	case !utf8.ValidString(p):
		return fmt.Errorf("path %q is not valid UTF-8", p)
	case strings.IndexByte(p, 0) >= 0:
		return fmt.Errorf("path %q contains NUL", p)
	}
	if HasDotDot(p) {
		return fmt.Errorf("path %q contains a '..' component", p)
	}
	if abs && !path.IsAbs(p) {
		return fmt.Errorf("host path %q is not absolute", p)
	}
	if !abs && path.IsAbs(p) {
		return fmt.Errorf("layer path %q must be relative to the layer root", p)
	}
	if path.Clean(p) != p || p == "." {
		return fmt.Errorf("path %q is not clean (no '.', '//' or trailing '/')", p)
	}
	return nil
}

func checkText(what, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("manifest: %s is not valid UTF-8", what)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("manifest: %s contains NUL", what)
	}
	return nil
}
