package manifest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ArtifactType is the artifact type of a prefetch manifest stored in a registry: an OCI 1.1
// artifact whose subject is the image's manifest, found through the referrers API or,
// where a registry has none, the referrers tag (sha256-<hex>).
const ArtifactType = "application/vnd.coldtrace.manifest.v1+json"

// createdAnnotation orders the manifests attached to one image: the newest applies.
const createdAnnotation = "org.opencontainers.image.created"

// emptyJSON is the artifact's config. Its media type is the artifact type too, as before
// OCI 1.1: registries that list referrers by their config's type (go-containerregistry's
// does) then list it as registries that read artifactType do.
var emptyJSON = []byte("{}")

// ErrNoArtifact says that no prefetch manifest is attached to an image.
var ErrNoArtifact = errors.New("no prefetch manifest attached")

// Push stores m in the registry of image (REGISTRY/REPO@sha256:...) as an artifact whose
// subject is that image's manifest, and returns the artifact's reference. now stamps it,
// for Pull to take the newest.
func Push(ctx context.Context, image string, m *Manifest, now time.Time, opts ...remote.Option) (name.Digest, error) {
	ref, err := name.NewDigest(image)
	if err != nil {
		return name.Digest{}, fmt.Errorf("--push %q: not REGISTRY/REPO@sha256:... (%v)", image, err)
	}
	if err := m.Validate(); err != nil {
		return name.Digest{}, err
	}
	opts = append(opts, remote.WithContext(ctx))
	subject, err := remote.Head(ref, opts...)
	if err != nil {
		return name.Digest{}, fmt.Errorf("the image to attach the manifest to: %w", err)
	}
	var body bytes.Buffer
	if err := m.WriteJSON(&body); err != nil {
		return name.Digest{}, err
	}
	config := static.NewLayer(emptyJSON, ArtifactType)
	layer := static.NewLayer(body.Bytes(), ArtifactType)
	var descs []v1.Descriptor
	for _, l := range []v1.Layer{config, layer} {
		if err := remote.WriteLayer(ref.Context(), l, opts...); err != nil {
			return name.Digest{}, err
		}
		d, _ := l.Digest()
		mt, _ := l.MediaType()
		size, _ := l.Size()
		descs = append(descs, v1.Descriptor{MediaType: mt, Digest: d, Size: size})
	}
	raw, err := json.Marshal(v1.Manifest{
		SchemaVersion: 2, MediaType: types.OCIManifestSchema1, ArtifactType: ArtifactType,
		Config: descs[0], Layers: descs[1:],
		Subject:     &v1.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size},
		Annotations: map[string]string{createdAnnotation: now.UTC().Format(time.RFC3339Nano)},
	})
	if err != nil {
		return name.Digest{}, err
	}
	h, _, _ := v1.SHA256(bytes.NewReader(raw))
	at := ref.Context().Digest(h.String())
	err = remote.Put(at, &remote.Descriptor{Manifest: raw,
		Descriptor: v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: h, Size: int64(len(raw))}}, opts...)
	return at, err
}

// Pull returns the newest prefetch manifest attached to image (REGISTRY/REPO@sha256:...)
// and the reference of its artifact; ErrNoArtifact when there is none. The manifest is
// parsed under lim like any other; what it may do on the node is the caller's to check.
func Pull(ctx context.Context, image string, lim Limits, opts ...remote.Option) (*Manifest, name.Digest, error) {
	ref, err := name.NewDigest(image)
	if err != nil {
		return nil, name.Digest{}, fmt.Errorf("%q: not REGISTRY/REPO@sha256:... (%v)", image, err)
	}
	opts = append(opts, remote.WithContext(ctx), remote.WithFilter("artifactType", ArtifactType))
	idx, err := remote.Referrers(ref, opts...)
	if err != nil {
		return nil, name.Digest{}, fmt.Errorf("referrers of %s: %w", ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, name.Digest{}, err
	}
	refs := slices.DeleteFunc(slices.Clone(im.Manifests), func(d v1.Descriptor) bool { return d.ArtifactType != ArtifactType })
	if len(refs) == 0 {
		return nil, name.Digest{}, fmt.Errorf("%s: %w", ref, ErrNoArtifact)
	}
	// Newest first; RFC 3339 in UTC sorts as text. The digest breaks ties, so that every
	// node picks the same one.
	newest := slices.MaxFunc(refs, func(a, b v1.Descriptor) int {
		return cmp.Or(strings.Compare(a.Annotations[createdAnnotation], b.Annotations[createdAnnotation]),
			strings.Compare(a.Digest.String(), b.Digest.String()))
	})
	at := ref.Context().Digest(newest.Digest.String())
	art, err := remote.Image(at, opts...)
	if err != nil {
		return nil, name.Digest{}, fmt.Errorf("artifact %s: %w", at, err)
	}
	layers, err := art.Layers()
	if err != nil {
		return nil, name.Digest{}, err
	}
	if len(layers) != 1 {
		return nil, name.Digest{}, fmt.Errorf("artifact %s: %d layers, want the manifest alone", at, len(layers))
	}
	if mt, _ := layers[0].MediaType(); mt != ArtifactType {
		return nil, name.Digest{}, fmt.Errorf("artifact %s: a layer of type %s, want %s", at, mt, ArtifactType)
	}
	rc, err := layers[0].Compressed() // verified against its digest as it is read
	if err != nil {
		return nil, name.Digest{}, err
	}
	defer rc.Close()
	m, err := Read(rc, lim)
	if err != nil {
		return nil, name.Digest{}, fmt.Errorf("artifact %s: %w", at, err)
	}
	return m, at, nil
}
