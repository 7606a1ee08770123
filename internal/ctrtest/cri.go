package ctrtest

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CRI is a containerd whose CRI plugin serves pods, and a client that drives it as the
// kubelet does. Pods run on the host network: there is no CNI here.
type CRI struct {
	*Containerd
	// Runtime and Image are the raw CRI services, for calls the helpers below do not make.
	Runtime runtimeapi.RuntimeServiceClient
	Image   runtimeapi.ImageServiceClient
	// Pause is the sandbox image (sandbox_image), pushed to the registry StartCRI was given.
	Pause string

	logDir string
	mu     sync.Mutex
	pods   []*Pod // to stop and remove at the end of the test
}

// CRINamespace is the containerd namespace of the CRI plugin, the kubelet's.
const CRINamespace = "k8s.io"

// StartCRI starts a containerd private to the test (see StartContainerd) with its CRI
// plugin configured as on a kubelet's node: a pause image pushed to reg as its sandbox
// image, reg trusted over plain HTTP through config_path, and the cgroupfs driver. Pods
// left at the end of the test are stopped and removed, and their cgroups with them.
func StartCRI(t testing.TB, reg *Registry) *CRI {
	t.Helper()
	// The pause container only has to live until it is killed: PID 1 ignores the signals
	// it has no handler for, and the CRI plugin stops a sandbox with SIGKILL.
	img, err := BuildImage([]v1.Layer{BusyboxLayer(t)}, []string{"/bin/sleep", "2147483647"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pause := reg.Push(t, "test/pause:3.9", img)
	c := startContainerd(t, pause)
	c.TrustHTTP(t, reg.Host)
	// The kubelet creates its QoS cgroups when it starts, before any pod.
	for _, qos := range []string{BestEffort, Burstable} {
		if err := makeCgroup("/kubepods/" + qos); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := grpc.NewClient("unix://"+c.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("connect to the CRI plugin: %v", err)
	}
	cri := &CRI{Containerd: c, Pause: pause, logDir: t.TempDir(),
		Runtime: runtimeapi.NewRuntimeServiceClient(conn), Image: runtimeapi.NewImageServiceClient(conn)}
	// Runs before StartContainerd's cleanup stops the daemon.
	t.Cleanup(func() {
		if err := cri.removePods(); err != nil {
			t.Errorf("remove pods: %v", err)
		}
		conn.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		// The CRI plugin serves a little after the daemon answers.
		_, err := cri.Runtime.Version(ctx, &runtimeapi.VersionRequest{})
		if err == nil {
			return cri
		}
		if ctx.Err() != nil {
			t.Fatalf("the CRI plugin does not serve: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Pull pulls ref as the kubelet does before creating a container and returns the image's
// reference in the CRI plugin (its id).
func (c *CRI) Pull(ctx context.Context, ref string) (string, error) {
	r, err := c.Image.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", ref, err)
	}
	return r.ImageRef, nil
}

// QoS classes name the kubelet's cgroup parents under the cgroupfs driver.
const (
	BestEffort = "besteffort"
	Burstable  = "burstable"
	Guaranteed = "guaranteed"
)

// PodConfig describes a pod sandbox.
type PodConfig struct {
	// Name and Namespace are the pod's; UID is generated when empty.
	Name, Namespace, UID string
	// QoS (BestEffort when empty) makes the kubelet's cgroup parent
	// /kubepods[/<qos>]/pod<uid>; CgroupParent, when set, is used instead.
	QoS, CgroupParent string
	Labels            map[string]string
	// HostPID puts the pod in the host's PID namespace (a pod spec's hostPID).
	HostPID bool
}

// Pod is a running pod sandbox.
type Pod struct {
	ID     string
	Config *runtimeapi.PodSandboxConfig
	// CgroupParent is the pod's cgroup, the parent of its containers' cgroups.
	CgroupParent string
}

// RunPod runs a pod sandbox on the host network as the kubelet would for cfg.
func (c *CRI) RunPod(ctx context.Context, cfg PodConfig) (*Pod, error) {
	if cfg.UID == "" {
		cfg.UID = fmt.Sprintf("%016x", rand.Uint64())
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "default"
	}
	parent := cfg.CgroupParent
	switch {
	case parent != "":
	case cfg.QoS == Guaranteed:
		parent = "/kubepods/pod" + cfg.UID
	case cfg.QoS == "" || cfg.QoS == BestEffort || cfg.QoS == Burstable:
		parent = "/kubepods/" + cmp.Or(cfg.QoS, BestEffort) + "/pod" + cfg.UID
	default:
		return nil, fmt.Errorf("QoS class %q: want %s, %s or %s", cfg.QoS, BestEffort, Burstable, Guaranteed)
	}
	if err := makeCgroup(parent); err != nil {
		return nil, err
	}
	logDir := filepath.Join(c.logDir, cfg.Namespace+"_"+cfg.Name+"_"+cfg.UID)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	labels := map[string]string{
		"io.kubernetes.pod.name":      cfg.Name,
		"io.kubernetes.pod.namespace": cfg.Namespace,
		"io.kubernetes.pod.uid":       cfg.UID,
	}
	for k, v := range cfg.Labels {
		labels[k] = v
	}
	pc := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: cfg.Name, Namespace: cfg.Namespace, Uid: cfg.UID},
		LogDirectory: logDir,
		Labels:       labels,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: parent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			},
		},
	}
	if cfg.HostPID {
		pc.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_NODE
	}
	r, err := c.Runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pc})
	if err != nil {
		removeCgroup(parent)
		return nil, fmt.Errorf("run pod sandbox %s: %w", cfg.Name, err)
	}
	p := &Pod{ID: r.PodSandboxId, Config: pc, CgroupParent: parent}
	c.mu.Lock()
	c.pods = append(c.pods, p)
	c.mu.Unlock()
	return p, nil
}

// ContainerConfig describes a container of a pod.
type ContainerConfig struct {
	Name, Image string
	// Command and Args override the image's entrypoint and command as in a pod spec.
	Command, Args []string
	Env           map[string]string
	Mounts        []*runtimeapi.Mount
	// SecurityContext is the container's Linux security context (privileged,
	// capabilities, run as user, read-only root...); nil for the runtime's defaults.
	SecurityContext *runtimeapi.LinuxContainerSecurityContext
	// Attempt counts the kubelet's restarts of the container: it creates a new one with
	// the attempt one higher after the last one exited.
	Attempt uint32
}

// CreateContainer creates a container in pod as the kubelet would for cfg and returns its
// id, which is also its containerd container id.
func (c *CRI) CreateContainer(ctx context.Context, pod *Pod, cfg ContainerConfig) (string, error) {
	labels := map[string]string{"io.kubernetes.container.name": cfg.Name}
	for _, k := range []string{"io.kubernetes.pod.name", "io.kubernetes.pod.namespace", "io.kubernetes.pod.uid"} {
		labels[k] = pod.Config.Labels[k]
	}
	cc := &runtimeapi.ContainerConfig{
		Metadata:    &runtimeapi.ContainerMetadata{Name: cfg.Name, Attempt: cfg.Attempt},
		Image:       &runtimeapi.ImageSpec{Image: cfg.Image},
		Command:     cfg.Command,
		Args:        cfg.Args,
		Mounts:      cfg.Mounts,
		Labels:      labels,
		Annotations: map[string]string{"io.kubernetes.container.restartCount": fmt.Sprint(cfg.Attempt)},
		LogPath:     fmt.Sprintf("%s/%d.log", cfg.Name, cfg.Attempt),
		Linux:       &runtimeapi.LinuxContainerConfig{SecurityContext: cfg.SecurityContext},
	}
	for k, v := range cfg.Env {
		cc.Envs = append(cc.Envs, &runtimeapi.KeyValue{Key: k, Value: []byte(v)})
	}
	r, err := c.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: pod.ID, Config: cc, SandboxConfig: pod.Config})
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", cfg.Name, err)
	}
	return r.ContainerId, nil
}

// StartContainer starts a created container.
func (c *CRI) StartContainer(ctx context.Context, id string) error {
	if _, err := c.Runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	return nil
}

// RunContainer creates and starts a container in pod, as the kubelet does one after the
// other.
func (c *CRI) RunContainer(ctx context.Context, pod *Pod, cfg ContainerConfig) (string, error) {
	id, err := c.CreateContainer(ctx, pod, cfg)
	if err == nil {
		err = c.StartContainer(ctx, id)
	}
	return id, err
}

// ContainerStatus is the container's state, exit code, attempt (restart count) and log
// path as the kubelet sees them.
func (c *CRI) ContainerStatus(ctx context.Context, id string) (*runtimeapi.ContainerStatus, error) {
	r, err := c.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return nil, fmt.Errorf("status of container %s: %w", id, err)
	}
	return r.Status, nil
}

// WaitExited polls the container's status until it has exited and returns that status.
func (c *CRI) WaitExited(ctx context.Context, id string) (*runtimeapi.ContainerStatus, error) {
	for {
		st, err := c.ContainerStatus(ctx, id)
		if err != nil {
			return nil, err
		}
		if st.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("container %s has not exited: %w", id, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Log is what the container wrote to its stdout and stderr, in order, without the CRI
// log format's timestamp, stream and tag.
func (c *CRI) Log(ctx context.Context, id string) (string, error) {
	st, err := c.ContainerStatus(ctx, id)
	if err != nil {
		return "", err
	}
	f, err := os.Open(st.LogPath)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var b strings.Builder
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		// "<RFC3339Nano> <stdout|stderr> <F|P> <text>"; P is a partial line.
		fields := strings.SplitN(sc.Text(), " ", 4)
		if len(fields) < 4 {
			continue
		}
		b.WriteString(fields[3])
		if fields[2] == "F" {
			b.WriteByte('\n')
		}
	}
	return b.String(), sc.Err()
}

// StopContainer stops a container, killing it after timeout.
func (c *CRI) StopContainer(ctx context.Context, id string, timeout time.Duration) error {
	if _, err := c.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: int64(timeout.Seconds())}); err != nil {
		return fmt.Errorf("stop container %s: %w", id, err)
	}
	return nil
}

// RemoveContainer removes a container, stopping it first if it runs.
func (c *CRI) RemoveContainer(ctx context.Context, id string) error {
	if _, err := c.Runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	return nil
}

// RemovePod stops and removes a pod sandbox with its containers, and removes its cgroup
// parent, which the kubelet owns.
func (c *CRI) RemovePod(ctx context.Context, pod *Pod) error {
	if _, err := c.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.ID}); err != nil {
		return fmt.Errorf("stop pod %s: %w", pod.ID, err)
	}
	if _, err := c.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.ID}); err != nil {
		return fmt.Errorf("remove pod %s: %w", pod.ID, err)
	}
	c.mu.Lock()
	for i, p := range c.pods {
		if p == pod {
			c.pods = append(c.pods[:i], c.pods[i+1:]...)
			break
		}
	}
	c.mu.Unlock()
	return removeCgroup(pod.CgroupParent)
}

func (c *CRI) removePods() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.mu.Lock()
	pods := append([]*Pod(nil), c.pods...)
	c.mu.Unlock()
	for _, p := range pods {
		if err := c.RemovePod(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// removeCgroup removes the cgroup at path (relative to each hierarchy's root) from every
// mounted cgroup hierarchy that has it. Its parents stay: other tests' pods share them.
func removeCgroup(path string) error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if err := os.Remove(filepath.Join(m.dir, path)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// makeCgroup creates the cgroup at path in the cgroup v2 hierarchy, as the kubelet does
// before it asks for a pod (the runtime creates the rest).
func makeCgroup(path string) error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if m.v2 {
			return os.MkdirAll(filepath.Join(m.dir, path), 0o755)
		}
	}
	return errors.New("no cgroup2 mount")
}

type cgroupMount struct {
	dir string
	v2  bool
}

// cgroupMounts lists the mounted cgroup hierarchies.
func cgroupMounts() ([]cgroupMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ms []cgroupMount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// The filesystem type follows the " - " separator.
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(post, "cgroup") {
			continue
		}
		if fields := strings.Fields(pre); len(fields) >= 5 {
			ms = append(ms, cgroupMount{dir: fields[4], v2: strings.HasPrefix(post, "cgroup2 ")})
		}
	}
	return ms, sc.Err()
}
