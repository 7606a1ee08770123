package collector

import (
	"maps"

	"github.com/coldtrace/coldtrace/trace"
)

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
