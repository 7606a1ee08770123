package deploy

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/coldtrace/coldtrace/caps"
)

const chartDir = "coldtrace"

// rendered are the chart's objects, each decoded strictly into its Go type.
type rendered struct {
	ds       *appsv1.DaemonSet
	secret   *corev1.Secret
	service  *corev1.Service
	account  *corev1.ServiceAccount
	monitor  *monitoringv1.ServiceMonitor
	kinds    []string
	notes    string
	manifest string
}

// render renders the chart with values as `helm install --dry-run` would, schema
// included.
func render(values map[string]any) (*rendered, error) {
	ch, err := loader.Load(chartDir)
	if err != nil {
		return nil, err
	}
	vals, err := util.ToRenderValues(ch, values, common.ReleaseOptions{Name: "coldtrace", Namespace: "coldtrace", IsInstall: true}, nil)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		return nil, err
	}
	r := &rendered{}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		body := files[name]
		if path.Base(name) == "NOTES.txt" {
			r.notes = body
			continue
		}
		for _, doc := range strings.Split(body, "\n---") {
			if strings.TrimSpace(doc) == "" || strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			r.manifest += "---\n" + doc + "\n"
			if err := r.decode(name, []byte(doc)); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// decode decodes one object strictly: a field unknown to its type, or a value of the
// wrong type, is an error.
func (r *rendered) decode(file string, doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 DaemonSet":
		obj = into(&r.ds)
	case "v1 Secret":
		obj = into(&r.secret)
	case "v1 Service":
		obj = into(&r.service)
	case "v1 ServiceAccount":
		obj = into(&r.account)
	case "monitoring.coreos.com/v1 ServiceMonitor":
		obj = into(&r.monitor)
	default:
		return fmt.Errorf("%s: an object of kind %s %s that the test does not know", file, tm.APIVersion, tm.Kind)
	}
	r.kinds = append(r.kinds, tm.Kind)
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return fmt.Errorf("%s: %s: %w", file, tm.Kind, err)
	}
	return nil
}

// into points *p at a new T and returns it, to decode into.
func into[T any](p **T) any {
	*p = new(T)
	return *p
}

func mustRender(t *testing.T, values map[string]any) *rendered {
	t.Helper()
	r, err := render(values)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// agentContainer is the DaemonSet's one container.
func agentContainer(t *testing.T, r *rendered) corev1.Container {
	t.Helper()
	if r.ds == nil || len(r.ds.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("no DaemonSet with one container:\n%s", r.manifest)
	}
	return r.ds.Spec.Template.Spec.Containers[0]
}

func TestChartLints(t *testing.T) {
	l := lint.RunAll(chartDir, nil, "coldtrace")
	for _, m := range l.Messages {
		if m.Severity >= support.WarningSev {
			t.Errorf("lint: %s", m)
		}
	}
}

// TestChartGrantsWhatTheAgentChecks: the capabilities the chart adds are exactly those the
// agent checks for at its start, everything else dropped, not privileged.
func TestChartGrantsWhatTheAgentChecks(t *testing.T) {
	c := agentContainer(t, mustRender(t, nil))
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("the agent's container has no capabilities")
	}
	var granted, want []string
	for _, a := range sc.Capabilities.Add {
		granted = append(granted, string(a))
	}
	for _, c := range caps.Agent {
		want = append(want, c.Name)
	}
	slices.Sort(granted)
	slices.Sort(want)
	if !slices.Equal(granted, want) {
		t.Errorf("the chart adds %q, the agent checks for %q", granted, want)
	}
	if d := sc.Capabilities.Drop; len(d) != 1 || d[0] != "ALL" {
		t.Errorf("drops %q, want ALL", d)
	}
	if sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("privileged %v, allowPrivilegeEscalation %v: want both false", sc.Privileged, sc.AllowPrivilegeEscalation)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Errorf("readOnlyRootFilesystem %v, runAsUser %v", sc.ReadOnlyRootFilesystem, sc.RunAsUser)
	}

	// privileged: true is the documented alternative: no capability list then.
	p := agentContainer(t, mustRender(t, map[string]any{"privileged": true})).SecurityContext
	if p.Privileged == nil || !*p.Privileged || p.Capabilities != nil || p.AllowPrivilegeEscalation != nil {
		t.Errorf("privileged: %+v", p)
	}
}

func TestChartDefaults(t *testing.T) {
	r := mustRender(t, nil)
	if want := []string{"DaemonSet", "Secret", "Service", "ServiceAccount"}; !slices.Equal(r.kinds, want) {
		t.Errorf("objects %q, want %q (no RBAC: the agent does not use the Kubernetes API)", r.kinds, want)
	}
	spec := r.ds.Spec.Template.Spec
	c := agentContainer(t, r)
	if !spec.HostPID || !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostPID %v, hostNetwork %v, dnsPolicy %s", spec.HostPID, spec.HostNetwork, spec.DNSPolicy)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken ||
		r.account.AutomountServiceAccountToken == nil || *r.account.AutomountServiceAccountToken {
		t.Error("a service account token is mounted")
	}
	if spec.PriorityClassName != "system-node-critical" || spec.NodeSelector["nvidia.com/gpu.present"] != "true" ||
		len(spec.Tolerations) != 1 || spec.Tolerations[0].Key != "nvidia.com/gpu" {
		t.Errorf("priority %q, node selector %v, tolerations %+v", spec.PriorityClassName, spec.NodeSelector, spec.Tolerations)
	}
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("resources %+v", c.Resources)
	}
	if c.Image != "ghcr.io/coldtrace/coldtrace:0.1.0" {
		t.Errorf("image %s", c.Image)
	}

	// Probes on the API's port, which the agent serves with --api-address.
	if len(c.Ports) != 1 || c.Ports[0].Name != "api" || !slices.Contains(c.Args, fmt.Sprintf("--api-address=:%d", c.Ports[0].ContainerPort)) {
		t.Errorf("ports %+v, args %q", c.Ports, c.Args)
	}
	for _, p := range []struct {
		probe *corev1.Probe
		path  string
	}{{c.LivenessProbe, "/healthz"}, {c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.StrVal != "api" {
			t.Errorf("probe %+v, want GET %s on port api", p.probe, p.path)
		}
	}

	// The host paths, where the agent's arguments expect them.
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if _, ok := mounts[v.Name]; !ok {
			t.Errorf("volume %s is not mounted", v.Name)
		}
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	for name, want := range map[string]struct{ host, mount string }{
		"cgroup":          {"/sys/fs/cgroup", "/host/sys/fs/cgroup"},
		"tracefs":         {"/sys/kernel/tracing", "/sys/kernel/tracing"},
		"btf":             {"/sys/kernel/btf", "/sys/kernel/btf"},
		"containerd-run":  {"/run/containerd", "/run/containerd"},
		"containerd-root": {"/var/lib/containerd", "/var/lib/containerd"},
		"data":            {"/var/lib/coldtrace", "/var/lib/coldtrace"},
	} {
		m, ok := mounts[name]
		if hostPaths[name] != want.host || !ok || m.MountPath != want.mount || m.ReadOnly != (name != "data") {
			t.Errorf("volume %s: host %q mounted %+v; want host %s at %s, read-only unless data", name, hostPaths[name], m, want.host, want.mount)
		}
	}
	for _, a := range []string{"--containerd=/run/containerd/containerd.sock", "--data-dir=/var/lib/coldtrace",
		"--namespace=k8s.io", "--api-token-file=/etc/coldtrace/token/token"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("args %q lack %s", c.Args, a)
		}
	}
	if m := mounts["token"]; m.MountPath != "/etc/coldtrace/token" || r.secret == nil || len(r.secret.Data["token"]) < 32 {
		t.Errorf("token mount %+v, secret %+v", m, r.secret)
	}
	if !strings.Contains(r.notes, "advise --from") {
		t.Errorf("NOTES.txt does not say how to read the traces:\n%s", r.notes)
	}
}

func TestChartOptions(t *testing.T) {
	r := mustRender(t, map[string]any{
		"image":          map[string]any{"digest": "sha256:" + strings.Repeat("ab", 32)},
		"api":            map[string]any{"port": 9555, "token": map[string]any{"existingSecret": "my-token"}},
		"manifests":      map[string]any{"configMaps": []any{map[string]any{"name": "team-a-manifests", "tenant": "team-a"}}, "urls": []any{"https://example.com/m.yaml"}},
		"serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "prom"}},
		"nodeSelector":   map[string]any{"nvidia.com/gpu.present": nil}, // how Helm removes a default key
		"tolerations":    []any{},
	})
	c := agentContainer(t, r)
	spec := r.ds.Spec.Template.Spec
	if r.secret != nil {
		t.Error("a Secret was made beside existingSecret")
	}
	var tokenSecret, manifests string
	for _, v := range spec.Volumes {
		if v.Secret != nil {
			tokenSecret = v.Secret.SecretName
		}
		if v.ConfigMap != nil {
			manifests = v.ConfigMap.Name
		}
	}
	if tokenSecret != "my-token" || manifests != "team-a-manifests" {
		t.Errorf("token secret %q, manifests %q", tokenSecret, manifests)
	}
	for _, a := range []string{"--api-address=:9555", "--manifests=/etc/coldtrace/manifests", "--manifest-url=https://example.com/m.yaml"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("args %q lack %s", c.Args, a)
		}
	}
	if !strings.HasSuffix(c.Image, "@sha256:"+strings.Repeat("ab", 32)) || len(spec.NodeSelector) != 0 || len(spec.Tolerations) != 0 {
		t.Errorf("image %s, node selector %v, tolerations %v", c.Image, spec.NodeSelector, spec.Tolerations)
	}
	if r.monitor == nil || len(r.monitor.Spec.Endpoints) != 1 || r.monitor.Spec.Endpoints[0].Port != "api" || r.monitor.Labels["release"] != "prom" {
		t.Errorf("service monitor %+v", r.monitor)
	}
	if r.service.Spec.Ports[0].Port != 9555 {
		t.Errorf("service %+v", r.service.Spec)
	}
}

// TestChartSchemaRefuses: bad values are refused before anything renders, with a message
// that names the value and what is wrong.
func TestChartSchemaRefuses(t *testing.T) {
	for _, c := range []struct {
		values map[string]any
		want   []string
	}{
		{map[string]any{"api": map[string]any{"port": 70000}}, []string{"/api/port", "maximum"}},
		{map[string]any{"api": map[string]any{"port": "9470"}}, []string{"/api/port", "want integer"}},
		{map[string]any{"privileged": "yes"}, []string{"/privileged", "want boolean"}},
		{map[string]any{"agent": map[string]any{"retainAge": "2 weeks"}}, []string{"/agent/retainAge", "does not match pattern"}},
		{map[string]any{"agent": map[string]any{"retainBytes": "lots"}}, []string{"/agent/retainBytes", "does not match pattern"}},
		{map[string]any{"image": map[string]any{"pullPolicy": "Sometimes"}}, []string{"/image/pullPolicy", "must be one of"}},
		{map[string]any{"image": map[string]any{"digest": "sha256:abc"}}, []string{"/image/digest"}},
		{map[string]any{"containerd": map[string]any{"socket": "containerd.sock"}}, []string{"/containerd/socket"}},
		{map[string]any{"hostPaths": map[string]any{"data": "/"}}, []string{"/hostPaths/data"}},
		{map[string]any{"manifests": map[string]any{"configMaps": []any{map[string]any{"name": "m", "tenant": "Team_A"}}}}, []string{"/manifests/configMaps/0/tenant"}},
		{map[string]any{"manifests": map[string]any{"configMaps": []any{map[string]any{"name": "m"}}}}, []string{"/manifests/configMaps/0", "tenant"}},
		{map[string]any{"seccompProfile": map[string]any{"type": "Localhost"}}, []string{"/seccompProfile", "localhostProfile"}},
		{map[string]any{"privilged": true}, []string{"privilged"}},
		{map[string]any{"agent": map[string]any{"extraArgs": []any{"-v"}}}, []string{"/agent/extraArgs/0"}},
	} {
		_, err := render(c.values)
		if err == nil {
			t.Errorf("%v was accepted", c.values)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %v\nwant it to say %q", c.values, err, w)
			}
		}
	}
}
