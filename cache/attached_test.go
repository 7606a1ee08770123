package cache

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coldtrace/coldtrace/containerd"
	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/manifest"
)

// A manifest attached to an image in the registry (with the referrers API, and without it:
// the referrers tag) is found and applied on a fresh node, confined to that image and the
// pod's tenant: another image, another image's layer and a host file are refused and
// counted, and a manifest naming another tenant is refused whole.
func TestApplyAttached(t *testing.T) {
	for _, api := range []bool{true, false} {
		t.Run(fmt.Sprintf("referrers-api=%v", api), func(t *testing.T) {
			reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{Referrers: api})
			push := func(repo, file string) (ref, digest, layer string) {
				l, err := ctrtest.Layer(ctrtest.File{Path: file, Data: []byte(strings.Repeat(repo, 4096))})
				if err != nil {
					t.Fatal(err)
				}
				img, err := ctrtest.BuildImage([]v1.Layer{l}, []string{"/bin/true"}, nil)
				if err != nil {
					t.Fatal(err)
				}
				reg.Push(t, repo+":v1", img)
				d, _ := img.Digest()
				ld, _ := l.Digest()
				return reg.Host + "/" + repo + "@" + d.String(), d.String(), ld.String()
			}
			image, digest, layer := push("team/app", "/app/lib.so")
			other, otherDigest, otherLayer := push("team/other", "/other/lib.so")
			o := origin.StartHTTP(t, "/m/model.bin", origin.Random(256<<10), 0)

			m := modelManifest("", o)
			m.Spec.Workload = manifest.Workload{Image: image, Digest: digest}
			m.Spec.Images = []manifest.Image{{Ref: image, Digest: digest}, {Ref: other, Digest: otherDigest}}
			m.Spec.HotSet = append(m.Spec.HotSet,
				manifest.HotEntry{Layer: layer, Path: "app/lib.so", Ranges: []manifest.Range{{Off: 0, Len: 4096}}, Confidence: 1, Order: 1},
				manifest.HotEntry{Layer: otherLayer, Path: "other/lib.so", Ranges: []manifest.Range{{Off: 0, Len: 4096}}, Confidence: 1, Order: 2},
				manifest.HotEntry{Path: "/etc/hostname", Ranges: []manifest.Range{{Off: 0, Len: 4096}}, Confidence: 1, Order: 3})
			ctx := context.Background()
			if _, err := manifest.Push(ctx, image, m, time.Now()); err != nil {
				t.Fatal(err)
			}

			ctrd := ctrtest.StartContainerd(t) // a fresh node
			promReg := prometheus.NewRegistry()
			metrics := NewMetrics(promReg)
			root := filepath.Join(t.TempDir(), "store")
			a, err := New(Config{Containerd: ctrd.Address, Namespace: "k8s.io", StoreRoot: root, OriginAllow: loopback, PlainHTTP: true}, metrics, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			s, err := a.ApplyAttached(ctx, image, "team-a")
			if err != nil || s == nil {
				t.Fatalf("apply attached: %v, %v", s, err)
			}
			results := map[string]string{}
			for _, it := range s.Items {
				results[it.Action+" "+it.Name] = it.Result
			}
			want := map[string]string{
				"prepull " + image: ResultDone, "prepull " + other: ResultRefused,
				"stage /models/model.bin": ResultDone,
				"warm other/lib.so":       ResultRefused, "warm /etc/hostname": ResultRefused,
			}
			for k, v := range want {
				if results[k] != v {
					t.Errorf("%s: %q, want %q (all: %+v)", k, results[k], v, s.Items)
				}
			}
			if got := testutil.ToFloat64(metrics.refusals.WithLabelValues("team-a", ReasonForeign)); got != 3 {
				t.Errorf("%v foreign refusals counted, want 3", got)
			}
			// The registry's own counts: the image's layer was pulled, the other's never.
			if reg.Served(layer) == 0 || reg.Served(otherLayer) != 0 {
				t.Errorf("registry served %d bytes of the image's layer, %d of the other image's", reg.Served(layer), reg.Served(otherLayer))
			}
			blob := filepath.Join(root, "tenants", "team-a", "sha256", strings.TrimPrefix(o.Digest(), "sha256:"))
			if _, err := os.Stat(blob); err != nil {
				t.Errorf("the artifact is not in team-a's store: %v", err)
			}

			// A newer manifest naming another tenant is refused whole: nothing staged for it.
			m.Spec.Tenant = "team-b"
			if _, err := manifest.Push(ctx, image, m, time.Now().Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			s, err = a.ApplyAttached(ctx, image, "team-a")
			if err != nil || len(s.Items) != 1 || s.Items[0].Reason != ReasonTenant {
				t.Errorf("a manifest for team-b applied for team-a: %+v, %v", s, err)
			}
			if _, err := os.Stat(filepath.Join(root, "tenants", "team-b")); err == nil {
				t.Error("something was staged for team-b")
			}
			if got := testutil.ToFloat64(metrics.refusals.WithLabelValues("team-a", ReasonTenant)); got != 1 {
				t.Errorf("%v tenant refusals counted, want 1", got)
			}
		})
	}
}

// The agent's path: a container of an image is created on a node; the manifest attached
// to the image in the registry is applied for the container's pod namespace.
func TestWatchAttached(t *testing.T) {
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{})
	img, err := ctrtest.BuildImage([]v1.Layer{ctrtest.BusyboxLayer(t)}, []string{"/bin/sleep", "60"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "team/app:v1", img)
	d, _ := img.Digest()
	image := reg.Host + "/team/app@" + d.String()
	o := origin.StartHTTP(t, "/m/model.bin", origin.Random(256<<10), 0)
	m := modelManifest("", o)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := manifest.Push(ctx, image, m, time.Now()); err != nil {
		t.Fatal(err)
	}

	ctrd := ctrtest.StartContainerd(t)
	root := filepath.Join(t.TempDir(), "store")
	a, err := New(Config{Containerd: ctrd.Address, Namespace: "k8s.io", StoreRoot: root, OriginAllow: loopback, PlainHTTP: true}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	watched := make(chan error, 1)
	go func() {
		watched <- a.WatchAttached(ctx, AttachedOptions{Containerd: ctrd.Address, Namespace: "k8s.io"})
	}()
	time.Sleep(time.Second) // the subscription is made asynchronously

	c, err := containerd.New(ctrd.Address, "k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Pull(ctx, ref, containerd.PullOptions{PlainHTTP: true}); err != nil {
		t.Fatal(err)
	}
	ct, err := c.Create(ctx, "app", ref, containerd.CreateOptions{Labels: map[string]string{podNamespace: "team-a"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Delete(context.Background())

	blob := filepath.Join(root, "tenants", "team-a", "sha256", strings.TrimPrefix(o.Digest(), "sha256:"))
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(blob); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the attached manifest's artifact is not in team-a's store a minute after the container's create")
		}
	}
	cancel()
	if err := <-watched; err != nil {
		t.Errorf("watch: %v", err)
	}
}
