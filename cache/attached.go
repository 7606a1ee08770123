package cache

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/coldtrace/coldtrace/manifest"
)

// ReasonForeign counts what a manifest found in a registry asks beyond the image it is
// attached to: another image, a layer not of that image, a host file it does not stage.
const ReasonForeign = "foreign"

// ApplyAttached applies the newest prefetch manifest attached in the registry to image
// (REGISTRY/REPO@sha256:...), for tenant: the namespace of the pod that runs the image.
// Anyone who can push to the registry can attach one, so it may only pre-pull that image,
// warm that image's layers and stage artifacts into tenant's store (under the store's
// usual download rules); everything else in it is refused and counted. It returns nil
// and no error when no manifest is attached.
func (a *Warmer) ApplyAttached(ctx context.Context, image, tenant string, opts ...remote.Option) (*Summary, error) {
	m, at, err := manifest.Pull(ctx, image, manifest.Limits{}, opts...)
	switch {
	case err == nil:
	case errors.Is(err, manifest.ErrNoArtifact):
		return nil, nil
	default:
		return nil, err
	}
	ref, _ := name.NewDigest(image) // Pull parsed it
	img, err := remote.Image(ref, append(opts, remote.WithContext(ctx))...)
	if err != nil {
		return nil, fmt.Errorf("the image %s: %w", image, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	var digests []string
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return nil, err
		}
		digests = append(digests, d.String())
	}
	m, refused := confine(m, ref, digests, tenant)
	for _, it := range refused {
		a.done(tenant, it)
	}
	if m == nil {
		return &Summary{Manifest: at.String(), Tenant: tenant, Items: refused}, nil
	}
	s, err := a.Apply(ctx, tenant, m)
	if s != nil {
		s.Items = append(refused, s.Items...)
	}
	return s, err
}

// confine returns what of m a manifest attached to image (whose layers are layers) may do
// for tenant, and an item for each thing refused; nil when the manifest is refused whole.
func confine(m *manifest.Manifest, image name.Digest, layers []string, tenant string) (*manifest.Manifest, []Item) {
	var refused []Item
	refuse := func(action, name, reason, detail string) {
		refused = append(refused, Item{Action: action, Name: name, Result: ResultRefused, Reason: reason, Detail: detail})
	}
	subject := image.DigestStr()
	if w := m.Spec.Workload; w.Digest != "" && w.Digest != subject {
		refuse(ActionPrepull, w.Image, ReasonForeign, fmt.Sprintf("the manifest is for %s, attached to %s", w.Digest, subject))
		return nil, refused
	}
	if m.Spec.Tenant != "" && m.Spec.Tenant != tenant {
		refuse(ActionStage, m.Metadata.Name, ReasonTenant, fmt.Sprintf("the manifest names tenant %q; the image runs in %q", m.Spec.Tenant, tenant))
		return nil, refused
	}
	c := *m
	c.Spec.Tenant = tenant
	c.Spec.Workload = manifest.Workload{Image: image.Context().Name() + "@" + subject, Digest: subject}
	c.Spec.Images = nil
	for _, im := range m.Spec.Images {
		if im.Digest != subject {
			refuse(ActionPrepull, im.Ref, ReasonForeign, "not the image the manifest is attached to")
		}
	}
	staged := map[string]bool{}
	for _, art := range m.Spec.Artifacts {
		staged[art.Path] = true
	}
	c.Spec.HotSet = nil
	for _, e := range m.Spec.HotSet {
		switch {
		case e.Layer != "" && slices.Contains(layers, e.Layer):
		case e.Layer == "" && staged[e.Path]:
		case e.Layer != "":
			refuse(ActionWarm, e.Path, ReasonForeign, "layer "+e.Layer+" is not one of the image's")
			continue
		default:
			refuse(ActionWarm, e.Path, ReasonForeign, "a host file that the manifest does not stage")
			continue
		}
		c.Spec.HotSet = append(c.Spec.HotSet, e)
	}
	return &c, refused
}
