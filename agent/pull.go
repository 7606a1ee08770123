package agent

import (
	"context"
	"time"

	"github.com/coldtrace/coldtrace/collector/containerd"
)

// created is what the agent knows of a container before its task: when it was created,
// and the pull of its image when the image arrived shortly before.
type created struct {
	at           time.Time
	pull         *containerd.Pulled
	pullWarnings []string
	// rejoin: the agent was not subscribed to containerd's events when the container's
	// task was created and started.
	rejoin bool
}

func (c created) rejoined() created {
	c.rejoin = true
	return c
}

// noteCreate remembers a container's create, and looks for the recent pull of its image
// in containerd's content store and the agent's log of ingests. It runs before the task's
// create is handled, so that the trace can begin at the pull.
func (a *Agent) noteCreate(ctx context.Context, id, image string, at time.Time) {
	c := created{at: at}
	if image != "" {
		var err error
		c.pull, c.pullWarnings, err = a.client.RecentPull(ctx, a.ingests, image, at, a.opts.PullWindow)
		if err != nil {
			c.pullWarnings = append(c.pullWarnings, "looking for the pull of the container's image: "+err.Error())
		}
	}
	a.mu.Lock()
	a.created[id] = c
	a.mu.Unlock()
}
