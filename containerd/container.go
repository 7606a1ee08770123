package containerd

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// CreateOptions tune Create.
type CreateOptions struct {
	// Args replace the image's entrypoint and command when set.
	Args []string
	// Stdout and Stderr are files that receive the workload's output; discarded when empty.
	// The same name for both interleaves them in one file.
	Stdout, Stderr string
	// Labels are set on the container (CRI sets the io.kubernetes.* ones).
	Labels map[string]string
	// HostNetwork runs the container in the host's network namespace.
	HostNetwork bool
	// Env adds KEY=VALUE entries to the image's environment.
	Env []string
	// Mounts are bind mounts into the container (for example the cache agent's artifact
	// directory, as a pod mounts it with a hostPath volume).
	Mounts []specs.Mount
}

// Container is a container with its task created: its processes and cgroup exist, and
// Start runs the workload.
type Container struct {
	ID     string
	Image  string
	Labels map[string]string
	// PID is the task's init process.
	PID    int
	Cgroup Cgroup
	Rootfs *Rootfs

	ctr  client.Container
	task client.Task
	exit <-chan client.ExitStatus
	out  []*os.File
}

// Create creates a container from an image that was pulled and unpacked, and its task:
// runc creates the cgroup and the init process, which waits for Start. Tracing that adds
// the container's cgroup to its filter between Create and Start sees the workload from its
// first instruction.
func (c *Client) Create(ctx context.Context, id, image string, opts CreateOptions) (_ *Container, err error) {
	img, err := c.c.GetImage(ctx, image)
	if err != nil {
		return nil, fmt.Errorf("create %s: image %s: %w", id, image, err)
	}
	specOpts := []oci.SpecOpts{oci.WithImageConfig(img)}
	if len(opts.Args) > 0 {
		specOpts = append(specOpts, oci.WithProcessArgs(opts.Args...))
	}
	if opts.HostNetwork {
		specOpts = append(specOpts, oci.WithHostNamespace(specs.NetworkNamespace))
	}
	if len(opts.Env) > 0 {
		specOpts = append(specOpts, oci.WithEnv(opts.Env))
	}
	if len(opts.Mounts) > 0 {
		specOpts = append(specOpts, oci.WithMounts(opts.Mounts))
	}
	ctr, err := c.c.NewContainer(ctx, id,
		client.WithImage(img),
		client.WithSnapshotter(DefaultSnapshotter),
		client.WithNewSnapshot(id, img),
		client.WithNewSpec(specOpts...),
		client.WithContainerLabels(opts.Labels),
	)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", id, err)
	}
	ct := &Container{ID: id, Image: img.Name(), Labels: opts.Labels, ctr: ctr}
	defer func() {
		if err != nil {
			ct.Delete(context.WithoutCancel(ctx))
		}
	}()

	var streams [2]*os.File
	for i, name := range []string{opts.Stdout, opts.Stderr} {
		if i == 1 && name == opts.Stdout {
			streams[1] = streams[0] // one file for both, written at one offset
			break
		}
		if name == "" {
			name = os.DevNull
		}
		if streams[i], err = os.Create(name); err != nil {
			return nil, err
		}
		ct.out = append(ct.out, streams[i])
	}
	ct.task, err = ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, streams[0], streams[1])))
	if err != nil {
		return nil, fmt.Errorf("create task %s: %w", id, err)
	}
	// Wait before Start so that an exit right after start is not missed.
	if ct.exit, err = ct.task.Wait(ctx); err != nil {
		return nil, err
	}
	ct.PID = int(ct.task.Pid())
	if ct.Cgroup, err = ProcessCgroup(ct.PID); err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	if ct.Rootfs, err = c.rootfs(ctx, ctr); err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	return ct, nil
}

// Start runs the workload.
func (ct *Container) Start(ctx context.Context) error {
	if err := ct.task.Start(ctx); err != nil {
		return fmt.Errorf("start %s: %w", ct.ID, err)
	}
	return nil
}

// Wait waits for the workload to exit and for its output to be written, and returns its
// exit status.
func (ct *Container) Wait(ctx context.Context) (uint32, error) {
	select {
	case st := <-ct.exit:
		ct.task.IO().Wait()
		code, _, err := st.Result()
		return code, err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Delete kills the workload if it still runs and removes the task, the container and its
// writable layer.
func (ct *Container) Delete(ctx context.Context) error {
	var errs []error
	if ct.task != nil {
		if _, err := ct.task.Delete(ctx, client.WithProcessKill); err != nil {
			errs = append(errs, err)
		}
	}
	if err := ct.ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil {
		errs = append(errs, err)
	}
	for _, f := range ct.out {
		f.Close()
	}
	return errors.Join(errs...)
}
