package collector

import (
	"reflect"
	"testing"

	"github.com/coldtrace/coldtrace/trace"
)

func TestParseCgroup(t *testing.T) {
	const (
		id   = "4f1e0b6a1e4d8b3c2a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e5d6c7b"
		uid  = "0d5e3a8c-1b2f-4c6d-9e7a-8b1c2d3e4f5a"
		uidU = "0d5e3a8c_1b2f_4c6d_9e7a_8b1c2d3e4f5a"
	)
	pod := func(qos, runtime string) CgroupIdentity {
		return CgroupIdentity{ContainerID: id, Runtime: runtime, PodUID: uid, QoS: qos}
	}
	for _, tc := range []struct {
		path string
		want CgroupIdentity
		ok   bool
	}{
		// kubelet, cgroupfs driver.
		{"/kubepods/burstable/pod" + uid + "/" + id, pod("burstable", ""), true},
		{"/kubepods/besteffort/pod" + uid + "/" + id, pod("besteffort", ""), true},
		{"/kubepods/pod" + uid + "/" + id, pod("guaranteed", ""), true},
		{"/kubepods/burstable/pod" + uid + "/crio-" + id, pod("burstable", "crio"), true},
		// kubelet, systemd driver.
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + id + ".scope", pod("burstable", "cri-containerd"), true},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/crio-" + id + ".scope", pod("besteffort", "crio"), true},
		{"/kubepods.slice/kubepods-pod" + uidU + ".slice/docker-" + id + ".scope", pod("guaranteed", "docker"), true},
		// A process in a cgroup below the container's belongs to it.
		{"/kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + id + ".scope/init.scope", pod("guaranteed", "cri-containerd"), true},
		// Relative to the mount, without the leading slash.
		{"kubepods/pod" + uid + "/" + id, pod("guaranteed", ""), true},
		// Docker and containerd without Kubernetes.
		{"/system.slice/docker-" + id + ".scope", CgroupIdentity{ContainerID: id, Runtime: "docker"}, true},
		{"/docker/" + id, CgroupIdentity{ContainerID: id, Runtime: "docker"}, true},
		{"/default/small", CgroupIdentity{ContainerID: "small", Namespace: "default"}, true},
		{"/k8s.io/" + id, CgroupIdentity{ContainerID: id, Namespace: "k8s.io"}, true},
		// Not containers.
		{"/", CgroupIdentity{}, false},
		{"/kubepods/burstable/pod" + uid, CgroupIdentity{}, false},
		{"/kubepods/burstable", CgroupIdentity{}, false},
		{"/kubepods/pod" + uid, CgroupIdentity{}, false},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/crio-conmon-" + id + ".scope", CgroupIdentity{}, false},
		{"/system.slice/containerd.service", CgroupIdentity{}, false},
		{"/user.slice/user-0.slice/session-1.scope", CgroupIdentity{}, false},
		{"/init.scope", CgroupIdentity{}, false},
		{"/a/b/c", CgroupIdentity{}, false},
	} {
		got, ok := ParseCgroup(tc.path)
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseCgroup(%q) = %+v, %v; want %+v, %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
}

func TestContainerWorkload(t *testing.T) {
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   trace.Workload
	}{
		{
			name: "cri",
			labels: map[string]string{
				LabelPodName: "llm-0", LabelPodNamespace: "serving", LabelPodUID: "0d5e3a8c-1b2f-4c6d-9e7a-8b1c2d3e4f5a",
				LabelContainerName: "server", "app": "llm",
			},
			want: trace.Workload{
				Image: "reg/llm:v1", ImageDigest: "sha256:abc", ContainerID: "c1",
				Pod: "llm-0", Namespace: "serving", Container: "server",
				Labels: map[string]string{
					LabelPodName: "llm-0", LabelPodNamespace: "serving", LabelPodUID: "0d5e3a8c-1b2f-4c6d-9e7a-8b1c2d3e4f5a",
					LabelContainerName: "server", "app": "llm",
				},
			},
		},
		{
			name:   "ctr",
			labels: nil,
			want:   trace.Workload{Image: "reg/llm:v1", ImageDigest: "sha256:abc", ContainerID: "c1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ContainerWorkload("c1", "reg/llm:v1", "sha256:abc", tc.labels)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
			if tc.labels != nil {
				tc.labels["app"] = "changed"
				if got.Labels["app"] != "llm" {
					t.Error("the workload shares the caller's label map")
				}
			}
		})
	}
}
