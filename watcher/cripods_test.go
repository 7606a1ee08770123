package watcher

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/containerd"
	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

// TestAgentRecordsCRIPods drives containerd's CRI plugin as the kubelet does while the
// agent watches: the image pulled by CRI, pods in the three QoS classes' cgroup parents,
// an init container, a container that crashes and is restarted, and two pods started at
// once. Every container gets a complete trace in its pod's cgroup, with its pod and its
// restart count; the sandboxes get none.
func TestAgentRecordsCRIPods(t *testing.T) {
	testenv.RequireBPF(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{})
	cri := ctrtest.StartCRI(t, reg)
	n := newNode(t, cri.Containerd, reg)
	n.suffix = "" // the CRI plugin names the containers
	n.startAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cri.Pull(ctx, n.ref); err != nil {
		t.Fatal(err)
	}
	mnt, _, err := containerd.Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}

	type want struct {
		pod      *ctrtest.Pod
		name     string
		file     string // read before it listens or exits
		outcome  trace.Outcome
		attempt  int
		exitCode int
	}
	var (
		mu      sync.Mutex
		wants   = map[string]want{} // by container id
		sandbox []string
	)
	run := func(pod *ctrtest.Pod, name string, attempt int, script string) string {
		t.Helper()
		id, err := cri.RunContainer(ctx, pod, ctrtest.ContainerConfig{Name: name, Image: n.ref,
			Command: []string{"sh", "-c", script}, Attempt: uint32(attempt)})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	serve := func(file string) string {
		return fmt.Sprintf("cat %s > /dev/null; exec httpd -f -p 127.0.0.1:%d", file, testenv.FreePort(t))
	}
	runPod := func(name, qos string) *ctrtest.Pod {
		t.Helper()
		p, err := cri.RunPod(ctx, ctrtest.PodConfig{Name: name, Namespace: "shop", QoS: qos})
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		sandbox = append(sandbox, p.ID)
		mu.Unlock()
		return p
	}

	// runToExit runs a container to its end, as the kubelet does an init container before
	// the app's, or one that crashes before its restart.
	runToExit := func(pod *ctrtest.Pod, name string, attempt int, file string, code int) {
		t.Helper()
		id := run(pod, name, attempt, fmt.Sprintf("cat %s > /dev/null; exit %d", file, code))
		if st, err := cri.WaitExited(ctx, id); err != nil || st.ExitCode != int32(code) {
			t.Fatalf("%s: %+v, %v; want exit code %d", name, st, err, code)
		}
		wants[id] = want{pod, name, file, trace.OutcomeExited, attempt, code}
	}

	// Guaranteed, with an init container that runs to its end before the app starts.
	g := runPod("llm-0", ctrtest.Guaranteed)
	runToExit(g, "fetch", 0, "/data/b.txt", 0)
	wants[run(g, "server", 0, serve("/data/a.txt"))] = want{g, "server", "/data/a.txt", trace.OutcomeReady, 0, 0}

	// Burstable, whose container crashes; the kubelet starts attempt 1, which serves.
	b := runPod("web-0", ctrtest.Burstable)
	runToExit(b, "web", 0, "/data/a.txt", 3)
	wants[run(b, "web", 1, serve("/data/b.txt"))] = want{b, "web", "/data/b.txt", trace.OutcomeReady, 1, 0}

	// Two best-effort pods at once.
	var wg sync.WaitGroup
	for _, name := range []string{"batch-0", "batch-1"} {
		cmd := serve("/data/a.txt") // FreePort fails the test: not from the goroutines
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := cri.RunPod(ctx, ctrtest.PodConfig{Name: name, Namespace: "shop", QoS: ctrtest.BestEffort})
			if err != nil {
				t.Error(err)
				return
			}
			id, err := cri.RunContainer(ctx, p, ctrtest.ContainerConfig{Name: "worker", Image: n.ref, Command: []string{"sh", "-c", cmd}})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			sandbox = append(sandbox, p.ID)
			wants[id] = want{p, "worker", "/data/a.txt", trace.OutcomeReady, 0, 0}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	pids, cgroups := map[int]string{}, map[uint64]string{}
	for id, w := range wants {
		tr := n.trace(t, id)
		label := fmt.Sprintf("%s/%s attempt %d", w.pod.Config.Metadata.Name, w.name, w.attempt)
		if tr.Outcome != w.outcome || tr.Incomplete {
			t.Errorf("%s: outcome %s (%s), incomplete %v, warnings %q; want %s", label, tr.Outcome, tr.Error, tr.Incomplete, tr.Warnings, w.outcome)
		}
		if w.exitCode != 0 && !strings.Contains(tr.Error, fmt.Sprintf("exit status %d", w.exitCode)) {
			t.Errorf("%s: error %q, want exit status %d", label, tr.Error, w.exitCode)
		}
		if wl := tr.Workload; wl.Pod != w.pod.Config.Metadata.Name || wl.Namespace != "shop" || wl.Container != w.name ||
			wl.RestartCount != w.attempt || wl.ImageDigest != n.digest {
			t.Errorf("%s: workload %+v", label, wl)
		}
		if len(tr.Processes) == 0 {
			t.Fatalf("%s: no processes", label)
		}
		// The container's cgroup is under the pod's, as the kubelet's cgroupfs driver
		// places it: /kubepods[/<qos>]/pod<uid>/<container id>. The CRI plugin removed
		// those of the containers that exited: theirs is one of their own.
		cg := containerd.Cgroup{ID: tr.Processes[0].Cgroup}
		if w.outcome == trace.OutcomeReady {
			if cg, err = containerd.CgroupAt(filepath.Join(mnt, w.pod.CgroupParent, id)); err != nil {
				t.Errorf("%s: %v", label, err)
			}
		}
		if other, ok := cgroups[cg.ID]; ok {
			t.Errorf("%s and %s have the same cgroup %d", label, other, cg.ID)
		}
		cgroups[cg.ID] = label
		for _, p := range tr.Processes {
			if p.Cgroup != cg.ID {
				t.Errorf("%s: process %d (%s) in cgroup %d, not the container's %d (%s)", label, p.PID, p.Comm, p.Cgroup, cg.ID, cg.Path)
			}
			if other, ok := pids[p.PID]; ok {
				t.Errorf("process %d is in the traces of both %s and %s", p.PID, other, label)
			}
			pids[p.PID] = label
		}
		var read *trace.File
		for i, f := range tr.Files {
			if f.Path == w.file {
				read = &tr.Files[i]
			} else if strings.HasPrefix(f.Path, "/data/") {
				t.Errorf("%s: another container's %s is in the trace", label, f.Path)
			}
		}
		if read == nil || read.Layer == nil || read.Layer.Index != 1 || read.BytesRead == 0 {
			t.Errorf("%s: %s: %+v, want it read from image layer 1; warnings %q", label, w.file, read, tr.Warnings)
			for _, p := range tr.Processes {
				t.Logf("%s: process %+v", label, p)
			}
		}
		phasesInOrder(t, tr, trace.PhaseCreate, trace.PhaseInit)
	}
	for _, id := range sandbox {
		if _, err := os.Stat(filepath.Join(n.dataDir, "traces", namespace, id+".json.gz")); err == nil {
			t.Errorf("the sandbox %s was recorded", id)
		}
	}
}
