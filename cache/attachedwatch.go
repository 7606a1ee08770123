package cache

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/coldtrace/coldtrace/containerd"
)

// podNamespace is the CRI's label of a container's pod namespace: the tenant.
const podNamespace = "io.kubernetes.pod.namespace"

// AttachedOptions tune WatchAttached.
type AttachedOptions struct {
	// Containerd is containerd's socket and Namespace the one watched; a container without
	// a pod namespace label (not made by the kubelet) counts as tenant Namespace.
	Containerd, Namespace string
	// Every is how long an image's lookup counts for a tenant before a new container of it
	// looks again (0: 5 minutes).
	Every time.Duration
	// Registry are the options of the registry look-ups (credentials).
	Registry []remote.Option
	Log      io.Writer
}

// WatchAttached applies, whenever a container is created in the namespace, the manifest
// attached in the registry to the container's image (ApplyAttached), for the tenant of
// the container's pod; once per image and tenant every opt.Every. It returns when ctx
// ends (nil) or containerd's event stream fails.
func (a *Warmer) WatchAttached(ctx context.Context, opt AttachedOptions) error {
	if opt.Log == nil {
		opt.Log = io.Discard
	}
	if opt.Every <= 0 {
		opt.Every = 5 * time.Minute
	}
	c, err := containerd.New(opt.Containerd, opt.Namespace)
	if err != nil {
		return err
	}
	defer c.Close()
	events, errs := c.Watch(ctx)
	var mu sync.Mutex
	looked := map[string]time.Time{} // image@digest + tenant → last look-up
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case err := <-errs:
			return err
		case ev := <-events:
			if ev.Kind != containerd.ContainerCreated {
				continue
			}
			ex, err := c.Inspect(ctx, ev.ContainerID)
			if ex == nil || ex.ImageDigest == "" {
				fmt.Fprintf(opt.Log, "coldtrace: attached manifests: container %s: %v\n", ev.ContainerID, err)
				continue
			}
			named, err := reference.ParseNormalizedNamed(ex.Image)
			if err != nil {
				continue // not a registry's image: nothing can be attached to it
			}
			image := reference.TrimNamed(named).String() + "@" + ex.ImageDigest
			tenant := ex.Labels[podNamespace]
			if tenant == "" {
				tenant = opt.Namespace
			}
			key := image + " " + tenant
			mu.Lock()
			recent := time.Since(looked[key]) < opt.Every
			if !recent {
				looked[key] = time.Now()
			}
			mu.Unlock()
			if recent {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := a.ApplyAttached(ctx, image, tenant, opt.Registry...)
				switch {
				case err != nil:
					fmt.Fprintf(opt.Log, "coldtrace: attached manifest of %s: %v\n", image, err)
				case s != nil:
					fmt.Fprintf(opt.Log, "coldtrace: applied the manifest attached to %s for %s: %d items, ok %v\n", image, tenant, len(s.Items), s.OK())
				}
			}()
		}
	}
}
