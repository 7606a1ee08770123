package deploy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/coldtrace/coldtrace/containerd"
	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/nodeapi"
	"github.com/coldtrace/coldtrace/trace"
)

// agentImage is the image the Dockerfile builds, assembled without Docker: the static
// binary (CGO_ENABLED=0, as make build) and the host's root CAs on an empty base.
func agentImage(t *testing.T) v1.Image {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "coldtrace")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/coldtrace")
	cmd.Dir, cmd.Env = "..", append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the agent: %v\n%s", err, out)
	}
	exe, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	cas, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	testenv.Require(t, "root CAs", err == nil, "apt-get install ca-certificates")
	layer, err := ctrtest.Layer(ctrtest.File{Path: "/usr/local/bin/coldtrace", Mode: 0o755, Data: exe},
		ctrtest.File{Path: "/etc/ssl/certs/ca-certificates.crt", Data: cas})
	if err != nil {
		t.Fatal(err)
	}
	img, err := ctrtest.BuildImage([]v1.Layer{layer}, []string{"/usr/local/bin/coldtrace"}, []string{"agent"})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// kubeletContainer is what the kubelet asks the CRI plugin for, for the DaemonSet's agent
// container: its image and arguments, its security context with the pod's host
// namespaces, and its volumes as mounts (host paths as they are, the Secret and the
// emptyDir from the directories given).
func kubeletContainer(t *testing.T, spec corev1.PodSpec, dirs map[string]string) ctrtest.ContainerConfig {
	t.Helper()
	c := spec.Containers[0]
	vols := map[string]string{}
	for _, v := range spec.Volumes {
		switch {
		case v.HostPath != nil:
			vols[v.Name] = v.HostPath.Path
		case dirs[v.Name] != "":
			vols[v.Name] = dirs[v.Name]
		default:
			t.Fatalf("volume %s: the test has no directory for it", v.Name)
		}
	}
	var mounts []*runtimeapi.Mount
	for _, m := range c.VolumeMounts {
		mounts = append(mounts, &runtimeapi.Mount{ContainerPath: m.MountPath, HostPath: vols[m.Name], Readonly: m.ReadOnly})
	}
	sc := c.SecurityContext
	if *sc.Privileged {
		t.Fatal("the chart's default is privileged")
	}
	var add, drop []string
	for _, a := range sc.Capabilities.Add {
		add = append(add, string(a))
	}
	for _, d := range sc.Capabilities.Drop {
		drop = append(drop, string(d))
	}
	host := func(on bool) runtimeapi.NamespaceMode {
		if on {
			return runtimeapi.NamespaceMode_NODE
		}
		return runtimeapi.NamespaceMode_CONTAINER
	}
	seccomp := &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
	if sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault {
		seccomp.ProfileType = runtimeapi.SecurityProfile_RuntimeDefault
	}
	return ctrtest.ContainerConfig{
		Name: c.Name, Image: c.Image, Command: c.Command, Args: c.Args, Mounts: mounts,
		SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			Capabilities:     &runtimeapi.Capability{AddCapabilities: add, DropCapabilities: drop},
			Privileged:       false,
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: host(spec.HostNetwork), Pid: host(spec.HostPID), Ipc: runtimeapi.NamespaceMode_POD},
			RunAsUser:        &runtimeapi.Int64Value{Value: *sc.RunAsUser},
			RunAsGroup:       &runtimeapi.Int64Value{Value: *sc.RunAsGroup},
			ReadonlyRootfs:   *sc.ReadOnlyRootFilesystem,
			NoNewPrivs:       !*sc.AllowPrivilegeEscalation,
			Seccomp:          seccomp,
		},
	}
}

// TestAgentLeastPrivilegeThroughCRI runs the agent's image through containerd's CRI as the
// kubelet would run the chart's DaemonSet: its rendered security context (uid 0, only the
// agent's capabilities, read-only root, no privilege escalation, not privileged), host PID
// and network, and host-path mounts. That agent records a second pod's cold start, read
// back through its API with the token: ground truth from the registry's byte counts and
// the pod's cgroup on the host.
func TestAgentLeastPrivilegeThroughCRI(t *testing.T) {
	testenv.RequireBPF(t)
	testenv.RequireBinary(t, "go")
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{Rate: 16 << 20})
	cri := ctrtest.StartCRI(t, reg)
	agentRef := reg.Push(t, "coldtrace/agent:test", agentImage(t))

	port := testenv.FreePort(t)
	data := t.TempDir()
	r := mustRender(t, map[string]any{
		"image":      map[string]any{"repository": strings.TrimSuffix(agentRef, ":test"), "tag": "test"},
		"containerd": map[string]any{"socket": cri.Address, "root": cri.Root, "hostsDir": cri.HostsDir},
		"hostPaths":  map[string]any{"data": data},
		"api":        map[string]any{"port": port},
	})
	spec := r.ds.Spec.Template.Spec
	const token = "least-privilege-test-token-0123456789"
	tokenDir, tmp := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(tokenDir, "token"), []byte(token), 0o400); err != nil {
		t.Fatal(err)
	}
	cfg := kubeletContainer(t, spec, map[string]string{"token": tokenDir, "tmp": tmp})

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := cri.Pull(ctx, cfg.Image); err != nil {
		t.Fatal(err)
	}
	agentPod, err := cri.RunPod(ctx, ctrtest.PodConfig{Name: "coldtrace-x1", Namespace: "coldtrace", HostPID: spec.HostPID})
	if err != nil {
		t.Fatal(err)
	}
	agentID, err := cri.RunContainer(ctx, agentPod, cfg)
	if err != nil {
		t.Fatal(err)
	}
	api := fmt.Sprintf("http://127.0.0.1:%d", port)
	agentLog := func() string { l, _ := cri.Log(context.Background(), agentID); return l }
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the agent's log:\n%s", agentLog())
		}
	})
	// Ready (probes attached, containerd's events followed), as the kubelet's probe sees it.
	for {
		if code, _ := get(api+"/readyz", ""); code == 200 {
			break
		}
		if st, err := cri.ContainerStatus(ctx, agentID); err != nil || st.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			t.Fatalf("the agent's container ended before it was ready: %+v, %v", st, err)
		}
		if ctx.Err() != nil {
			t.Fatal("the agent did not get ready")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A second pod, its image pulled through CRI while the agent runs.
	data1 := strings.Repeat("coldtrace", 1000)
	dl, err := ctrtest.Layer(ctrtest.File{Path: "/data/model.bin", Data: []byte(data1)})
	if err != nil {
		t.Fatal(err)
	}
	img, err := ctrtest.BuildImage([]v1.Layer{ctrtest.BusyboxLayer(t), dl}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	appRef := reg.Push(t, "shop/server:v1", img)
	if _, err := cri.Pull(ctx, appRef); err != nil {
		t.Fatal(err)
	}
	dataLayer, err := dl.Digest()
	if err != nil {
		t.Fatal(err)
	}
	app, err := cri.RunPod(ctx, ctrtest.PodConfig{Name: "server-0", Namespace: "shop", QoS: ctrtest.Burstable})
	if err != nil {
		t.Fatal(err)
	}
	appID, err := cri.RunContainer(ctx, app, ctrtest.ContainerConfig{Name: "server", Image: appRef,
		Command: []string{"sh", "-c", fmt.Sprintf("cat /data/model.bin > /dev/null; exec httpd -f -p 127.0.0.1:%d", testenv.FreePort(t))}})
	if err != nil {
		t.Fatal(err)
	}

	// The agent's trace of it, through the API.
	var trs []*trace.Trace
	for {
		trs, err = nodeapi.Fetch(ctx, http.DefaultClient, api+"/?namespace=shop&pod=server-0", token)
		if err != nil {
			t.Fatal(err)
		}
		if len(trs) > 0 || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(trs) != 1 {
		t.Fatalf("%d traces of pod shop/server-0 through the API, want 1", len(trs))
	}
	tr := trs[0]
	if tr.Outcome != trace.OutcomeReady || tr.Incomplete || tr.Workload.ContainerID != appID || tr.Workload.Container != "server" {
		t.Errorf("outcome %s (%s), incomplete %v, workload %+v, warnings %q", tr.Outcome, tr.Error, tr.Incomplete, tr.Workload, tr.Warnings)
	}
	// The data layer as the registry served it (the busybox layer is the pause image's
	// too: already there, nothing pulled).
	if tr.Pull == nil || tr.Pull.Ref != appRef {
		t.Fatalf("pull %+v, want %s's; warnings %q", tr.Pull, appRef, tr.Warnings)
	}
	var pulled int64
	for _, l := range tr.Pull.Layers {
		if l.Digest == dataLayer.String() {
			pulled = l.Bytes
		}
	}
	if served := reg.Served(dataLayer.String()); pulled != served || served == 0 {
		t.Errorf("the pull's layers %+v: data layer %s of %d bytes, the registry served %d", tr.Pull.Layers, dataLayer, pulled, served)
	}
	mnt, _, err := containerd.Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	cg, err := containerd.CgroupAt(filepath.Join(mnt, app.CgroupParent, appID))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range tr.Processes {
		if p.Cgroup != cg.ID {
			t.Errorf("process %d (%s) in cgroup %d, not the container's %d", p.PID, p.Comm, p.Cgroup, cg.ID)
		}
	}
	var model *trace.File
	for i := range tr.Files {
		if tr.Files[i].Path == "/data/model.bin" {
			model = &tr.Files[i]
		}
	}
	if model == nil || model.BytesRead != int64(len(data1)) || model.Layer == nil || model.Layer.Index != 1 {
		t.Errorf("/data/model.bin: %+v, want %d bytes read from image layer 1", model, len(data1))
	}
	// Nothing without the token, and the agent's own container was not recorded.
	if code, _ := get(api+"/api/v1/traces", ""); code != 401 {
		t.Errorf("the traces API without the token: %d", code)
	}
	if all, _ := nodeapi.Fetch(ctx, http.DefaultClient, api, token); len(all) != 1 {
		t.Errorf("%d traces on the node, want the app's alone", len(all))
	}
	t.Logf("the agent in its pod recorded %s/%s: ready after %v, a layer of %d bytes pulled, %d files",
		tr.Workload.Namespace, tr.Workload.Pod, tr.Duration, pulled, len(tr.Files))
}

func get(u, token string) (int, string) {
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		return 0, err.Error()
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
