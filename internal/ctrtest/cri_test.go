package ctrtest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCRIPod drives a pod through the CRI plugin as the kubelet does: pull, sandbox under
// a best-effort cgroup parent, a container that exits, its restart as attempt 1, removal.
func TestCRIPod(t *testing.T) {
	reg := StartRegistry(t, RegistryOptions{})
	img, err := BuildImage([]v1.Layer{BusyboxLayer(t)}, []string{"/bin/sh", "-c"}, []string{"echo hello from $WHO; exit 3"})
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "test/cri:v1", img)
	c := StartCRI(t, reg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if _, err := c.Pull(ctx, ref); err != nil {
		t.Fatal(err)
	}
	pod, err := c.RunPod(ctx, PodConfig{Name: "hello", Namespace: "ns1"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := ContainerConfig{Name: "app", Image: ref, Env: map[string]string{"WHO": "cri"}}
	for attempt := uint32(0); attempt < 2; attempt++ {
		cfg.Attempt = attempt
		id, err := c.RunContainer(ctx, pod, cfg)
		if err != nil {
			t.Fatal(err)
		}
		st, err := c.WaitExited(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if st.ExitCode != 3 || st.Metadata.Attempt != attempt {
			t.Errorf("attempt %d: exit code %d, attempt %d", attempt, st.ExitCode, st.Metadata.Attempt)
		}
		if log, err := c.Log(ctx, id); err != nil || log != "hello from cri\n" {
			t.Errorf("attempt %d: log %q, %v", attempt, log, err)
		}
		// The container's v2 cgroup is below the pod's, as under the kubelet.
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/unified", pod.CgroupParent)); err != nil {
			t.Errorf("pod cgroup: %v", err)
		}
	}
	list, err := c.Runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil || len(list.Containers) != 2 {
		t.Fatalf("containers: %v, %v", list, err)
	}
	if err := c.RemovePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/unified", pod.CgroupParent)); !os.IsNotExist(err) {
		t.Errorf("pod cgroup after removal: %v", err)
	}
}
