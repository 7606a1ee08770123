// Package ctrtest is the test harness for container cold starts: a real containerd started
// under a temporary root, an in-process OCI registry on loopback with a rate-limited link,
// and builders for the test images.
package ctrtest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/coldtrace/coldtrace/internal/testenv"
)

// Containerd is a containerd daemon private to one test.
type Containerd struct {
	// Address is the gRPC socket.
	Address string
	// Root and State are the daemon's directories; snapshots live under Root.
	Root, State string
	// HostsDir is the registry hosts directory (config_path) the daemon reads for CRI
	// pulls and that ctr takes with --hosts-dir; see TrustHTTP.
	HostsDir string
	// Log is the daemon's log file.
	Log string

	config string
	cmd    *exec.Cmd
	done   chan error
}

const configTemplate = `version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = %q
`

// criTemplate completes configTemplate for pods through the CRI plugin (StartCRI): the
// pause image, a runc root of this daemon's own (the default /run/containerd/runc is shared
// by every daemon on the host) and the cgroupfs driver that takes kubelet-style parents.
// The daemon's sandbox lacks CAP_SYS_RESOURCE, so runc cannot set the OOM score adjustments
// below the daemon's own the kubelet asks for: restrict_oom_score_adj clamps them.
const criTemplate = `
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  Root = %q
  SystemdCgroup = false
`

// StartContainerd runs Debian's containerd (apt packages containerd and runc) as root with
// its own root, state and socket, and stops it, its containers and their mounts at the end
// of the test. It skips the test (fails it under CI=true) without root or the binaries.
func StartContainerd(t testing.TB) *Containerd {
	t.Helper()
	return startContainerd(t, "")
}

// startContainerd is StartContainerd with a CRI pause image (see criTemplate), none when
// empty.
func startContainerd(t testing.TB, sandboxImage string) *Containerd {
	t.Helper()
	testenv.RequireRoot(t)
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "runc"} {
		testenv.RequireBinary(t, bin)
	}

	dir := t.TempDir()
	// The socket path must stay under the 108 bytes of sun_path; t.TempDir paths carry
	// the test name and can be longer.
	sockDir, err := os.MkdirTemp("", "ctrd")
	if err != nil {
		t.Fatal(err)
	}
	c := &Containerd{
		Address:  filepath.Join(sockDir, "containerd.sock"),
		Root:     filepath.Join(dir, "root"),
		State:    filepath.Join(dir, "state"),
		HostsDir: filepath.Join(dir, "certs.d"),
		Log:      filepath.Join(dir, "containerd.log"),
	}
	if err := os.MkdirAll(c.HostsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	c.config = filepath.Join(dir, "config.toml")
	text := fmt.Sprintf(configTemplate, c.Root, c.State, c.Address, c.Address+".ttrpc", c.HostsDir)
	if sandboxImage != "" {
		text += fmt.Sprintf(criTemplate, sandboxImage, filepath.Join(c.State, "runc"))
	}
	if err := os.WriteFile(c.config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	c.start(t)
	t.Cleanup(func() {
		c.stop(t)
		if t.Failed() {
			c.logTail(t)
		}
		os.RemoveAll(sockDir)
	})
	if err := c.waitServing(10 * time.Second); err != nil {
		t.Fatalf("containerd did not come up: %v", err)
	}
	return c
}

// start runs the daemon, appending to its log.
func (c *Containerd) start(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(c.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	c.cmd = exec.Command("containerd", "--config", c.config)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	done := make(chan error, 1)
	c.done = done
	go func() { done <- c.cmd.Wait() }()
}

// Restart stops the daemon as an upgrade or a crash would, leaving its containers running
// under their shims, waits for down (the daemon is gone) and starts it again with the same
// root, state and socket. It returns once the daemon serves.
func (c *Containerd) Restart(t testing.TB, down func()) {
	t.Helper()
	c.terminate()
	if down != nil {
		down()
	}
	c.start(t)
	if err := c.waitServing(10 * time.Second); err != nil {
		t.Fatalf("containerd did not come back: %v", err)
	}
}

// terminate stops the daemon alone.
func (c *Containerd) terminate() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// Client connects to the daemon; the connection closes at the end of the test.
func (c *Containerd) Client(t testing.TB) *client.Client {
	t.Helper()
	cl, err := client.New(c.Address)
	if err != nil {
		t.Fatalf("connect to containerd: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// Ctr runs Debian's ctr against the daemon and returns its combined output; it fails the
// test when ctr fails.
func (c *Containerd) Ctr(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ctr", append([]string{"--address", c.Address}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TrustHTTP makes the daemon's own pulls (CRI, ctr --hosts-dir) reach host over plain HTTP.
func (c *Containerd) TrustHTTP(t testing.TB, host string) {
	t.Helper()
	dir := filepath.Join(c.HostsDir, host)
	text := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", host, host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (c *Containerd) waitServing(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case err := <-c.done:
			c.done <- err
			return fmt.Errorf("containerd exited: %v (log: %s)", err, c.Log)
		default:
		}
		err := c.ping()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Containerd) ping() error {
	if _, err := os.Stat(c.Address); err != nil {
		return err
	}
	cl, err := client.New(c.Address, client.WithTimeout(time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = cl.Version(ctx)
	return err
}

// stop kills every task (shims and containers outlive the daemon otherwise), stops the
// daemon and unmounts what it left under its directories.
func (c *Containerd) stop(t testing.TB) {
	if err := c.removeAll(); err != nil {
		t.Errorf("remove containers: %v", err)
	}
	c.terminate()
	for _, m := range mountsUnder(c.Root, c.State) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", m, err)
		}
	}
}

func (c *Containerd) removeAll() error {
	cl, err := client.New(c.Address, client.WithTimeout(2*time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nss, err := cl.NamespaceService().List(ctx)
	if err != nil {
		return err
	}
	for _, ns := range nss {
		ctrs, err := cl.Containers(namespaces.WithNamespace(ctx, ns))
		if err != nil {
			return err
		}
		for _, ctr := range ctrs {
			if err := removeContainer(namespaces.WithNamespace(context.Background(), ns), ctr); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeContainer kills a container's task and deletes both, within a deadline of its
// own: on a busy machine each takes seconds, and a test may leave many.
func removeContainer(ctx context.Context, ctr client.Container) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if task, err := ctr.Task(ctx, nil); err == nil {
		task.Kill(ctx, syscall.SIGKILL, client.WithKillAll)
		if ch, err := task.Wait(ctx); err == nil {
			<-ch
		}
		if _, err := task.Delete(ctx); err != nil {
			return fmt.Errorf("delete task %s: %w", ctr.ID(), err)
		}
	}
	if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil {
		return fmt.Errorf("delete container %s: %w", ctr.ID(), err)
	}
	return nil
}

// mountsUnder lists the mount points below the given directories, deepest first.
func mountsUnder(dirs ...string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var ms []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := fields[4]
		for _, d := range dirs {
			if strings.HasPrefix(mp, d+"/") {
				ms = append(ms, mp)
			}
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(ms)))
	return ms
}

func (c *Containerd) logTail(t testing.TB) {
	b, err := os.ReadFile(c.Log)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	t.Logf("containerd log (last %d lines):\n%s", len(lines), strings.Join(lines, "\n"))
}
