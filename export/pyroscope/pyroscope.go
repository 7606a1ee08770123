// Package pyroscope sends cold starts to a Grafana Pyroscope server as profiles
// (report.Profile: critical-path nanoseconds and bytes by workload, phase, layer or origin
// and file), and profiles the agent itself continuously with pyroscope-go.
//
// The cold starts go through Pyroscope's push API (POST /push.v1.PusherService/Push, a
// Connect RPC carrying pprof bytes and the series' labels), not /ingest: /ingest's own
// formats (folded, lines, trie, tree) know only a fixed list of profile types and refuse
// others as "unknown profile type", taking time units as "wall" samples worth a sampling
// period each, and its pprof upload names the profile after its sample types (ours would
// be called "bytes"). The push API keeps the profile's sample types and units as they are and takes
// the profile's name from the __name__ label, so the cold starts appear in Grafana as the
// profile types coldstart:critical_path:nanoseconds and coldstart:bytes:bytes.
package pyroscope

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	pyroscopego "github.com/grafana/pyroscope-go"
	pushv1 "github.com/grafana/pyroscope/api/gen/proto/go/push/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/push/v1/pushv1connect"
	typesv1 "github.com/grafana/pyroscope/api/gen/proto/go/types/v1"

	"github.com/coldtrace/coldtrace/export"
	"github.com/coldtrace/coldtrace/report"
	"github.com/coldtrace/coldtrace/trace"
)

// ProfileName is the __name__ of the cold-start profiles: the first part of their profile
// types in Grafana.
const ProfileName = "coldstart"

// SelfName is the service_name under which the agent profiles itself.
const SelfName = "coldtrace-agent"

// idSpace makes a sample's id from its trace's coldtrace id, so that a trace pushed twice
// is the same sample.
var idSpace = uuid.MustParse("6f1d3c3e-6c2b-4f0e-9a57-2f4c0c0d7a11")

// Pusher pushes cold-start profiles to one Pyroscope server.
type Pusher struct {
	client pushv1connect.PusherServiceClient
}

// New makes a pusher for the server at serverURL (http://HOST:PORT, with a path prefix
// where Pyroscope sits behind one). It does not connect yet.
func New(serverURL string) (*Pusher, error) {
	if err := checkURL(serverURL); err != nil {
		return nil, err
	}
	return &Pusher{client: pushv1connect.NewPusherServiceClient(http.DefaultClient, serverURL)}, nil
}

func checkURL(serverURL string) error {
	u, err := url.Parse(serverURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("pyroscope url %q: want http://HOST:PORT or https://HOST:PORT", serverURL)
	}
	return nil
}

// Labels are the series labels of t's profile: __name__, service_name (the workload,
// export.Service), namespace (the pod's, for Kubernetes), node and outcome. Labels without
// a value are left out, as Pyroscope would drop them.
func Labels(t *trace.Trace) []*typesv1.LabelPair {
	ls := []*typesv1.LabelPair{
		{Name: "__name__", Value: ProfileName},
		{Name: "service_name", Value: export.Service(t)},
	}
	for _, l := range [][2]string{{"namespace", t.Workload.Namespace}, {"node", t.Host.Hostname}, {"outcome", string(t.Outcome)}} {
		if l[1] != "" {
			ls = append(ls, &typesv1.LabelPair{Name: l[0], Value: l[1]})
		}
	}
	return ls
}

// Export pushes t's profile; it returns when ctx is done.
func (p *Pusher) Export(ctx context.Context, t *trace.Trace) error {
	var buf bytes.Buffer
	if err := report.Pprof(&buf, t); err != nil {
		return err
	}
	req := &pushv1.PushRequest{Series: []*pushv1.RawProfileSeries{{
		Labels:  Labels(t),
		Samples: []*pushv1.RawSample{{RawProfile: buf.Bytes(), ID: uuid.NewSHA1(idSpace, []byte(t.ID)).String()}},
	}}}
	_, err := p.client.Push(ctx, connect.NewRequest(req))
	return err
}

// Self starts profiling the agent (CPU, allocations, in-use memory, goroutines) and
// uploading the profiles to the server every uploadRate (pyroscope-go's default of 15 s
// when 0) under service_name SelfName with label node. Stop the returned profiler when the
// agent exits.
func Self(serverURL string, uploadRate time.Duration) (*pyroscopego.Profiler, error) {
	if err := checkURL(serverURL); err != nil {
		return nil, err
	}
	node, _ := os.Hostname()
	return pyroscopego.Start(pyroscopego.Config{
		ApplicationName: SelfName,
		ServerAddress:   serverURL,
		Tags:            map[string]string{"node": node},
		UploadRate:      uploadRate,
		ProfileTypes: []pyroscopego.ProfileType{
			pyroscopego.ProfileCPU, pyroscopego.ProfileAllocObjects, pyroscopego.ProfileAllocSpace,
			pyroscopego.ProfileInuseObjects, pyroscopego.ProfileInuseSpace, pyroscopego.ProfileGoroutines,
		},
	})
}
