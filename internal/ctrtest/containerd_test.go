package ctrtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestStartContainerd(t *testing.T) {
	c := StartContainerd(t)
	v, err := c.Client(t).Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("containerd %s at %s", v.Version, c.Address)
}

// TestCtrPullRun pulls over plain HTTP through the hosts directory and runs busybox with
// ctr, as a user would without coldtrace.
func TestCtrPullRun(t *testing.T) {
	c := StartContainerd(t)
	reg := StartRegistry(t, RegistryOptions{})
	img, err := BuildImage([]v1.Layer{BusyboxLayer(t)}, []string{"/bin/sh", "-c"}, []string{"echo hello from ctr"})
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "test/ctr:v1", img)
	c.TrustHTTP(t, reg.Host)
	c.Ctr(t, "images", "pull", "--hosts-dir", c.HostsDir, ref)
	// runc's state lives under a host-wide path in containerd 1.6: one id per run.
	id := fmt.Sprintf("hello-%d", time.Now().UnixNano())
	if out := c.Ctr(t, "run", "--rm", ref, id); strings.TrimSpace(out) != "hello from ctr" {
		t.Errorf("ctr run printed %q", out)
	}
}
