package manifest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/manifest"
)

// pushImage pushes a random image and returns its REGISTRY/REPO@DIGEST.
func pushImage(t *testing.T, host, repo string) string {
	t.Helper()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag(host + "/" + repo + ":v1")
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return tag.Context().Digest(d.String()).String()
}

// A manifest pushed with an image as its subject is found again by the image's digest, the
// newest of several winning, through the referrers API where the registry has it and
// through the referrers tag where it has not.
func TestPushPull(t *testing.T) {
	for _, api := range []bool{true, false} {
		t.Run(fmt.Sprintf("referrers-api=%v", api), func(t *testing.T) {
			reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{Referrers: api})
			image := pushImage(t, reg.Host, "team/app")
			other := pushImage(t, reg.Host, "team/other")
			ctx := context.Background()

			if _, _, err := manifest.Pull(ctx, image, manifest.Limits{}); !errors.Is(err, manifest.ErrNoArtifact) {
				t.Fatalf("pull before any push: %v, want ErrNoArtifact", err)
			}
			t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
			for i, at := range []time.Time{t0.Add(time.Hour), t0} { // the newer one is pushed first
				m := manifest.New(fmt.Sprintf("app-%d", i))
				m.Spec.Workload.Image = image
				if _, err := manifest.Push(ctx, image, m, at); err != nil {
					t.Fatal(err)
				}
			}
			m, art, err := manifest.Pull(ctx, image, manifest.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if m.Metadata.Name != "app-0" {
				t.Errorf("pulled %q, want the newest, app-0", m.Metadata.Name)
			}
			if _, _, err := manifest.Pull(ctx, other, manifest.Limits{}); !errors.Is(err, manifest.ErrNoArtifact) {
				t.Errorf("another image's referrers: %v, want ErrNoArtifact", err)
			}

			// Where the manifests were found, as the registry serves them.
			d, _ := name.NewDigest(image)
			hex := strings.TrimPrefix(d.DigestStr(), "sha256:")
			resp, err := http.Get("http://" + reg.Host + "/v2/team/app/referrers/" + d.DigestStr())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.StatusCode == http.StatusOK; got != api {
				t.Errorf("referrers API answered %d, registry with the API: %v", resp.StatusCode, api)
			}
			_, err = remote.Head(d.Context().Tag("sha256-" + hex))
			if (err == nil) == api {
				t.Errorf("referrers tag sha256-%s: %v, registry with the API: %v", hex[:12], err, api)
			}
			if !strings.HasPrefix(art.String(), reg.Host+"/team/app@sha256:") {
				t.Errorf("artifact %s is not in the image's repository", art)
			}
		})
	}
}

func TestPushRefusesTag(t *testing.T) {
	if _, err := manifest.Push(context.Background(), "127.0.0.1:1/app:v1", manifest.New("x"), time.Now()); err == nil {
		t.Error("push to a tag, not a digest: accepted")
	}
}
