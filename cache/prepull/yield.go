package prepull

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// stale is how long an ingest may stand still and still count as a live pull: a pull
// abandoned by a crashed client leaves its ingest behind, and must not stop the agent forever.
const stale = 3 * time.Second

// yielder tells the agent's readers to pause while containerd ingests content that is not
// the agent's. An ingest is the agent's when its ref names a blob that the agent is
// fetching (containerd's refs are "layer-sha256:...", "manifest-sha256:..."); it is live
// when it is new or its offset moved in the last few seconds.
type yielder struct {
	c    *client.Client
	ns   string // the agent's namespace; ingests in others are never the agent's
	poll time.Duration

	mu  sync.Mutex
	own map[string]int // digests being fetched by the agent -> readers
	// closed holds when the agent's last reader of a digest closed: containerd's ingest
	// outlives the reader until the blob is committed, and is still the agent's then.
	closed  map[string]time.Time
	seen    map[string]ingest
	foreign bool
	checked time.Time
}

type ingest struct {
	offset int64
	moved  time.Time
}

func newYielder(c *client.Client, ns string, poll time.Duration) *yielder {
	return &yielder{c: c, ns: ns, poll: poll, own: map[string]int{}, closed: map[string]time.Time{}, seen: map[string]ingest{}}
}

func (y *yielder) add(dgst string, d int) {
	y.mu.Lock()
	defer y.mu.Unlock()
	y.own[dgst] += d
	if y.own[dgst] <= 0 {
		delete(y.own, dgst)
		y.closed[dgst] = time.Now()
	}
}

// wait returns once no foreign pull is live, or when ctx ends, and says how long it paused;
// it calls drop once before it starts to pause.
func (y *yielder) wait(ctx context.Context, drop func()) (time.Duration, error) {
	start := time.Now()
	for i := 0; ; i++ {
		foreign, err := y.check(ctx)
		if i == 0 && (err != nil || !foreign) {
			return 0, err // no pause: the check's own time is not yielded time
		}
		if err != nil || !foreign {
			return time.Since(start), err
		}
		if i == 0 {
			drop()
		}
		t := time.NewTimer(y.poll)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return time.Since(start), ctx.Err()
		}
	}
}

// check lists the ingests at most once a poll interval, for all readers together.
func (y *yielder) check(ctx context.Context) (bool, error) {
	y.mu.Lock()
	defer y.mu.Unlock()
	now := time.Now()
	if now.Sub(y.checked) < y.poll {
		return y.foreign, nil
	}
	// Ingests are per namespace: a pull in any of them (ctr and nerdctl use default, the
	// kubelet k8s.io) shares the link.
	nss, err := y.c.NamespaceService().List(ctx)
	if err != nil {
		return false, err
	}
	y.checked = now
	y.foreign = false
	seen := map[string]ingest{}
	for _, ns := range nss {
		sts, err := y.c.ContentStore().ListStatuses(namespaces.WithNamespace(ctx, ns))
		if err != nil {
			return false, err
		}
		for _, st := range sts {
			key := ns + "/" + st.Ref
			in, ok := y.seen[key]
			if !ok || st.Offset != in.offset {
				in = ingest{offset: st.Offset, moved: now}
			}
			seen[key] = in
			if now.Sub(in.moved) < stale && (ns != y.ns || !y.ownRef(st.Ref)) {
				y.foreign = true
			}
		}
	}
	y.seen = seen
	return y.foreign, nil
}

func (y *yielder) ownRef(ref string) bool {
	for d := range y.own {
		if strings.HasSuffix(ref, d) {
			return true
		}
	}
	for d, at := range y.closed {
		if time.Since(at) > stale {
			delete(y.closed, d)
		} else if strings.HasSuffix(ref, d) {
			return true
		}
	}
	return false
}
