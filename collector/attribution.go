package collector

import (
	"maps"
	"regexp"
	"strings"

	"github.com/coldtrace/coldtrace/trace"
)

// CgroupIdentity is what a container's cgroup path says about it.
type CgroupIdentity struct {
	ContainerID string
	// Runtime is the prefix of the container's cgroup name: "cri-containerd", "docker",
	// "crio", or empty where the name is the bare id.
	Runtime string
	// PodUID (with dashes) and QoS ("guaranteed", "burstable", "besteffort") are set for
	// Kubernetes pods.
	PodUID string
	QoS    string
	// Namespace is the containerd namespace for the "<namespace>/<id>" layout of containers
	// started through containerd without Kubernetes (ctr, nerdctl, coldtrace record).
	Namespace string
}

var (
	// A container's directory: an optional runtime prefix, the id, and ".scope" under systemd.
	containerDir = regexp.MustCompile(`^(?:(cri-containerd|docker|crio)-)?([0-9a-f]{64})(?:\.scope)?$`)
	// A pod's directory: "pod<uid>" (cgroupfs) or "kubepods[-<qos>]-pod<uid>.slice" (systemd,
	// with the uid's dashes turned to underscores).
	podDir = regexp.MustCompile(`^(?:pod([0-9a-f-]{36})|kubepods(?:-(burstable|besteffort))?-pod([0-9a-f_]{36})\.slice)$`)
	// A containerd namespace and container id, as containerd validates identifiers.
	identifier = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)
)

// ParseCgroup reads a container's identity from its cgroup path (as in /proc/PID/cgroup or
// relative to the cgroup mount) for the layouts of the kubelet with the cgroupfs driver
// (kubepods/burstable/pod<uid>/<id>), with the systemd driver
// (kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope),
// of Docker (docker/<id>, docker-<id>.scope) and of plain containerd (<namespace>/<id>).
// Processes in cgroups below the container's own belong to it. ok is false for paths that
// are not a container's: the node's services, a pod's own cgroup, CRI-O's conmon.
func ParseCgroup(path string) (id CgroupIdentity, ok bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i, p := range parts {
		m := podDir.FindStringSubmatch(p)
		if m == nil || i+1 >= len(parts) {
			continue
		}
		c := containerDir.FindStringSubmatch(parts[i+1])
		if c == nil {
			return CgroupIdentity{}, false
		}
		id = CgroupIdentity{ContainerID: c[2], Runtime: c[1], PodUID: m[1], QoS: m[2]}
		if m[3] != "" {
			id.PodUID = strings.ReplaceAll(m[3], "_", "-")
		}
		if id.QoS == "" && i > 0 {
			id.QoS = strings.TrimPrefix(strings.TrimSuffix(parts[i-1], ".slice"), "kubepods-")
		}
		if id.QoS != "burstable" && id.QoS != "besteffort" {
			id.QoS = "guaranteed"
		}
		return id, true
	}
	for i, p := range parts {
		c := containerDir.FindStringSubmatch(p)
		switch {
		case c == nil:
			continue
		case c[1] != "" && strings.HasSuffix(p, ".scope"):
			return CgroupIdentity{ContainerID: c[2], Runtime: c[1]}, true
		case i > 0 && parts[i-1] == "docker":
			return CgroupIdentity{ContainerID: c[2], Runtime: "docker"}, true
		}
	}
	// containerd's own layout: exactly <namespace>/<id>, where systemd units would end in
	// .slice, .scope or .service.
	if len(parts) == 2 && identifier.MatchString(parts[0]) && identifier.MatchString(parts[1]) &&
		!isUnit(parts[0]) && !isUnit(parts[1]) && parts[0] != "docker" && parts[0] != "kubepods" {
		return CgroupIdentity{ContainerID: parts[1], Namespace: parts[0]}, true
	}
	return CgroupIdentity{}, false
}

func isUnit(name string) bool {
	for _, s := range []string{".slice", ".scope", ".service", ".mount", ".socket"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// The labels the CRI plugin puts on the containers it creates for the kubelet.
const (
	LabelPodName       = "io.kubernetes.pod.name"
	LabelPodNamespace  = "io.kubernetes.pod.namespace"
	LabelPodUID        = "io.kubernetes.pod.uid"
	LabelContainerName = "io.kubernetes.container.name"
)

// ContainerWorkload describes a container for a trace: its id and image, the pod and
// container names from its CRI labels, and all its labels (the pod uid among them).
func ContainerWorkload(id, image, imageDigest string, labels map[string]string) trace.Workload {
	return trace.Workload{
		Image:       image,
		ImageDigest: imageDigest,
		ContainerID: id,
		Pod:         labels[LabelPodName],
		Namespace:   labels[LabelPodNamespace],
		Container:   labels[LabelContainerName],
		Labels:      maps.Clone(labels),
	}
}
