package watcher

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coldtrace/coldtrace/containerd"
	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

const namespace = "k8s.io"

// node is a containerd with an image pulled into the kubelet's namespace: busybox in
// layer 0, /data/a.txt and /data/b.txt in layer 1.
type node struct {
	ctrd        *ctrtest.Containerd
	reg         *ctrtest.Registry
	ref, digest string
	layers      []string // the layers' digests
	dataDir     string
	log         *logWriter // the agent's
	agent       *Watcher
	// suffix makes container ids unique: containerd 1.6 keeps runc's state under the
	// host-wide /run/containerd/runc/NAMESPACE/ID, shared with every other test's daemon.
	suffix string
}

// id is the container id the tests call name.
func (n *node) id(name string) string { return name + n.suffix }

func startNode(t *testing.T) *node {
	t.Helper()
	n := buildNode(t, ctrtest.RegistryOptions{})
	n.pull(t)
	return n
}

// pull has ctr pull the image into the kubelet's namespace.
func (n *node) pull(t *testing.T) {
	t.Helper()
	n.ctrd.Ctr(t, "-n", namespace, "images", "pull", "--hosts-dir", n.ctrd.HostsDir, n.ref)
}

// buildNode starts containerd and a registry with the image; extra files go in its
// second layer.
func buildNode(t *testing.T, opts ctrtest.RegistryOptions, extra ...ctrtest.File) *node {
	t.Helper()
	testenv.RequireBPF(t)
	testenv.RequireBinary(t, "ctr")
	ctrd := ctrtest.StartContainerd(t)
	return newNode(t, ctrd, ctrtest.StartRegistry(t, opts), extra...)
}

// newNode is buildNode on a containerd and registry of the caller's.
func newNode(t *testing.T, ctrd *ctrtest.Containerd, reg *ctrtest.Registry, extra ...ctrtest.File) *node {
	t.Helper()
	bin, err := os.ReadFile("/bin/busybox")
	testenv.Require(t, "/bin/busybox", err == nil, "apt-get install busybox-static")
	base := []ctrtest.File{{Path: "/bin/busybox", Mode: 0o755, Data: bin}}
	for _, applet := range []string{"sh", "cat", "httpd"} {
		base = append(base, ctrtest.File{Path: "/bin/" + applet, Link: "busybox"})
	}
	var layers []v1.Layer
	for _, files := range [][]ctrtest.File{base, append([]ctrtest.File{
		{Path: "/data/a.txt", Data: []byte(strings.Repeat("a", 3000))},
		{Path: "/data/b.txt", Data: []byte(strings.Repeat("b", 5000))},
	}, extra...)} {
		l, err := ctrtest.Layer(files...)
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	var digests []string
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d.String())
	}
	img, err := ctrtest.BuildImage(layers, []string{"/bin/sh", "-c"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	n := &node{ctrd: ctrd, reg: reg, ref: reg.Push(t, "test/web:v1", img), digest: d.String(), layers: digests, dataDir: t.TempDir(), suffix: fmt.Sprintf("-%08x", rand.Uint32())}
	ctrd.TrustHTTP(t, reg.Host)
	return n
}

// startAgent runs the agent against the node until stop or the end of the test.
func (n *node) startAgent(t *testing.T) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n.log = &logWriter{t: t}
	a, err := Start(ctx, Options{Address: n.ctrd.Address, Namespace: namespace, DataDir: n.dataDir,
		Timeout: 30 * time.Second, HostsDir: n.ctrd.HostsDir, Log: n.log})
	if err != nil {
		t.Fatal(err)
	}
	n.agent = a
	stop = sync.OnceFunc(func() {
		cancel()
		if err := a.Wait(); err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	t.Cleanup(stop)
	return stop
}

// run starts a container with ctr, not through coldtrace, serving on a port after
// reading one file; labels are ctr's --label KEY=VALUE.
func (n *node) run(id, file string, labels ...string) error {
	return n.runScript(id, "cat "+file+" > /dev/null; exec httpd -f -p 8080", labels...)
}

// runScript starts a container with ctr that runs a shell script.
func (n *node) runScript(id, script string, labels ...string) error {
	args := []string{"--address", n.ctrd.Address, "-n", namespace, "run", "-d"}
	for _, l := range labels {
		args = append(args, "--label", l)
	}
	args = append(args, n.ref, n.id(id), "sh", "-c", script)
	out, err := exec.Command("ctr", args...).CombinedOutput()
	if err != nil {
		return errors.New(string(out))
	}
	return nil
}

// trace waits for the agent's trace of a container.
func (n *node) trace(t *testing.T, id string) *trace.Trace {
	t.Helper()
	return waitTrace(t, filepath.Join(n.dataDir, "traces", namespace, n.id(id)+".json.gz"))
}

// cgroupID is the v2 cgroup id of a running container.
func cgroupID(t *testing.T, id string) uint64 {
	t.Helper()
	cg, err := containerd.CgroupAt(cgroupDir(t, id))
	if err != nil {
		t.Fatal(err)
	}
	return cg.ID
}

// TestAgentRecordsCtrRun records a container that ctr starts, labelled as the CRI plugin
// labels a pod's container: ready at its listen, with its image and pod, its files in
// their layers and its phases in order. A pod sandbox, labelled so, is not recorded.
func TestAgentRecordsCtrRun(t *testing.T) {
	n := startNode(t)
	stop := n.startAgent(t)
	if err := n.run("pause", "/data/b.txt", labelKind+"=sandbox"); err != nil {
		t.Fatal(err)
	}
	err := n.run("web", "/data/a.txt", labelKind+"=container", "io.kubernetes.pod.name=web-7d4f",
		"io.kubernetes.pod.namespace=shop", "io.kubernetes.container.name=server")
	if err != nil {
		t.Fatal(err)
	}
	tr := n.trace(t, "web")
	cg := cgroupID(t, n.id("web"))
	stop()
	if _, err := os.Stat(filepath.Join(n.dataDir, "traces", namespace, n.id("pause")+".json.gz")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the pod sandbox was recorded (%v)", err)
	}

	if tr.Outcome != trace.OutcomeReady || tr.Error != "" || tr.Incomplete {
		t.Errorf("outcome %s (%s), incomplete %v, warnings %v", tr.Outcome, tr.Error, tr.Incomplete, tr.Warnings)
	}
	if w := tr.Workload; w.ContainerID != n.id("web") || w.Image != n.ref || w.ImageDigest != n.digest ||
		w.Pod != "web-7d4f" || w.Namespace != "shop" || w.Container != "server" {
		t.Errorf("workload %+v, want container server of pod shop/web-7d4f, id web, of %s (%s)", w, n.ref, n.digest)
	}
	if tr.Ready == nil || !strings.HasSuffix(tr.Ready.Addr, ":8080") || tr.Ready.At != tr.Duration {
		t.Errorf("ready %+v in a trace of %v", tr.Ready, tr.Duration)
	}
	files := map[string]trace.File{}
	for _, f := range tr.Files {
		files[f.Path] = f
	}
	// /bin/sh is the entrypoint, a link to /bin/busybox.
	for path, layer := range map[string]int{"/bin/sh": 0, "/data/a.txt": 1} {
		if f, ok := files[path]; !ok || f.Layer == nil || f.Layer.Index != layer || f.Layer.Digest != n.layers[layer] || f.Layer.Where != "image" {
			t.Errorf("%s: %+v, want it in image layer %d", path, f.Layer, layer)
		}
	}
	if f := files["/data/a.txt"]; f.BytesRead != 3000 {
		t.Errorf("/data/a.txt: read %d bytes, want 3000", f.BytesRead)
	}
	if len(tr.Processes) == 0 {
		t.Error("no processes")
	}
	for _, p := range tr.Processes {
		if p.Cgroup != cg {
			t.Errorf("process %d (%s) in cgroup %d, not the container's %d", p.PID, p.Comm, p.Cgroup, cg)
		}
	}
	phasesInOrder(t, tr, trace.PhaseCreate, trace.PhaseInit)
}

// phasesInOrder checks that the trace has the phases, each within the trace and starting
// once the one before has ended, and logs them.
func phasesInOrder(t *testing.T, tr *trace.Trace, names ...trace.PhaseName) {
	t.Helper()
	var prev trace.Phase
	for _, name := range names {
		p, ok := tr.Phase(name)
		switch {
		case !ok:
			t.Errorf("no %s phase", name)
			continue
		case p.Start < 0 || p.End < p.Start || p.End > tr.Duration:
			t.Errorf("%s: [%v, %v] in a trace of %v", name, p.Start, p.End, tr.Duration)
		case prev.Name != "" && p.Start < prev.End:
			t.Errorf("%s starts at %v, before %s ends at %v", name, p.Start, prev.Name, prev.End)
		}
		t.Logf("%-7s %12v .. %12v  %d bytes", name, p.Start, p.End, p.Bytes)
		prev = p
	}
}

// TestAgentConcurrentContainers starts two containers at once: each trace holds its own
// container's processes and files, and none of the other's.
func TestAgentConcurrentContainers(t *testing.T) {
	n := startNode(t)
	n.startAgent(t)
	reads := map[string]string{"one": "/data/a.txt", "two": "/data/b.txt"}
	var wg sync.WaitGroup
	errs := make(chan error, len(reads))
	for id, file := range reads {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- n.run(id, file) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	pids := map[int]string{}
	for id, file := range reads {
		tr := n.trace(t, id)
		cg := cgroupID(t, n.id(id))
		if tr.Outcome != trace.OutcomeReady || tr.Workload.ContainerID != n.id(id) {
			t.Errorf("%s: outcome %s (%s) of container %s", id, tr.Outcome, tr.Error, tr.Workload.ContainerID)
		}
		for _, p := range tr.Processes {
			if p.Cgroup != cg {
				t.Errorf("%s: process %d (%s) in cgroup %d, not the container's %d", id, p.PID, p.Comm, p.Cgroup, cg)
			}
			if other, ok := pids[p.PID]; ok {
				t.Errorf("process %d is in the traces of both %s and %s", p.PID, other, id)
			}
			pids[p.PID] = id
		}
		for _, f := range tr.Files {
			if strings.HasPrefix(f.Path, "/data/") && f.Path != file {
				t.Errorf("%s: the other container's %s is in the trace", id, f.Path)
			}
		}
		t.Logf("%s: %d processes, %d files, ready after %v", id, len(tr.Processes), len(tr.Files), tr.Duration)
	}
}

// logWriter sends the agent's log to the test's, and keeps it for waitFor.
type logWriter struct {
	t    *testing.T
	mu   sync.Mutex
	text strings.Builder
}

func (w *logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	w.mu.Lock()
	defer w.mu.Unlock()
	w.text.Write(b)
	return len(b), nil
}

// waitFor waits until the log holds s after its first skip bytes and returns the log's
// length then.
func (w *logWriter) waitFor(t *testing.T, s string, skip int) int {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		w.mu.Lock()
		text := w.text.String()
		w.mu.Unlock()
		if strings.Contains(text[skip:], s) {
			return len(text)
		}
	}
	t.Fatalf("the agent did not log %q", s)
	return 0
}

// TestAgentContainerCreatedBefore starts the task of a container created before the agent
// ran: it is recorded from its task's create, and its trace says so.
func TestAgentContainerCreatedBefore(t *testing.T) {
	n := startNode(t)
	n.ctrd.Ctr(t, "-n", namespace, "containers", "create", n.ref, n.id("early"), "httpd", "-f", "-p", "8080")
	n.startAgent(t)
	n.ctrd.Ctr(t, "-n", namespace, "tasks", "start", "-d", n.id("early"))
	tr := n.trace(t, "early")
	if tr.Outcome != trace.OutcomeReady || tr.Workload.Image != n.ref {
		t.Errorf("outcome %s (%s) of image %s", tr.Outcome, tr.Error, tr.Workload.Image)
	}
	if !slices.ContainsFunc(tr.Warnings, func(w string) bool { return strings.Contains(w, "created before the agent watched") }) {
		t.Errorf("warnings %q do not say that time zero is the task's create", tr.Warnings)
	}
}

// TestAgentTracksFromCgroupCreation holds the agent back (its lock, which its event
// handler and its event reader both take) while ctr creates and starts a container that
// reads a file and execs a server: the container's whole start is over before the agent
// hears of it. The trace must still hold all of it from the init process's exec, as the
// kernel tracked the container's cgroup when runc created it.
func TestAgentTracksFromCgroupCreation(t *testing.T) {
	n := startNode(t)
	n.startAgent(t)
	// A first container shows the agent where this containerd puts containers' cgroups
	// (/k8s.io: on a new node it appears with the first container).
	if err := n.run("first", "/data/b.txt"); err != nil {
		t.Fatal(err)
	}
	n.trace(t, "first")

	n.agent.mu.Lock()
	err := n.run("held", "/data/a.txt")
	var server int
	if err == nil {
		server, err = waitForComm(cgroupDir(t, n.id("held")), "httpd")
	}
	n.agent.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	tr := n.trace(t, "held")
	if tr.Outcome != trace.OutcomeReady || tr.Incomplete || len(tr.Warnings) > 0 {
		t.Errorf("outcome %s (%s), incomplete %v, warnings %v", tr.Outcome, tr.Error, tr.Incomplete, tr.Warnings)
	}
	// The server is the container's init process, which exec'd the shell and then
	// (busybox running its applet) itself again.
	if !slices.ContainsFunc(tr.Processes, func(p trace.Process) bool { return p.PID == server && p.Exec > 0 }) {
		t.Errorf("processes %+v: the server (pid %d) and its exec are missing", tr.Processes, server)
	}
	if !slices.ContainsFunc(tr.Files, func(f trace.File) bool { return f.Path == "/data/a.txt" && f.BytesRead == 3000 }) {
		t.Errorf("the read of /data/a.txt (3000 bytes) is not in the trace")
	}
	t.Logf("%d processes, %d files, ready after %v", len(tr.Processes), len(tr.Files), tr.Duration)
}

// TestAgentRecordsContainerGoneBeforeTracked holds the agent back while a container reads
// a file and exits: its init process is gone from /proc when the agent handles the task's
// creation, as happens to an init container or a crash on a busy node. The kernel tracked
// the cgroup from its creation, so the trace must still hold the read and the exit.
func TestAgentRecordsContainerGoneBeforeTracked(t *testing.T) {
	n := startNode(t)
	n.startAgent(t)
	if err := n.run("first", "/data/b.txt"); err != nil { // see TestAgentTracksFromCgroupCreation
		t.Fatal(err)
	}
	n.trace(t, "first")

	n.agent.mu.Lock()
	err := n.runScript("gone", "cat /data/a.txt > /dev/null; exit 3")
	for deadline := time.Now().Add(10 * time.Second); err == nil; time.Sleep(10 * time.Millisecond) {
		if b, rerr := os.ReadFile(filepath.Join(cgroupDir(t, n.id("gone")), "cgroup.procs")); rerr != nil || len(b) == 0 {
			break
		}
		if time.Now().After(deadline) {
			err = errors.New("the container still runs after 10s")
		}
	}
	n.agent.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	tr := n.trace(t, "gone")
	if tr.Outcome != trace.OutcomeExited {
		t.Errorf("outcome %s (%s), want exited", tr.Outcome, tr.Error)
	}
	if !slices.ContainsFunc(tr.Files, func(f trace.File) bool { return f.Path == "/data/a.txt" && f.BytesRead == 3000 }) {
		t.Errorf("the read of /data/a.txt (3000 bytes) is not in the trace: %+v", tr.Files)
	}
}

// cgroupDir is the cgroup v2 directory of a container.
func cgroupDir(t *testing.T, id string) string {
	t.Helper()
	mnt, _, err := containerd.Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(mnt, namespace, id)
}

// waitForComm waits until a process of the cgroup is named comm, and returns its pid.
func waitForComm(dir, comm string) (int, error) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		for _, pid := range strings.Fields(string(b)) {
			if c, _ := os.ReadFile("/proc/" + pid + "/comm"); strings.TrimSpace(string(c)) == comm {
				return strconv.Atoi(pid)
			}
		}
	}
	return 0, fmt.Errorf("no %s in %s after 10s", comm, dir)
}
