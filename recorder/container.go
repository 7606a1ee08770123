package recorder

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/coldtrace/coldtrace/containerd"
	"github.com/coldtrace/coldtrace/trace"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ImageOptions configure the recording of a container image's cold start.
type ImageOptions struct {
	Image string
	// Address is containerd's socket; Namespace the containerd namespace to work in.
	Address, Namespace string
	// PlainHTTP, HostsDir and Fresh tune the pull (see containerd.PullOptions).
	PlainHTTP bool
	HostsDir  string
	Fresh     bool
	// Args replace the image's entrypoint and command when set, as with ctr run.
	Args []string
	// HostNetwork runs the container in the host's network namespace.
	HostNetwork bool
	// Env and Mounts add environment entries and bind mounts to the container.
	Env    []string
	Mounts []specs.Mount
	// Stdout and Stderr are files that receive the workload's output; discarded when empty.
	Stdout, Stderr string
	// Timeout stops a recording whose container is not ready that long after its start
	// (the pull is not counted); zero means no limit.
	Timeout         time.Duration
	RingBufferBytes int
	DevicePatterns  []string
	Log             io.Writer
}

// RecordImage pulls the image through containerd, creates and starts a container of it
// and traces its cold start from the pull request until a process of the container listens
// (ready), the workload exits, the timeout passes or ctx is cancelled. The container is
// removed at the end. A pull, create or start that fails (or is interrupted: ctx) ends
// the trace there, with outcome failed (interrupted) and the error, and the pull as far as
// it got. The error is non-nil only when there is no trace: containerd or the probes
// could not be reached.
func RecordImage(ctx context.Context, opts ImageOptions) (*trace.Trace, error) {
	client, err := containerd.New(opts.Address, opts.Namespace)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	probes, err := LoadProbes(opts.RingBufferBytes, opts.Log)
	if err != nil {
		return nil, err
	}
	defer probes.Close()

	// Time zero is the pull request. Go's monotonic clock is CLOCK_MONOTONIC, so the
	// client's time.Time stamps and the kernel's timestamps share one time line.
	wall := time.Now()
	rec := newRecording(probes, Config{
		Zero: wall, Workload: trace.Workload{Image: opts.Image}, Timeout: opts.Timeout,
		Interrupted: "recording interrupted", DevicePatterns: opts.DevicePatterns,
	}, monotonic())
	rec.readRing(0)

	pulled, err := client.Pull(ctx, opts.Image, containerd.PullOptions{
		PlainHTTP: opts.PlainHTTP, HostsDir: opts.HostsDir, Fresh: opts.Fresh,
	})
	if pulled != nil {
		rec.cfg.Pull = &Pull{Client: client, Pulled: pulled}
	}
	if err != nil {
		return rec.fail(ctx, err), nil
	}
	rec.meta.Workload.Image, rec.meta.Workload.ImageDigest = pulled.Ref, pulled.Digest
	id := "coldtrace-" + rec.meta.ID
	createAt := time.Now()
	ct, err := client.Create(ctx, id, pulled.Ref, containerd.CreateOptions{
		Args: opts.Args, HostNetwork: opts.HostNetwork, Stdout: opts.Stdout, Stderr: opts.Stderr,
		Env: opts.Env, Mounts: opts.Mounts,
	})
	if err != nil {
		return rec.fail(ctx, err), nil
	}
	defer func() {
		if err := ct.Delete(context.WithoutCancel(ctx)); err != nil && opts.Log != nil {
			fmt.Fprintf(opts.Log, "coldtrace: remove container %s: %v\n", id, err)
		}
	}()
	rec.Container(id, pulled.Ref, pulled.Digest, ct.Labels, ct.Rootfs)
	rec.cfg.Create = createAt
	// The task's init process waits for Start: tracking its cgroup now sees the workload
	// from its first instruction.
	if err := probes.TrackCgroup(ct.Cgroup.ID); err != nil {
		return rec.fail(ctx, fmt.Errorf("trace container %s: %w", id, err)), nil
	}
	if err := ct.Start(ctx); err != nil {
		return rec.fail(ctx, err), nil
	}

	waitCtx, cancelWait := context.WithCancel(ctx)
	defer cancelWait()
	exited := make(chan Exit, 1)
	go func() {
		code, err := ct.Wait(waitCtx)
		e := ContainerExit(monotonic(), code)
		if err != nil {
			e.Error = fmt.Sprintf("waiting for the container: %v", err)
		}
		exited <- e
	}()
	// The trace is made before the container and its writable layer go.
	return rec.Run(ctx, exited), nil
}

// pullActivity is the pull (from the request: resolving the image, then each layer's
// download from its request to its commit) and the unpack. Layers unpack one after the
// other once all are fetched; the client's bookkeeping between two layers counts as
// unpacking, so the unpack runs without gaps from the end of the download to the end of
// the pull.
func pullActivity(p *containerd.Pulled, zero time.Time) map[trace.PhaseName][]trace.Interval {
	acts := map[trace.PhaseName][]trace.Interval{}
	var fetched trace.Duration
	for _, l := range p.Layers {
		if !l.Fetched.IsZero() {
			acts[trace.PhasePull] = append(acts[trace.PhasePull], trace.Interval{Start: l.Start.Sub(zero), End: l.Fetched.Sub(zero)})
			fetched = max(fetched, l.Fetched.Sub(zero))
		}
	}
	switch {
	case fetched != 0:
	case len(p.Layers) > 0 && !p.Layers[0].UnpackStart.IsZero():
		fetched = p.Layers[0].UnpackStart.Sub(zero) // all present: the pull only resolved the image
	default:
		fetched = p.End.Sub(zero) // failed before any layer was complete
	}
	acts[trace.PhasePull] = append(acts[trace.PhasePull], trace.Interval{Start: 0, End: fetched})
	from := fetched
	for _, l := range p.Layers {
		if l.UnpackEnd.IsZero() {
			continue
		}
		if from == 0 {
			from = l.UnpackStart.Sub(zero)
		}
		acts[trace.PhaseUnpack] = append(acts[trace.PhaseUnpack], trace.Interval{Start: from, End: l.UnpackEnd.Sub(zero)})
		from = l.UnpackEnd.Sub(zero)
	}
	if n := len(acts[trace.PhaseUnpack]); n > 0 {
		acts[trace.PhaseUnpack][n-1].End = p.End.Sub(zero)
	}
	return acts
}
