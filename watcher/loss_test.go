package watcher

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coldtrace/coldtrace/containerd"
	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/trace"
)

// TestAgentCountsUnroutedEvents has the kernel track a cgroup that the agent knows nothing
// of, as when routing goes wrong, while a container is being recorded: a process there
// forks and reads. Its events reach no recording, and since the agent cannot tell whose
// they were, the container's trace must say that events were lost and be incomplete.
func TestAgentCountsUnroutedEvents(t *testing.T) {
	n := buildNode(t, ctrtest.RegistryOptions{}, readerLayerFiles(t)...)
	n.pull(t)
	n.startAgent(t)
	out := t.TempDir()
	if err := n.runReader("lossy", out, -1, "-g", "/out/go"); err != nil {
		t.Fatal(err)
	}
	n.log.waitFor(t, "recording container "+n.id("lossy"), 0)

	mnt, _, err := containerd.Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mnt, fmt.Sprintf("coldtrace-stray-%08x", rand.Uint32()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	cg, err := containerd.CgroupAt(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.agent.probes.TrackCgroup(cg.ID); err != nil {
		t.Fatal(err)
	}
	defer n.agent.probes.UntrackCgroup(cg.ID)
	script := "echo $$ > " + filepath.Join(dir, "cgroup.procs") + "; cat /bin/busybox > /dev/null"
	if b, err := exec.Command("/bin/sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if err := os.WriteFile(filepath.Join(out, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	tr := n.trace(t, "lossy")
	if tr.Outcome != trace.OutcomeReady || !tr.Incomplete ||
		!slices.ContainsFunc(tr.Warnings, func(w string) bool { return strings.Contains(w, "reached no recording") }) {
		t.Errorf("outcome %s, incomplete %v, warnings %q: want the stray events counted", tr.Outcome, tr.Incomplete, tr.Warnings)
	}
	t.Logf("warnings %q", tr.Warnings)
}
