package watcher

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

// TestAgentCRIPodComplete starts pods through containerd's CRI plugin as the kubelet does
// (pull, the sandbox under /kubepods/besteffort/pod<uid> on the host network, then the app
// container) with the agent on the kubelet's namespace. The sandbox's runc reads share
// the kernel's read batches with the app container's first reads, which must all be in
// its trace: each file with the bytes the workload says it read. Three pods, one after
// the other, give the batches three chances to mix.
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
