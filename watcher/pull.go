package watcher

import (
	"context"
	"time"

	"github.com/coldtrace/coldtrace/containerd"
)

// created is what the watcher knows of a container before its task: when it was created
// and from which image.
type created struct {
	at    time.Time
	image string
	// rejoin: the watcher was not subscribed to containerd's events when the container's
	// task was created and started.
	rejoin bool
}

func (c created) rejoined() created {
	c.rejoin = true
	return c
}

// noteCreate remembers a container's create. It asks containerd nothing: the event loop
// must be free for the task's create that follows (see track).
func (a *Watcher) noteCreate(id, image string, at time.Time) {
	a.mu.Lock()
	a.created[id] = created{at: at, image: image}
	a.mu.Unlock()
}

// recentPull looks for the pull of the container's image that preceded its create.
func (a *Watcher) recentPull(ctx context.Context, c created) (*containerd.Pulled, []string) {
	if c.image == "" {
		return nil, nil
	}
	p, warnings, err := a.client.RecentPull(ctx, a.ingests, c.image, c.at, a.opts.PullWindow)
	if err != nil {
		warnings = append(warnings, "looking for the pull of the container's image: "+err.Error())
	}
	return p, warnings
}
