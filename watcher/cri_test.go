package watcher

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coldtrace/coldtrace/advisor"
	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

// TestAgentCRIPodComplete starts pods through containerd's CRI plugin as the kubelet does
// (pull, the sandbox under /kubepods/besteffort/pod<uid> on the host network, then the app
// container) with the agent on the kubelet's namespace. The sandbox's runc reads share
// the kernel's read batches with the app container's first reads, which must all be in
// its trace: each file with the bytes the workload says it read. Three pods, one after
// the other, give the batches three chances to mix. runc's work in the container's
// cgroup is the create phase, up to the entrypoint's exec, and none of its files (the
// host's loader and libraries, /proc/self/*, the bundle's rootfs/etc/hosts) is in the
// trace or the manifest: only the image's files the workload read.
func TestAgentCRIPodComplete(t *testing.T) {
	testenv.RequireBPF(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{})
	img, err := ctrtest.BuildImage([]v1.Layer{ctrtest.BusyboxLayer(t), mustLayer(t, readerLayerFiles(t)...)}, []string{"/reader"}, []string{"-", readerDir})
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "test/reader:v1", img)
	cri := ctrtest.StartCRI(t, reg)
	dataDir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	log := &logWriter{t: t}
	a, err := Start(ctx, Options{Address: cri.Address, Namespace: ctrtest.CRINamespace, DataDir: dataDir,
		Timeout: 30 * time.Second, HostsDir: cri.HostsDir, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sync.OnceFunc(func() {
		cancel()
		if err := a.Wait(); err != nil {
			t.Errorf("agent: %v", err)
		}
	}))

	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer rcancel()
	if _, err := cri.Pull(rctx, ref); err != nil {
		t.Fatal(err)
	}
	var traces []*trace.Trace
	for _, name := range []string{"web-1", "web-2", "web-3"} {
		pod, err := cri.RunPod(rctx, ctrtest.PodConfig{Name: name, Namespace: "shop", QoS: ctrtest.BestEffort})
		if err != nil {
			t.Fatal(err)
		}
		id, err := cri.RunContainer(rctx, pod, ctrtest.ContainerConfig{Name: "server", Image: ref})
		if err != nil {
			t.Fatal(err)
		}
		tr := waitTrace(t, filepath.Join(dataDir, "traces", ctrtest.CRINamespace, id+".json.gz"))
		if w := tr.Workload; w.Pod != name || w.Namespace != "shop" || w.Container != "server" {
			t.Errorf("%s: workload %+v", name, w)
		}
		report, err := cri.Log(rctx, id)
		if err != nil {
			t.Fatal(err)
		}
		checkReads(t, name, tr, report)
		checkRuntime(t, name, tr)
		traces = append(traces, tr)
	}
	m, err := advisor.BuildManifest(traces, advisor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Spec.HotSet) != readerFiles+1 {
		t.Errorf("the manifest has %d hot files, want the reader and its %d files", len(m.Spec.HotSet), readerFiles)
	}
	for _, e := range m.Spec.HotSet {
		if e.Layer == "" || e.Path != "reader" && !strings.HasPrefix(e.Path, readerDir[1:]+"/") {
			t.Errorf("manifest entry %s (layer %q) is not a file the workload read from the image", e.Path, e.Layer)
		}
	}
}

// checkRuntime checks that runc's part of a container's start is in its trace as the
// create phase and its processes, without the files runc touched: every file is the
// image's or in the test's volume at /out, and the create phase ends at the entrypoint's
// exec.
func checkRuntime(t *testing.T, name string, tr *trace.Trace) {
	t.Helper()
	var entry *trace.Process
	runtime := 0
	for i, p := range tr.Processes {
		switch {
		case p.Runtime:
			runtime++
		case p.Exe == "/reader":
			entry = &tr.Processes[i]
		default:
			t.Errorf("%s: process %+v is neither runc's nor the workload's", name, p)
		}
	}
	if entry == nil || runtime == 0 {
		t.Fatalf("%s: %d runtime processes, entrypoint %+v, in %+v", name, runtime, entry, tr.Processes)
	}
	for _, f := range tr.Files {
		// Pages of the disk's own cache (file-system metadata, the block device's inode)
		// that came in while the workload read files are its own, though unnamed; on a
		// busy machine they are evicted between runs.
		metadata := strings.HasPrefix(f.Path, "inode:") && f.BytesRead == 0 && f.MappedBytes == 0
		if !metadata && (f.Layer == nil || f.Layer.Where != "image" && !(f.Layer.Where == "volume" && strings.HasPrefix(f.Path, "/out/"))) {
			t.Errorf("%s: %s (layer %+v) is not the image's: runtime plumbing in the trace", name, f.Path, f.Layer)
		}
	}
	if create, ok := tr.Phase(trace.PhaseCreate); !ok || create.End != entry.Exec {
		t.Errorf("%s: create phase %+v, want it to end at the entrypoint's exec at %v", name, create, entry.Exec)
	}
}

func mustLayer(t *testing.T, files ...ctrtest.File) v1.Layer {
	t.Helper()
	l, err := ctrtest.Layer(files...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// waitTrace waits for the trace at p.
func waitTrace(t *testing.T, p string) *trace.Trace {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		tr, err := trace.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	t.Fatalf("no trace at %s", p)
	return nil
}
