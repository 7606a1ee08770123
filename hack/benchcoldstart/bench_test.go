package benchcoldstart

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/manifest"
	"github.com/coldtrace/coldtrace/trace"
)

// The flags size the benchmark; the defaults are CI's tiny run. `make bench-coldstart`
// passes the reference sizes.
var (
	imageMiB   = flag.Int("image-mib", 8, "image size in MiB beyond its Python runtime (libraries and weights)")
	shardMiB   = flag.Int("shard-mib", 2, "size in MiB of the model shard the server downloads at start")
	linkMiBps  = flag.Int("link-mibps", 100, "the node's link in MiB/s, shared by the registry and the origin")
	runs       = flag.Int("runs", 1, "runs of each strategy (interleaved); the baseline has 3 more, which make the manifest")
	lead       = flag.Duration("late-lead", 2*time.Second, "how long before the pod `coldtrace warm` starts in the late strategy")
	curve      = flag.String("curve-mib", "", "comma-separated image sizes in MiB for the baseline and coldtrace curve (empty: none)")
	curveRuns  = flag.Int("curve-runs", 1, "runs of baseline and coldtrace at each size of the curve (after 3 baselines for the manifest)")
	outDir     = flag.String("out", "", "write results.json, table.md and chart.svg here (default: a temporary directory)")
	keepTraces = flag.Bool("keep-traces", false, "copy every trace into -out/traces")
	only       = flag.String("strategies", "", "comma-separated strategies to run in the rounds at the main size (default: all; the 3 baselines that make the manifest always run)")
)

// The strategies, in the order of the issue.
const (
	stBaseline = "baseline"
	stPrepull  = "prepull"
	stWarm     = "coldtrace"
	stHalf     = "coldtrace-half"
	stLate     = "coldtrace-late"
	stLower    = "lower-bound"
)

var allStrategies = []string{stBaseline, stPrepull, stWarm, stHalf, stLate, stLower}

var describe = map[string]string{
	stBaseline: "nothing cached",
	stPrepull:  "whole image pre-pulled (its files cold), model downloaded at start",
	stWarm:     "`coldtrace warm` before the start",
	stHalf:     "`coldtrace warm` with --budget half the hot set",
	stLate:     "`coldtrace warm` started seconds before the pod",
	stLower:    "everything local and in the page cache",
}

// TestBenchColdStart runs the benchmark: see the package comment and docs/benchmark.md.
func TestBenchColdStart(t *testing.T) {
	testenv.RequireRoot(t)
	for _, bin := range []string{"ip", "tc", "ctr", "vmtouch", "ldd", pythonBin} {
		testenv.RequireBinary(t, bin)
	}
	testenv.RequireBPF(t)
	b := &bench{bin: buildColdtrace(t), link: newLink(t, int64(*linkMiBps)<<20), out: *outDir}
	if b.out == "" {
		b.out = t.TempDir()
	}
	rep := &report{Command: strings.Join(os.Args, " "), Started: time.Now().UTC(), LinkMiBps: *linkMiBps, ShardMiB: *shardMiB, Load: loadavg()}
	strategies := allStrategies
	if *only != "" {
		strategies = strings.Split(*only, ",")
		for _, st := range strategies {
			if !slices.Contains(allStrategies, st) {
				t.Fatalf("-strategies: no strategy %q (%s)", st, strings.Join(allStrategies, ", "))
			}
		}
	}
	t.Run(fmt.Sprintf("image=%dMiB", *imageMiB), func(t *testing.T) {
		rep.Main = b.size(t, int64(*imageMiB)<<20, strategies, *runs)
	})
	if rep.Main == nil {
		t.Fatal("the benchmark did not run")
	}
	// Written now and again after each size of the curve: a long run that is stopped
	// keeps what it measured.
	rep.LoadAfter = loadavg()
	rep.write(t, b.out)
	for _, s := range strings.Split(*curve, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		var mib int64
		if _, err := fmt.Sscan(s, &mib); err != nil || mib <= 0 {
			t.Fatalf("-curve-mib: bad size %q", s)
		}
		t.Run(fmt.Sprintf("curve=%dMiB", mib), func(t *testing.T) {
			rep.Curve = append(rep.Curve, b.size(t, mib<<20, []string{stBaseline, stWarm}, *curveRuns))
		})
		rep.LoadAfter = loadavg()
		rep.write(t, b.out)
	}
	for _, s := range rep.Main.Summary {
		if s.Runs == 0 {
			t.Errorf("strategy %s has no successful run", s.Strategy)
		}
	}
	checkRuns(t, rep.Main)
}

type bench struct {
	bin  string
	link *link
	out  string
}

// sizeRun is one image size's registry, origin, image and manifests.
type sizeRun struct {
	*bench
	reg        *ctrtest.Registry
	origin     *origin.HTTP
	img        *benchImage
	shard      int64
	shardHex   string
	full, half string // the manifests
	prepull    string // the image alone
	dir        string
}

// size benchmarks one image size: 3 baselines, from which `coldtrace advise` writes the
// manifests, then `n` rounds of the strategies interleaved, a new node for every run.
func (b *bench) size(t *testing.T, total int64, strategies []string, n int) *sizeResult {
	s := &sizeRun{bench: b, dir: t.TempDir(), shard: int64(*shardMiB) << 20}
	s.reg = ctrtest.StartRegistry(t, ctrtest.RegistryOptions{Listener: b.link.listen(t)})
	body := origin.Random(int(s.shard))
	s.shardHex = fmt.Sprintf("%x", sha256.Sum256(body))
	s.origin = origin.StartHTTPOn(t, b.link.listen(t), "/hub/shard.safetensors", body, 0)
	s.img = pushImage(t, s.reg, total)
	res := &sizeResult{ImageBytes: s.img.Size, ImageMiB: total >> 20, Ref: s.img.Ref}
	t.Logf("image %s: %d MiB of files; shard %d MiB; link %d MiB/s", s.img.Ref, s.img.Size>>20, s.shard>>20, *linkMiBps)

	var baselines []string
	for i := range 3 {
		r := s.run(t, stBaseline, -i-1)
		res.Runs = append(res.Runs, r)
		if r.Err == "" {
			baselines = append(baselines, r.Trace)
		}
	}
	if len(baselines) == 0 {
		t.Fatal("no baseline run succeeded: no manifest")
	}
	s.manifests(t, baselines)
	for round := range n {
		for _, st := range strategies {
			res.Runs = append(res.Runs, s.run(t, st, round))
		}
	}
	var all []string
	for _, r := range res.Runs {
		if r.Strategy == stBaseline && r.Err == "" {
			all = append(all, r.Trace)
		}
	}
	res.Advice = s.advise(t, all)
	if !slices.Contains(strategies, stBaseline) {
		strategies = append([]string{stBaseline}, strategies...)
	}
	res.summarise(strategies)
	return res
}

// manifests writes the manifest of the baselines, one with half its hot set as budget,
// and one with the image alone (the pre-pull strategy's).
func (s *sizeRun) manifests(t *testing.T, traces []string) {
	s.full, s.half, s.prepull = filepath.Join(s.dir, "full.yaml"), filepath.Join(s.dir, "half.yaml"), filepath.Join(s.dir, "image.yaml")
	s.coldtrace(t, append([]string{"advise", "--format", "json", "-o", s.full}, traces...)...)
	m, err := manifest.Load(s.full, manifest.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var hot int64
	for _, e := range m.Spec.HotSet {
		hot += e.Bytes()
	}
	t.Logf("manifest: %d images, %d artifacts, hot set %d files, %d MiB", len(m.Spec.Images), len(m.Spec.Artifacts), len(m.Spec.HotSet), hot>>20)
	if len(m.Spec.Artifacts) == 0 {
		t.Errorf("the manifest has no artifact: the shard's download was not seen")
	}
	s.coldtrace(t, append([]string{"advise", "--format", "json", "--budget", fmt.Sprint(max(hot/2, 1)), "-o", s.half}, traces...)...)
	m.Spec.Artifacts, m.Spec.HotSet = nil, nil
	if err := m.WriteFile(s.prepull); err != nil {
		t.Fatal(err)
	}
}

// advise asks `coldtrace advise` about the baseline traces, for its predictions.
func (s *sizeRun) advise(t *testing.T, traces []string) json.RawMessage {
	out := s.coldtrace(t, append([]string{"advise", "--format", "json"}, traces...)...)
	return json.RawMessage(out)
}

// runResult is one cold start.
type runResult struct {
	Strategy string `json:"strategy"`
	Round    int    `json:"round"` // negative: the baselines that made the manifest
	Err      string `json:"error,omitempty"`
	// Ready is the trace's time to ready; Server the server's own clock at ready (its
	// process's age when it listened) and its marks.
	Ready  float64            `json:"ready_s"`
	Server float64            `json:"server_ready_s"`
	Marks  map[string]any     `json:"server_marks,omitempty"`
	Phases map[string]float64 `json:"critical_s"`
	// Download is the model download's span in the trace (0 when staged).
	Download float64 `json:"download_s"`
	// LinkBytes crossed the link during the start, WarmLinkBytes during warm before it.
	LinkBytes     int64 `json:"link_bytes"`
	WarmLinkBytes int64 `json:"warm_link_bytes"`
	// Warmed is what warm read into the page cache or staged; Read what the workload read.
	Warmed int64   `json:"warmed_bytes"`
	Read   int64   `json:"read_bytes"`
	Warm   float64 `json:"warm_s"`
	// Unrecorded is the server's own clock at ready in a start of the same state that no
	// tracer watched (lower bound only): the tracer's overhead is Server - Unrecorded.
	Unrecorded float64 `json:"unrecorded_server_ready_s,omitempty"`
	Trace      string  `json:"trace"`
}

// run is one cold start of a strategy on a new node.
func (s *sizeRun) run(t *testing.T, st string, round int) (res runResult) {
	res = runResult{Strategy: st, Round: round}
	t.Run(fmt.Sprintf("%s/%d", st, round), func(t *testing.T) {
		defer func() {
			if t.Failed() && res.Err == "" {
				res.Err = "failed: see the test log"
			}
		}()
		c := ctrtest.StartContainerd(t)
		dir := t.TempDir()
		store := filepath.Join(dir, "store")
		tenant := filepath.Join(store, "tenants", "default")
		if err := os.MkdirAll(filepath.Join(tenant, "sha256"), 0o755); err != nil {
			t.Fatal(err)
		}
		dropCaches(t)
		sent := s.link.sent(t)
		switch st {
		case stPrepull:
			s.ctr(t, c, "images", "pull", "--plain-http", s.img.Ref)
			dropCaches(t) // pulled earlier: its files are on disk, not in memory
		case stWarm, stLower:
			res.Warmed, res.Warm = s.warm(t, c, store, s.full)
		case stHalf:
			res.Warmed, res.Warm = s.warm(t, c, store, s.half)
		}
		if st == stLower {
			sh(t, "vmtouch", "-tq", filepath.Join(c.Root, "io.containerd.snapshotter.v1.overlayfs"), store)
			res.Unrecorded = s.unrecorded(t, c, tenant, round)
			sh(t, "vmtouch", "-tq", filepath.Join(c.Root, "io.containerd.snapshotter.v1.overlayfs"), store)
		}
		res.WarmLinkBytes = s.link.sent(t) - sent
		sent = s.link.sent(t)
		var late chan warmDone
		if st == stLate {
			late = make(chan warmDone, 1)
			go func() {
				w, d, err := s.warmErr(c, store, s.full)
				late <- warmDone{w, d, err}
			}()
			time.Sleep(*lead)
		}
		res.Trace = filepath.Join(dir, "trace.json.gz")
		log := filepath.Join(dir, "server.log")
		args := []string{"record", "--image", s.img.Ref, "--containerd", c.Address, "--namespace", "default", "--plain-http",
			"--net-host", "--timeout", "10m", "--format", "none", "-o", res.Trace, "--container-log", log,
			"--mount", tenant + ":/cache"}
		for _, e := range s.env() {
			args = append(args, "--env", e)
		}
		s.coldtrace(t, args...)
		if late != nil {
			w := <-late
			if w.err != nil {
				t.Fatal(w.err)
			}
			res.Warmed, res.Warm = w.bytes, w.took
		}
		res.LinkBytes = s.link.sent(t) - sent
		tr, err := trace.ReadFile(res.Trace)
		if err != nil {
			t.Fatal(err)
		}
		res.fromTrace(t, tr)
		res.Marks = serverMarks(t, log)
		res.Server, _ = res.Marks["ready"].(float64)
		if s.out != "" && *keepTraces {
			keep := filepath.Join(s.out, "traces", fmt.Sprintf("%s-%dMiB-%d.json.gz", st, s.img.Size>>20, round))
			os.MkdirAll(filepath.Dir(keep), 0o755)
			if data, err := os.ReadFile(res.Trace); err == nil {
				os.WriteFile(keep, data, 0o644)
			}
		}
		if st == stBaseline || st == stPrepull {
			// The baselines' traces feed the manifests and the advice after the run.
			keep := filepath.Join(s.dir, fmt.Sprintf("%s-%d.json.gz", st, round))
			data, err := os.ReadFile(res.Trace)
			if err == nil {
				err = os.WriteFile(keep, data, 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
			res.Trace = keep
		}
		t.Logf("%s: ready %.2f s (server's clock %.2f s), link %d MiB, warm %.2f s (%d MiB, %d MiB over the link), read %d MiB, model from %v",
			st, res.Ready, res.Server, res.LinkBytes>>20, res.Warm, res.Warmed>>20, res.WarmLinkBytes>>20, res.Read>>20, res.Marks["model_from"])
	})
	return res
}

// env is the server's environment beyond the image's: where its origin is, and where the
// cache agent's store shows the staged shard.
func (s *sizeRun) env() []string {
	return []string{
		"ORIGIN_HOST=" + s.link.nsIP, fmt.Sprintf("ORIGIN_PORT=%d", s.origin.Port()), "ORIGIN_PATH=/hub/shard.safetensors",
		fmt.Sprintf("MODEL_SIZE=%d", s.shard), "MODEL_CACHE=/cache/sha256/" + s.shardHex,
	}
}

// unrecorded starts the server with ctr, no tracer anywhere, and returns its own clock
// at ready.
func (s *sizeRun) unrecorded(t *testing.T, c *ctrtest.Containerd, tenant string, round int) float64 {
	// warm pulled the image by digest; this names it by its tag too, moving only the
	// manifest (what record does for itself).
	s.ctr(t, c, "images", "pull", "--plain-http", s.img.Ref)
	args := []string{"run", "--rm", "--net-host", "--mount", "type=bind,src=" + tenant + ",dst=/cache,options=rbind:ro", "--env", "EXIT_AFTER_READY=1"}
	for _, e := range s.env() {
		args = append(args, "--env", e)
	}
	out := s.ctr(t, c, append(args, s.img.Ref, fmt.Sprintf("unrecorded-%d", round))...)
	var marks map[string]any
	if err := json.Unmarshal(lastLine(out), &marks); err != nil {
		t.Fatalf("unrecorded server's output %q: %v", out, err)
	}
	v, _ := marks["ready"].(float64)
	return v
}

type warmDone struct {
	bytes int64
	took  float64
	err   error
}

func (s *sizeRun) warm(t *testing.T, c *ctrtest.Containerd, store, m string) (int64, float64) {
	b, d, err := s.warmErr(c, store, m)
	if err != nil {
		t.Fatal(err)
	}
	return b, d
}

// warmErr runs `coldtrace warm` and returns the bytes it moved (pulled, staged, read into
// the page cache) and how long it took.
func (s *sizeRun) warmErr(c *ctrtest.Containerd, store, m string) (int64, float64, error) {
	start := time.Now()
	cmd := exec.Command(s.bin, "warm", "--containerd", c.Address, "--namespace", "default", "--plain-http",
		"--store", store, "--origin-allow", s.link.nsIP+"/32", "--format", "json", m)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	took := time.Since(start).Seconds()
	if err != nil {
		return 0, took, fmt.Errorf("coldtrace warm: %v\n%s%s", err, out, stderr.Bytes())
	}
	var sums []struct {
		Items []struct {
			Action, Name, Result string
			Bytes                int64
		}
	}
	if err := json.Unmarshal(out, &sums); err != nil {
		return 0, took, fmt.Errorf("coldtrace warm's summary: %v", err)
	}
	var n int64
	for _, sum := range sums {
		for _, it := range sum.Items {
			if it.Result == "failed" || it.Result == "refused" {
				return 0, took, fmt.Errorf("coldtrace warm: %s %s: %s", it.Action, it.Name, it.Result)
			}
			n += it.Bytes
		}
	}
	return n, took, nil
}

// fromTrace takes the time to ready, the critical path by phase, the download's span and
// the bytes read from the trace.
func (r *runResult) fromTrace(t *testing.T, tr *trace.Trace) {
	if tr.Ready == nil {
		t.Fatalf("trace %s: never ready (%s)", r.Trace, tr.Outcome)
	}
	r.Ready = tr.Ready.At.Seconds()
	r.Phases = map[string]float64{}
	for _, seg := range tr.Critical {
		r.Phases[string(seg.Phase)] += (seg.End - seg.Start).Seconds()
	}
	if p, ok := tr.Phase(trace.PhaseFetch); ok {
		r.Download = p.Span().Seconds()
	}
	for _, f := range tr.Files {
		r.Read += f.BytesRead + f.MappedBytes
	}
}

func serverMarks(t *testing.T, log string) map[string]any {
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(lastLine(data), &m); err != nil {
		t.Fatalf("server log %s: %v\n%s", log, err, data)
	}
	return m
}

func lastLine(b []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return lines[len(lines)-1]
}

func (s *sizeRun) ctr(t *testing.T, c *ctrtest.Containerd, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"-a", c.Address, "-n", "default"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %v: %v\n%s", args, err, out)
	}
	return out
}

func (b *bench) coldtrace(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(b.bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("coldtrace %s: %v\n%s%s", args[0], err, out, stderr.Bytes())
	}
	return out
}

// dropCaches empties the page cache, as on a node that just booted.
func dropCaches(t testing.TB) {
	t.Helper()
	sh(t, "sync")
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200); err != nil {
		t.Fatal(err)
	}
}

func buildColdtrace(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "coldtrace")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/coldtrace")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

// checkRuns holds each run to what its strategy must do, by tc's count of the bytes over
// the link and the server's own word on where its model came from: a run that looks fast
// because it skipped the work is a broken benchmark, at any size.
func checkRuns(t *testing.T, r *sizeResult) {
	for _, run := range r.Runs {
		if run.Err != "" {
			continue
		}
		from, _ := run.Marks["model_from"].(string)
		switch run.Strategy {
		case stBaseline:
			if run.LinkBytes < r.ImageBytes || from != "origin" {
				t.Errorf("baseline %d: %d bytes over the link for an image of %d, model from %q", run.Round, run.LinkBytes, r.ImageBytes, from)
			}
		case stPrepull:
			// The start moves the model alone: its bytes and the packets' headers (tc
			// counts IP packets: some 4%), with manifests and requests.
			model := int64(*shardMiB) << 20
			if run.LinkBytes > model*11/10+1<<20 || run.WarmLinkBytes < r.ImageBytes || from != "origin" {
				t.Errorf("prepull %d: %d bytes over the link at the start, %d before, model from %q", run.Round, run.LinkBytes, run.WarmLinkBytes, from)
			}
		case stWarm, stHalf, stLower:
			// Manifests and the server's requests only: no layer, no model.
			if run.LinkBytes >= 1<<20 || from != "staged" {
				t.Errorf("%s %d: %d bytes over the link at the start, model from %q", run.Strategy, run.Round, run.LinkBytes, from)
			}
		case stLate:
			if from != "staged" && from != "origin" {
				t.Errorf("late %d: model from %q", run.Round, from)
			}
		}
	}
}
