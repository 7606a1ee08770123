package collector

import (
	"reflect"
	"testing"

	"github.com/coldtrace/coldtrace/trace"
)

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
