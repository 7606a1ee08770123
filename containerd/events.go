package containerd

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
)

// EventKind is the part of a container's life that an Event reports.
type EventKind int

const (
	ContainerCreated EventKind = iota + 1
	ContainerDeleted
	TaskCreated // the init process exists in the container's cgroup and waits for start
	TaskExited  // the init process exited
)

// Event is a container lifecycle event of the client's namespace.
type Event struct {
	Kind        EventKind
	ContainerID string
	// At is when containerd published it (for TaskExited: when the process exited).
	At time.Time
	// PID is the init process (TaskCreated, TaskExited); ExitStatus its status (TaskExited).
	PID        uint32
	ExitStatus uint32
	// Image is the reference the container was created from (ContainerCreated).
	Image string
}

var topics = map[string]EventKind{
	"/containers/create": ContainerCreated,
	"/containers/delete": ContainerDeleted,
	"/tasks/create":      TaskCreated,
	"/tasks/exit":        TaskExited,
}

// Watch streams the container lifecycle events of the client's namespace until ctx ends
// or the connection fails; the error channel then says why (nil when ctx ended). The
// subscription is made asynchronously: events published in the first instants may be
// missed.
func (c *Client) Watch(ctx context.Context) (<-chan Event, <-chan error) {
	var filters []string
	for topic := range topics {
		filters = append(filters, fmt.Sprintf("topic==%s,namespace==%s", strconv.Quote(topic), strconv.Quote(c.namespace)))
	}
	envs, errs := c.c.Subscribe(ctx, filters...)
	out := make(chan Event)
	outErr := make(chan error, 1)
	go func() {
		defer close(out)
		for {
			select {
			case env, open := <-envs:
				if !open {
					envs = nil // errs says why
					continue
				}
				ev, ok, err := decode(env.Topic, env.Event, env.Timestamp)
				if err != nil {
					outErr <- err
					return
				}
				if !ok {
					continue
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					outErr <- nil
					return
				}
			case err := <-errs:
				if ctx.Err() != nil {
					err = nil
				}
				outErr <- err
				return
			}
		}
	}()
	return out, outErr
}

// decode reads an event of one of the watched topics; ok is false for events that are
// not of the init process (an exec's exit).
func decode(topic string, any typeurl.Any, at time.Time) (ev Event, ok bool, err error) {
	v, err := typeurl.UnmarshalAny(any)
	if err != nil {
		return Event{}, false, fmt.Errorf("containerd event %s: %w", topic, err)
	}
	ev = Event{Kind: topics[topic], At: at}
	switch e := v.(type) {
	case *eventstypes.ContainerCreate:
		ev.ContainerID, ev.Image = e.ID, e.Image
	case *eventstypes.ContainerDelete:
		ev.ContainerID = e.ID
	case *eventstypes.TaskCreate:
		ev.ContainerID, ev.PID = e.ContainerID, e.Pid
	case *eventstypes.TaskExit:
		if e.ID != e.ContainerID {
			return Event{}, false, nil
		}
		ev.ContainerID, ev.PID, ev.ExitStatus = e.ContainerID, e.Pid, e.ExitStatus
		if e.ExitedAt != nil {
			ev.At = e.ExitedAt.AsTime()
		}
	default:
		return Event{}, false, nil
	}
	return ev, true, nil
}

// Existing is what the agent needs to know of a container that someone else created.
type Existing struct {
	ID          string
	Image       string // the reference it was created from
	ImageDigest string // the digest of the image's manifest (or index)
	Labels      map[string]string
	Rootfs      *Rootfs
	// RestartCount is the kubelet's count of the container's earlier runs in its pod (the
	// CRI attempt); zero for other containers.
	RestartCount int
}

// Inspect describes an existing container: its image, labels and root file system.
func (c *Client) Inspect(ctx context.Context, id string) (*Existing, error) {
	ctr, err := c.c.LoadContainer(ctx, id)
	if err != nil {
		return nil, err
	}
	info, err := ctr.Info(ctx)
	if err != nil {
		return nil, err
	}
	ex := &Existing{ID: id, Image: info.Image, Labels: info.Labels, RestartCount: criAttempt(info.Extensions)}
	img, err := c.c.ImageService().Get(ctx, info.Image)
	if err != nil {
		return ex, fmt.Errorf("container %s: image %s: %w", id, info.Image, err)
	}
	ex.ImageDigest = img.Target.Digest.String()
	if ex.Rootfs, err = c.rootfs(ctx, ctr); err != nil {
		return ex, fmt.Errorf("container %s: %w", id, err)
	}
	return ex, nil
}

// Live is a container of the client's namespace whose task exists.
type Live struct {
	ID      string
	Image   string
	Created time.Time // the container's create
	PID     uint32    // the task's init process
	// Started says that the task has been started: it is not waiting in its create.
	Started bool
}

// LiveContainers lists the containers of the client's namespace that have a task, running
// or created: what a watcher that missed events must catch up with.
func (c *Client) LiveContainers(ctx context.Context) ([]Live, error) {
	ctrs, err := c.c.Containers(ctx)
	if err != nil {
		return nil, err
	}
	var out []Live
	for _, ctr := range ctrs {
		task, err := ctr.Task(ctx, nil)
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", ctr.ID(), err)
		}
		info, err := ctr.Info(ctx, client.WithoutRefreshedMetadata)
		if errdefs.IsNotFound(err) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", ctr.ID(), err)
		}
		st, err := task.Status(ctx)
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", ctr.ID(), err)
		}
		out = append(out, Live{ID: ctr.ID(), Image: info.Image, Created: info.CreatedAt, PID: task.Pid(),
			Started: st.Status != client.Created})
	}
	return out, nil
}

// criMetadata is the extension in which the CRI plugin keeps its description of a
// container, as JSON: the kubelet's ContainerConfig among it.
const criMetadata = "io.cri-containerd.container.metadata"

// criAttempt is the attempt of a container that the CRI plugin created (the kubelet
// counts the restarts of a pod's container so), or 0.
func criAttempt(ext map[string]typeurl.Any) int {
	a, ok := ext[criMetadata]
	if !ok || a == nil {
		return 0
	}
	var m struct {
		Metadata struct {
			Config struct {
				Metadata struct {
					Attempt int `json:"attempt"`
				} `json:"metadata"`
			}
		}
	}
	if json.Unmarshal(a.GetValue(), &m) != nil {
		return 0
	}
	return m.Metadata.Config.Metadata.Attempt
}
