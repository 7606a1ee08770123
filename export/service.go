package export

import (
	"path"
	"strings"

	"github.com/coldtrace/coldtrace/trace"
)

// Service names what started, for the service_name of Pyroscope and the service.name of
// OpenTelemetry: the image's repository without tag or digest, so that every start of
// one image is one service whatever version it ran, else the command's program name.
func Service(t *trace.Trace) string {
	if img := t.Workload.Image; img != "" {
		img, _, _ = strings.Cut(img, "@")
		if i := strings.LastIndex(img, ":"); i > strings.LastIndex(img, "/") {
			img = img[:i] // a tag, not a registry's port
		}
		return img
	}
	if len(t.Workload.Command) > 0 {
		return path.Base(t.Workload.Command[0])
	}
	return "unknown"
}
