// Package manifest holds the prefetch manifest: what the advisor learned from cold-start
// traces about one workload (the image to pre-pull, the model files to stage, the byte
// ranges to bring into the page cache, in the order they are needed) and what the cache
// agent consumes. It is the contract between the two; MANIFEST.md describes it.
//
// The manifest is shaped like a Kubernetes object (apiVersion, kind, metadata, spec) so
// that it can be stored in a ConfigMap as YAML or JSON.
package manifest

// The values of apiVersion and kind that this package reads and writes.
const (
	APIVersion = "coldtrace.dev/v1alpha1"
	Kind       = "PrefetchManifest"
)

// PageSize is the granularity of hot ranges: every range starts and ends on a 4 KiB page.
const PageSize = 4096

// Manifest is one prefetch manifest.
type Manifest struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	Spec       Spec     `json:"spec"`
}

// Metadata names the manifest, as a Kubernetes object's metadata does.
type Metadata struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// Spec is what to prefetch for one workload.
type Spec struct {
	Workload Workload `json:"workload"`
	// Tenant owns the artifacts; the cache agent keeps tenants' files apart.
	Tenant string `json:"tenant,omitempty"`
	// Runs is the number of traces the manifest was built from; confidences are shares of it.
	Runs int `json:"runs"`
	// BudgetBytes is the hot-set budget the entries were chosen under; 0 means none.
	BudgetBytes int64      `json:"budgetBytes,omitempty"`
	Images      []Image    `json:"images,omitempty"`
	Artifacts   []Artifact `json:"artifacts,omitempty"`
	// HotSet lists the hot ranges of files, ordered by median first access.
	HotSet []HotEntry `json:"hotSet,omitempty"`
}

// Workload identifies what was started: an image (reference and digest) or a command.
type Workload struct {
	Image   string   `json:"image,omitempty"`
	Digest  string   `json:"digest,omitempty"`
	Command []string `json:"command,omitempty"`
}

// Image is an image to pre-pull, by digest.
type Image struct {
	Ref    string `json:"ref"`
	Digest string `json:"digest,omitempty"`
	// Size is the sum of the image's compressed layer sizes, when known.
	Size int64 `json:"size,omitempty"`
}

// Artifact is a file the workload downloaded during its start (model weights, most often).
type Artifact struct {
	// Path is where the file landed: an absolute path as the workload saw it.
	Path string `json:"path"`
	// Origin is where it came from: a URL, or the peer address when only that is known.
	Origin string `json:"origin,omitempty"`
	Size   int64  `json:"size"`
	// Digest is the file's sha256 ("sha256:" and 64 hex digits), when known.
	Digest string `json:"digest,omitempty"`
}

// HotEntry is the hot part of one file.
type HotEntry struct {
	// Layer is the digest of the image layer that provides the file; empty for a host file.
	Layer string `json:"layer,omitempty"`
	// LayerIndex is the layer's position in the image manifest, where known.
	LayerIndex *int `json:"layerIndex,omitempty"`
	// Path is relative to the layer root ("usr/lib/libfoo.so") when Layer is set, and an
	// absolute host path ("/models/x.safetensors") when it is not.
	Path string `json:"path"`
	// Size is the file's size, so that the agent can skip a file that changed.
	Size int64 `json:"size,omitempty"`
	// Ranges are page-aligned, sorted and disjoint.
	Ranges []Range `json:"ranges"`
	// Order is the entry's rank by median first access (0 is needed first);
	// FirstAccessNs is that median, in nanoseconds since the start of the cold start.
	Order         int   `json:"order"`
	FirstAccessNs int64 `json:"firstAccessNs"`
	// Confidence is the share of runs that touched the file, in (0, 1].
	Confidence float64 `json:"confidence"`
	// ExpectedSavedSeconds is the time the entry is expected to save when warm.
	ExpectedSavedSeconds float64 `json:"expectedSavedSeconds"`
}

// Range is a byte range [Off, Off+Len) of a file.
type Range struct {
	Off int64 `json:"off"`
	Len int64 `json:"len"`
}

// End is the offset just past the range.
func (r Range) End() int64 { return r.Off + r.Len }

// Bytes is the number of bytes the entry's ranges cover.
func (e HotEntry) Bytes() int64 {
	var n int64
	for _, r := range e.Ranges {
		n += r.Len
	}
	return n
}

// New returns an empty manifest with apiVersion and kind set.
func New(name string) *Manifest {
	return &Manifest{APIVersion: APIVersion, Kind: Kind, Metadata: Metadata{Name: name}}
}
