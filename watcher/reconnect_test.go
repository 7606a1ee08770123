package watcher

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/containerd"
	"github.com/coldtrace/coldtrace/trace"
)

// TestAgentSurvivesContainerdRestart stops containerd under a running agent and starts it
// again. A container created before the agent resubscribed is caught up and recorded,
// marked as joined late; one created after is recorded from its create as usual.
func TestAgentSurvivesContainerdRestart(t *testing.T) {
	n := startNode(t)
	// A first retry well after the restart leaves time to create a container unseen.
	saved := minBackoff
	minBackoff = 5 * time.Second
	t.Cleanup(func() { minBackoff = saved })
	n.startAgent(t)

	gap, after := "gap", "after"
	var mark int
	n.ctrd.Restart(t, func() {
		mark = n.log.waitFor(t, "containerd's events failed", 0)
		if err := n.agent.Ready(); err == nil {
			t.Error("the agent says it is ready while it resubscribes")
		}
	})
	// Listening late, so that the agent, which tracks it after the start, sees it ready.
	if err := n.runScript(gap, "cat /data/a.txt > /dev/null; sleep 8; exec httpd -f -p 8080"); err != nil {
		t.Fatal(err)
	}
	mark = n.log.waitFor(t, "resubscribed to containerd's events", mark)
	if err := n.agent.Ready(); err != nil {
		t.Errorf("the agent is not ready once resubscribed: %v", err)
	}
	// Created, then started once the agent tracks it: ctr run starts a task right after
	// creating it, and right after a restart containerd's events can come later than a
	// container this fast listens (seen: 16 ms from the task's create, against about 3 ms
	// otherwise), and a recording can only begin at the task's create event.
	cl, err := containerd.New(n.ctrd.Address, namespace)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ct, err := cl.Create(context.Background(), n.id(after), n.ref, containerd.CreateOptions{
		Args: []string{"sh", "-c", "cat /data/b.txt > /dev/null; exec httpd -f -p 8080"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Delete(context.Background())
	mark = n.log.waitFor(t, "recording container "+n.id(after), mark)
	if err := ct.Start(context.Background()); err != nil {
		t.Fatal(err)
	}

	rejoined := func(tr *trace.Trace) bool {
		return slices.ContainsFunc(tr.Warnings, func(w string) bool { return strings.Contains(w, "resubscribing") })
	}
	tg := n.trace(t, gap)
	if tg.Outcome != trace.OutcomeReady || tg.Workload.Image != n.ref || !tg.Incomplete || !rejoined(tg) {
		t.Errorf("%s: outcome %s (%s) of image %s, incomplete %v, warnings %q: want ready, joined late",
			gap, tg.Outcome, tg.Error, tg.Workload.Image, tg.Incomplete, tg.Warnings)
	}
	ta := n.trace(t, after)
	if ta.Outcome != trace.OutcomeReady || ta.Incomplete || rejoined(ta) {
		t.Errorf("%s: outcome %s (%s), incomplete %v, warnings %q: want ready from its create",
			after, ta.Outcome, ta.Error, ta.Incomplete, ta.Warnings)
	}
	if f := fileOf(ta, "/data/b.txt"); f == nil || f.BytesRead != 5000 {
		t.Errorf("%s: /data/b.txt %+v, want 5000 bytes read", after, f)
	}
	t.Logf("%s: %s after %v; %s: %s after %v", gap, tg.Outcome, tg.Duration, after, ta.Outcome, ta.Duration)
}

// fileOf is the trace's file at path, or nil.
func fileOf(tr *trace.Trace, path string) *trace.File {
	for i := range tr.Files {
		if tr.Files[i].Path == path {
			return &tr.Files[i]
		}
	}
	return nil
}
