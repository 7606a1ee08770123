package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/metrics"
	"github.com/coldtrace/coldtrace/trace"
)

// TestDashboardsAgainstPrometheus is the acceptance test of the agent's metrics and the
// dashboards. A real Prometheus (Debian's) scrapes a running `coldtrace agent` every
// second while real containers start through containerd: a cold start that pulls its
// image, downloads its model shard and opens a stand-in GPU; then, after the agent's
// cache applied the manifest that `coldtrace advise` built from that trace (and fetched
// a corrupted artifact again, and refused a bad manifest), a warmed start of the same
// image; then a release of the image whose container exits before it is ready. Every
// query of every panel, annotation and variable of the committed dashboards, with the
// variables set as Grafana would set them, must return a series with a value, and the
// key ones the values the test knows: the starts per outcome, time-to-ready quantiles in
// the bucket of the traces' own times, the bytes the registry served, the deploy.
func TestDashboardsAgainstPrometheus(t *testing.T) {
	testenv.RequireBPF(t)
	for _, b := range []string{"ctr", "gcc", "prometheus", "promtool"} {
		testenv.RequireBinary(t, b)
	}
	began := time.Now()
	bin := build(t)
	ctrd := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{Rate: 64 << 20})
	shard := origin.StartHTTP(t, ctrtest.ShardURLPath, origin.Random(8<<20), 0)
	im := ctrtest.PushColdStart(t, reg, shard.Port(), ctrtest.Sizes{Libs: 200, LibSize: 2048, Weights: 16 << 20, Tensors: 16})
	// The release: the same layers, another configuration, so another digest.
	img, err := ctrtest.BuildImage(im.Layers, []string{"/coldstart"}, nil)
	if err == nil {
		img, err = ctrtest.WithEnv(img, "MODEL_PATH="+ctrtest.ShardPath, "RELEASE=2")
	}
	if err != nil {
		t.Fatal(err)
	}
	ref2 := reg.Push(t, "test/coldstart:v2", img)
	d2, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ctrd.TrustHTTP(t, reg.Host)
	workload := metrics.WorkloadName(im.Ref)

	dir := t.TempDir()
	data, store, manifests := filepath.Join(dir, "data"), filepath.Join(dir, "store"), filepath.Join(dir, "manifests")
	if err := os.MkdirAll(filepath.Join(manifests, "default"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A stand-in accelerator: /dev/null's device, where the NVIDIA driver's first is.
	gpu := filepath.Join(dir, "nvidia0")
	if err := unix.Mknod(gpu, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatalf("mknod stand-in device: %v", err)
	}
	const pullWindow = 20 * time.Second
	ag := startAgentProc(t, bin, "--containerd", ctrd.Address, "--namespace", "default", "--data-dir", data,
		"--metrics-address", "127.0.0.1:0", "--pull-window", pullWindow.String(), "--hosts-dir", ctrd.HostsDir,
		"--manifests", manifests, "--manifest-poll", "500ms", "--rewarm-every", "2s", "--store", store,
		"--origin-allow", "127.0.0.0/8", "--plain-http")
	prom := startPrometheus(t, ag.metrics)
	prom.waitFor(t, `coldtrace_build_info{node="test-node"}`) // the counters' zeros before anything starts

	// Cold: the pull, then the container at once, within the pull window.
	served := reg.Total()
	ctrd.Ctr(t, "images", "pull", "--hosts-dir", ctrd.HostsDir, im.Ref)
	pulled := time.Now()
	var layerBytes int64
	for _, l := range im.Layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		layerBytes += reg.Served(d.String())
	}
	t.Logf("the registry served %d blob bytes, %d of them layers", reg.Total()-served, layerBytes)
	ctrd.Ctr(t, append([]string{"run", "-d", "--net-host", "--env", "GPU_DEVICE=/dev/nvidia0",
		"--mount", "type=bind,src=" + gpu + ",dst=/dev/nvidia0,options=rbind:rw", im.Ref, "cold"}, im.Args...)...)
	ag.waitLine(t, "container cold: ready")
	cold := readAgentTrace(t, data, "cold")

	// The cache agent applies the manifest advised from the cold trace, refuses a bad one,
	// and fetches the artifact again once its copy is corrupt.
	advised := filepath.Join(dir, "coldstart.yaml")
	if b, err := exec.Command(bin, "advise", filepath.Join(data, "traces", "default", "cold.json.gz"), "-o", advised).CombinedOutput(); err != nil {
		t.Fatalf("advise: %v\n%s", err, b)
	}
	if err := os.Rename(advised, filepath.Join(manifests, "default", "coldstart.yaml")); err != nil {
		t.Fatal(err)
	}
	ag.waitLine(t, "coldstart.yaml (tenant default)")
	bad := `{"apiVersion":"coldtrace.dev/v1alpha1","kind":"PrefetchManifest","metadata":{"name":"bad"},"spec":{"runs":1,"hotSet":[` +
		`{"path":"usr/../../etc/shadow","ranges":[{"off":0,"len":4096}],"order":0,"firstAccessNs":0,"confidence":1,"expectedSavedSeconds":0}]}}`
	writeAtomic(t, filepath.Join(manifests, "default", "bad.yaml"), []byte(bad))
	staged := filepath.Join(store, "tenants", "default", "sha256", strings.TrimPrefix(shard.Digest(), "sha256:"))
	if err := os.WriteFile(staged, make([]byte, shard.Size()), 0o644); err != nil {
		t.Fatalf("corrupt the staged artifact: %v", err)
	}
	prom.waitFor(t, `sum(coldtrace_cache_fallbacks_total{reason="corrupt"}) >= 1 and sum(coldtrace_cache_refusals_total) >= 1`)
	for deadline := time.Now().Add(time.Minute); fileDigest(t, staged) != shard.Digest(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the cache agent did not fetch the corrupted artifact again")
		}
	}

	// Warmed: past the pull window, so the start finds its image on the node, and reads
	// the staged shard from the store.
	if wait := pullWindow + time.Second - time.Since(pulled); wait > 0 {
		time.Sleep(wait) // the image must be older than the window: a fact of the scenario, not of timing
	}
	ctrd.Ctr(t, append([]string{"run", "-d", "--net-host", "--env", "GPU_DEVICE=/dev/nvidia0", "--env", "MODEL_CACHE=/cache/sha256/" + strings.TrimPrefix(shard.Digest(), "sha256:"),
		"--mount", "type=bind,src=" + gpu + ",dst=/dev/nvidia0,options=rbind:rw",
		"--mount", "type=bind,src=" + filepath.Join(store, "tenants", "default") + ",dst=/cache,options=rbind:ro", im.Ref, "warm"}, im.Args...)...)
	ag.waitLine(t, "container warm: ready")
	warm := readAgentTrace(t, data, "warm")

	// The release, whose container exits before it is ready.
	ctrd.Ctr(t, "images", "pull", "--hosts-dir", ctrd.HostsDir, ref2)
	// It lives a moment: the agent records a container from its task's create event, and
	// one whose process is gone by then is not recorded.
	ctrd.Ctr(t, "run", "-d", ref2, "fail", "sh", "-c", "cat /bin/busybox > /dev/null; sleep 5; exit 3")
	ag.waitLine(t, "container fail: exited")
	fail := readAgentTrace(t, data, "fail")
	for _, c := range []struct {
		tr      *trace.Trace
		outcome trace.Outcome
		pulled  bool
	}{{cold, trace.OutcomeReady, true}, {warm, trace.OutcomeReady, false}, {fail, trace.OutcomeExited, false}} {
		if c.tr.Outcome != c.outcome || (c.tr.Pull != nil && pullBytes(c.tr) > 0) != c.pulled {
			t.Fatalf("%s: outcome %s, pull %+v; want %s, pulled %v", c.tr.Workload.ContainerID, c.tr.Outcome, c.tr.Pull, c.outcome, c.pulled)
		}
	}
	t.Logf("time to ready: cold %v, warm %v", cold.Duration, warm.Duration)

	// Prometheus has it all once it scraped three traces' counts (each new series is
	// scraped at zero first, see metrics.ZeroFirst).
	prom.waitFor(t, `sum(coldtrace_cold_starts_total) == 3 and sum(coldtrace_traces_written_total) == 3`)
	checkPromtool(t, ag.metrics)

	// Every query of every dashboard, with the variables set for this node and workload
	// and the windows covering the whole test.
	window := fmt.Sprintf("%ds", int(time.Since(began).Seconds())+60)
	vars := map[string]string{
		// As Grafana formats a value for a regex matcher: escaped, in a PromQL string.
		"$namespace": "default", "$workload": strings.ReplaceAll(regexp.QuoteMeta(workload), `\`, `\\`), "$node": "test-node",
		"$__range": window, "$__rate_interval": window,
	}
	results := map[string][]sample{} // by "dashboard/panel/refId"
	files, _ := filepath.Glob(filepath.Join("..", "..", "dashboards", "*.json"))
	if len(files) != 4 {
		t.Fatalf("dashboards: %v, want the 4 generated ones", files)
	}
	for _, f := range files {
		d := readDashboard(t, f)
		for _, q := range d.queries() {
			expr := substitute(t, q.expr, vars)
			res := prom.query(t, expr)
			if !slices.ContainsFunc(res, func(s sample) bool { return !math.IsNaN(s.value) }) {
				t.Errorf("%s: %s: %q returns no value: %v", filepath.Base(f), q.name, expr, res)
			}
			results[d.UID+"/"+q.name] = res
		}
		for _, v := range d.Templating.List {
			m := labelValuesRE.FindStringSubmatch(v.Query)
			if m == nil {
				continue
			}
			want := map[string]string{"node": "test-node", "namespace": "default", "tenant": "default", "workload": workload}[m[2]]
			if got := prom.labelValues(t, m[2], substitute(t, m[1], vars)); !slices.Contains(got, want) {
				t.Errorf("%s: variable %s: %s gives %v, want %q among them", filepath.Base(f), v.Name, v.Query, got, want)
			}
		}
	}

	// The values the test knows.
	value := func(key string, labels map[string]string) float64 {
		t.Helper()
		for _, s := range results[key] {
			if matches(s.metric, labels) {
				return s.value
			}
		}
		t.Errorf("%s: no series %v in %v", key, labels, results[key])
		return math.NaN()
	}
	// Counts through increase(), which extrapolates to the window's end: to the unit.
	count := func(key string, labels map[string]string, want float64) {
		t.Helper()
		if got := value(key, labels); math.Abs(got-want) > 0.25 {
			t.Errorf("%s %v: %.3f, want %v", key, labels, got, want)
		}
	}
	count("coldtrace-fleet/Cold starts/A", map[string]string{"outcome": "ready"}, 2)
	count("coldtrace-fleet/Cold starts/A", map[string]string{"outcome": "exited"}, 1)
	count("coldtrace-fleet/Cold starts/A", map[string]string{"outcome": "timeout"}, 0)
	count("coldtrace-fleet/Failures and timeouts/A", map[string]string{"outcome": "exited", "workload": workload}, 1)
	count("coldtrace-agent/Traces written and failed/A", nil, 3)
	count("coldtrace-agent/Traces written and failed/B", nil, 0)
	count("coldtrace-cache/Fallbacks/A", map[string]string{"reason": "corrupt"}, 1)
	// The probes as the traces list them.
	attached := 0
	for _, p := range cold.Host.Probes {
		if p.Attached {
			attached++
		}
	}
	count("coldtrace-agent/Probes attached/A", nil, float64(attached))
	count("coldtrace-agent/Probes not attached/A", nil, float64(len(cold.Host.Probes)-attached))

	ready := []float64{cold.Duration.Seconds(), warm.Duration.Seconds()}
	inBucket(t, "fleet p50 by workload", value("coldtrace-fleet/Time to ready by workload (over the range)/A", map[string]string{"workload": workload}), 0.5, ready)
	inBucket(t, "fleet p99 by workload", value("coldtrace-fleet/Time to ready by workload (over the range)/C", map[string]string{"workload": workload}), 0.99, ready)
	inBucket(t, "workload p50, pulled", value("coldtrace-workload/Time to ready p50/A", map[string]string{"image": metrics.ImagePulled}), 0.5, ready[:1])
	inBucket(t, "workload p50, present", value("coldtrace-workload/Time to ready p50/A", map[string]string{"image": metrics.ImagePresent}), 0.5, ready[1:])

	// The pull bytes: the layers the registry served, exactly, and per start on the panel.
	if got := prom.query(t, `sum(coldtrace_pull_bytes_total{node="test-node"})`); len(got) != 1 || int64(got[0].value) != layerBytes {
		t.Errorf("coldtrace_pull_bytes_total %v, want the %d layer bytes the registry served", got, layerBytes)
	}
	if got := value("coldtrace-workload/Bytes per start: read vs pulled/A", nil); math.Abs(got-float64(layerBytes)/3) > float64(layerBytes)/300 {
		t.Errorf("pulled bytes per start %.0f, want %d / 3 starts", got, layerBytes)
	}
	if got := value("coldtrace-workload/Bytes per start: read vs pulled/B", nil); got < float64(shard.Size())/3*0.99 {
		t.Errorf("downloaded bytes per start %.0f, want at least the %d-byte shard over 3 starts", got, shard.Size())
	}

	// The deploy: now the release's digest; over the test, both.
	if got := results["coldtrace-workload/annotation Deploys"]; len(got) != 1 || got[0].metric["digest"] != d2.String() {
		t.Errorf("deploy annotation now: %v, want the release %s", got, d2)
	}
	expr := substitute(t, readDashboard(t, filepath.Join("..", "..", "dashboards", "coldtrace-workload.json")).Annotations.List[0].Expr, vars)
	digests := map[string]bool{}
	for _, s := range prom.queryRange(t, expr, began, time.Now()) {
		digests[s.metric["digest"]] = true
	}
	if len(digests) != 2 || !digests[d2.String()] || !digests[im.Digest] {
		t.Errorf("deploy annotations over the test: %v, want %s and %s", digests, im.Digest, d2)
	}
}

// fileDigest is the sha256 of a file, "" when it cannot be read.
func fileDigest(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("sha256:%x", sha256.Sum256(b))
}

func pullBytes(tr *trace.Trace) int64 {
	var n int64
	for _, l := range tr.Pull.Layers {
		n += l.Bytes
	}
	return n
}

// inBucket checks a quantile estimated from coldtrace's time-to-ready buckets against the
// true times: histogram_quantile interpolates within the bucket that holds the
// ceil(q*n)-th smallest value, so the estimate lies within that bucket's bounds.
func inBucket(t *testing.T, what string, got, q float64, values []float64) {
	t.Helper()
	v := slices.Sorted(slices.Values(values))[int(math.Ceil(q*float64(len(values))))-1]
	lo, hi := 0.0, math.Inf(1)
	for _, b := range metrics.StartBuckets {
		if v <= b {
			hi = b
			break
		}
		lo = b
	}
	if !(got >= lo && got <= hi) {
		t.Errorf("%s: %.3f s, want within (%g, %g], the bucket of %.3f s (of %v)", what, got, lo, hi, v, values)
	}
}

func matches(metric, labels map[string]string) bool {
	for k, v := range labels {
		if metric[k] != v {
			return false
		}
	}
	return true
}

// substitute sets a query's variables, longest name first ($__rate_interval before a
// shorter name it begins with).
func substitute(t *testing.T, expr string, vars map[string]string) string {
	t.Helper()
	names := slices.Collect(maps.Keys(vars))
	slices.SortFunc(names, func(a, b string) int { return len(b) - len(a) })
	for _, k := range names {
		expr = strings.ReplaceAll(expr, k, vars[k])
	}
	if strings.Contains(expr, "$") {
		t.Fatalf("a variable the test does not set in %s", expr)
	}
	return expr
}

var labelValuesRE = regexp.MustCompile(`^label_values\((.*), *(\w+)\)$`)

// dashboardJSON is what the test reads of a dashboard.
type dashboardJSON struct {
	UID         string      `json:"uid"`
	Panels      []panelJSON `json:"panels"`
	Annotations struct {
		List []struct {
			Name string `json:"name"`
			Expr string `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Query string `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panelJSON struct {
	Title   string      `json:"title"`
	Panels  []panelJSON `json:"panels"` // a collapsed row's
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

func readDashboard(t *testing.T, path string) dashboardJSON {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboardJSON
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return d
}

type namedQuery struct{ name, expr string }

// queries are the dashboard's PromQL: every panel target's and every annotation's.
func (d dashboardJSON) queries() []namedQuery {
	var qs []namedQuery
	var walk func([]panelJSON)
	walk = func(ps []panelJSON) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				qs = append(qs, namedQuery{p.Title + "/" + tg.RefID, tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, a := range d.Annotations.List {
		qs = append(qs, namedQuery{"annotation " + a.Name, a.Expr})
	}
	return qs
}

// checkPromtool runs `promtool check metrics` on a scrape of the agent.
func checkPromtool(t *testing.T, metricsURL string) {
	t.Helper()
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	series, ours := 0, 0
	for _, l := range strings.Split(string(body), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			series++
			if strings.HasPrefix(l, metrics.Prefix) {
				ours++
			}
		}
	}
	t.Logf("a scrape of the agent: %d bytes, %d series, %d of them coldtrace_*", len(body), series, ours)
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func startAgentProc(t *testing.T, bin string, args ...string) *agentProc {
	t.Helper()
	a := startAgent(t, exec.Command(bin, append([]string{"agent"}, args...)...))
	a.metrics = strings.TrimPrefix(a.waitLine(t, "coldtrace: metrics at "), "coldtrace: metrics at ")
	return a
}

func readAgentTrace(t *testing.T, data, id string) *trace.Trace {
	t.Helper()
	tr, err := trace.ReadFile(filepath.Join(data, "traces", "default", id+".json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func writeAtomic(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(filepath.Dir(path)), filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// promServer is a Prometheus that scrapes the agent every second.
type promServer struct{ url string }

// startPrometheus runs Debian's prometheus on a loopback port with its own storage,
// scraping target (a URL) with honor_labels, as docs/metrics.md asks, and the node label
// that a Kubernetes scrape configuration would set.
func startPrometheus(t *testing.T, target string) *promServer {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: coldtrace
    honor_labels: true
    metrics_path: %s
    static_configs:
      - targets: [%q]
        labels:
          node: test-node
`, u.Path, u.Host)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("prometheus log:\n%s", b)
		}
	})
	// A free port, for the moment between its close and Prometheus' listen: another
	// process may take it meanwhile, and Prometheus then exits; try another.
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		cmd := exec.Command("prometheus", "--config.file", filepath.Join(dir, "prometheus.yml"),
			"--storage.tsdb.path", filepath.Join(dir, "tsdb"), "--web.listen-address", addr, "--log.level", "warn")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() { cmd.Process.Kill(); <-exited })
		p := &promServer{url: "http://" + addr}
		if p.waitReady(t, exited) {
			return p
		}
	}
	t.Fatal("prometheus exited three times before it was ready")
	return nil
}

// waitReady waits up to a minute for Prometheus to be ready, and says false if it exited
// before.
func (p *promServer) waitReady(t *testing.T, exited <-chan struct{}) bool {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		select {
		case <-exited:
			return false
		default:
		}
		if resp, err := http.Get(p.url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
	}
	t.Fatal("prometheus did not get ready within a minute")
	return false
}

// sample is one series of a query's result.
type sample struct {
	metric map[string]string
	value  float64
}

func (p *promServer) api(t *testing.T, path string, params url.Values, into any) {
	t.Helper()
	resp, err := http.Get(p.url + path + "?" + params.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.Status != "success" {
		t.Fatalf("%s %v: %s %s (%v)", path, params, r.Status, r.Error, err)
	}
	if err := json.Unmarshal(r.Data, into); err != nil {
		t.Fatalf("%s: %v: %s", path, err, r.Data)
	}
}

// query evaluates an instant vector query now.
func (p *promServer) query(t *testing.T, expr string) []sample {
	t.Helper()
	var d struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	p.api(t, "/api/v1/query", url.Values{"query": {expr}}, &d)
	var out []sample
	for _, r := range d.Result {
		v, _ := strconv.ParseFloat(fmt.Sprint(r.Value[1]), 64)
		out = append(out, sample{r.Metric, v})
	}
	return out
}

// queryRange returns the series a query gives at some step between start and end, each
// with its last value.
func (p *promServer) queryRange(t *testing.T, expr string, start, end time.Time) []sample {
	t.Helper()
	var d struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		} `json:"result"`
	}
	p.api(t, "/api/v1/query_range", url.Values{"query": {expr}, "start": {fmt.Sprint(start.Unix())}, "end": {fmt.Sprint(end.Unix() + 1)}, "step": {"1"}}, &d)
	var out []sample
	for _, r := range d.Result {
		v, _ := strconv.ParseFloat(fmt.Sprint(r.Values[len(r.Values)-1][1]), 64)
		out = append(out, sample{r.Metric, v})
	}
	return out
}

// labelValues is what Grafana's label_values(match, label) lists.
func (p *promServer) labelValues(t *testing.T, label, match string) []string {
	t.Helper()
	var vs []string
	p.api(t, "/api/v1/label/"+label+"/values", url.Values{"match[]": {match}}, &vs)
	return vs
}

// waitFor polls until a query returns a series: Prometheus has scraped what it needs.
func (p *promServer) waitFor(t *testing.T, expr string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); len(p.query(t, expr)) == 0; time.Sleep(250 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("prometheus did not see %s within a minute", expr)
		}
	}
}
