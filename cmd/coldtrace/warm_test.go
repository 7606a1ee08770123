package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/manifest"
	"github.com/coldtrace/coldtrace/trace"
)

// TestWarmHalvesColdStart is the cache agent's acceptance test. The same container start
// is recorded twice, each on a fresh containerd root after the page cache was dropped:
// once as it is, once after `coldtrace warm` applied the manifest that `coldtrace advise`
// built from the first recording. Both containers mount the tenant's artifact directory at
// /cache and are told to look for the model shard there (MODEL_CACHE), as a pod configured
// for the store would be; only the warmed one finds it. Ground truth: the registry's and
// the origin's byte counts, and vmtouch's view of the page cache.
func TestWarmHalvesColdStart(t *testing.T) {
	testenv.RequireBPF(t)
	testenv.RequireBinary(t, "gcc")
	testenv.RequireBinary(t, "vmtouch")
	bin := build(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{Rate: 32 << 20})
	shard := origin.StartHTTP(t, ctrtest.ShardURLPath, origin.Random(32<<20), 16<<20)
	im := ctrtest.PushColdStart(t, reg, shard.Port(), ctrtest.Sizes{Libs: 2000, LibSize: 2048, Weights: 64 << 20, Tensors: 64})
	ref, args := im.Ref, im.Args
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	hex := strings.TrimPrefix(shard.Digest(), "sha256:")
	env := "MODEL_CACHE=/cache/sha256/" + hex

	record := func(ctrd *ctrtest.Containerd, mount, out string) *trace.Trace {
		t.Helper()
		cmd := []string{"record", "--image", ref, "--containerd", ctrd.Address, "--namespace", "k8s.io",
			"--plain-http", "--net-host", "--timeout", "2m", "--format", "none", "-o", out,
			"--env", env, "--mount", mount + ":/cache", "--"}
		b, err := exec.Command(bin, append(cmd, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("record: %v\n%s", err, b)
		}
		tr, err := trace.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if tr.Outcome != trace.OutcomeReady {
			t.Fatalf("%s: outcome %s (%s)", out, tr.Outcome, tr.Error)
		}
		return tr
	}

	// Cold: a new node, nothing cached.
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	dropCaches(t)
	cold := record(ctrtest.StartContainerd(t), empty, filepath.Join(dir, "cold.json.gz"))
	mpath := filepath.Join(dir, "coldstart.manifest.yaml")
	if b, err := exec.Command(bin, "advise", filepath.Join(dir, "cold.json.gz"), "-o", mpath).CombinedOutput(); err != nil {
		t.Fatalf("advise: %v\n%s", err, b)
	}
	m, err := manifest.Load(mpath, manifest.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Spec.Artifacts) != 1 || m.Spec.Artifacts[0].Digest != shard.Digest() || m.Spec.Artifacts[0].Origin != shard.URL() {
		t.Fatalf("manifest artifacts %+v, want the shard %s from %s", m.Spec.Artifacts, shard.Digest(), shard.URL())
	}
	// The entrypoint is part of the cold start: the kernel's ELF loader maps it and the
	// program runs from it. Without it in the hot set the warmed start reads it whole (the
	// first fault's read-around brings in every page not cached), far over the 1% below.
	var entry bool
	for _, e := range m.Spec.HotSet {
		entry = entry || "/"+e.Path == args[0] && e.Bytes() > 0
	}
	if !entry {
		for _, f := range cold.Files {
			if strings.HasPrefix(f.Path, "inode:") || f.Path == args[0] {
				t.Logf("cold trace: %s (dev %d, ino %d): layer %+v, %d ranges, %d bytes mapped", f.Path, f.Dev, f.Ino, f.Layer, len(f.Ranges), f.MappedBytes)
			}
		}
		t.Errorf("the hot set lacks the entrypoint %s (cold trace: %d events lost, incomplete %v, warnings %v)", args[0], cold.LostEvents, cold.Incomplete, cold.Warnings)
	}

	// Warm: another new node, then coldtrace warm.
	node := ctrtest.StartContainerd(t)
	dropCaches(t)
	warm := func() string {
		t.Helper()
		b, err := exec.Command(bin, "warm", "--containerd", node.Address, "--plain-http", "--store", store, "--origin-allow", "127.0.0.0/8", mpath).CombinedOutput()
		if err != nil {
			t.Fatalf("warm: %v\n%s", err, b)
		}
		return string(b)
	}
	pulled, fetched := reg.Total(), shard.Sent()
	out := warm()
	t.Logf("warm:\n%s", out)
	if reg.Total() == pulled || shard.Sent()-fetched < shard.Size() {
		t.Errorf("warm pulled %d bytes and fetched %d: want the image and the shard", reg.Total()-pulled, shard.Sent()-fetched)
	}
	// The node drops its page cache (a reboot, memory pressure): warming again finds the
	// image and the shard there, moves nothing over the network, and reads the hot set back.
	// Ground truth for the page cache, read by vmtouch: the shard in the store and the hot
	// ranges of the weights file in its layer's snapshot.
	blob := filepath.Join(store, "tenants", "default", "sha256", hex)
	weights, _ := filepath.Glob(filepath.Join(node.Root, "io.containerd.snapshotter.v1.overlayfs", "snapshots", "*", "fs", ctrtest.WeightsPath))
	var hot int64
	for _, e := range m.Spec.HotSet {
		if "/"+e.Path == ctrtest.WeightsPath {
			hot = e.Bytes() / 4096
		}
	}
	if len(weights) != 1 || hot == 0 {
		t.Fatalf("weights in the snapshots: %v; hot pages %d", weights, hot)
	}
	// The page cache is the machine's: another process that drops it (drop_caches, as this
	// test does, run by a test beside it) evicts what was warmed, and the start misses it
	// through no fault of the warmer. So once the warm is done, its pages are checked
	// (mincore) and locked in memory until the start is recorded: the misses then measure
	// whether the hot set covers what the start reads. An attempt that left hot pages out
	// of the page cache is made again, saying whether others dropped it meanwhile (the
	// kernel counts drops); a warmer that misses pages fails every attempt.
	var warmed *trace.Trace
	var blobRes, blobTotal, res, total int64
	for attempt := 1; ; attempt++ {
		dropCaches(t)
		drops := vmstat(t, "drop_pagecache")
		pulled, fetched = reg.Total(), shard.Sent()
		out = warm()
		t.Logf("warm after the page cache was dropped:\n%s", out)
		if reg.Total() != pulled || shard.Sent() != fetched || !strings.Contains(out, "prepull 0 done") || !strings.Contains(out, "stage 0 done") {
			t.Errorf("second warm pulled %d and fetched %d bytes:\n%s", reg.Total()-pulled, shard.Sent()-fetched, out)
		}
		blobRes, blobTotal = vmtouch(t, blob)
		res, total = vmtouch(t, weights[0])
		unpin, absent := pin(t, node.Root, blob, m.Spec.HotSet)
		if absent == 0 {
			pulled, fetched = reg.Total(), shard.Sent()
			warmed = record(node, filepath.Join(store, "tenants", "default"), filepath.Join(dir, "warm.json.gz"))
			unpin()
			break
		}
		unpin()
		drops = vmstat(t, "drop_pagecache") - drops
		if attempt == 3 {
			t.Fatalf("%d hot pages were not in the page cache after the warm, in each of %d attempts (%d drops of the page cache by other processes in the last)", absent, attempt, drops)
		}
		t.Logf("%d hot pages were not in the page cache after the warm; other processes dropped it %d times: warming again", absent, drops)
	}
	if blobRes != blobTotal {
		t.Errorf("vmtouch %s: %d of %d pages resident after warm", blob, blobRes, blobTotal)
	}
	if res < hot || res > hot+total/50 {
		t.Errorf("vmtouch %s: %d of %d pages resident after warm, want the %d hot ones", weights[0], res, total, hot)
	}
	t.Logf("time to ready: cold %s, after warm %s (%.1fx); pull %s -> %s; registry bytes during the warm start %d, origin bytes %d",
		time.Duration(cold.Duration), time.Duration(warmed.Duration), float64(cold.Duration)/float64(warmed.Duration),
		time.Duration(cold.Pull.End-cold.Pull.Start), time.Duration(warmed.Pull.End-warmed.Pull.Start), reg.Total()-pulled, shard.Sent()-fetched)
	if 2*warmed.Duration > cold.Duration {
		t.Errorf("after warm the start took %s, cold %s: want at least 2x shorter", time.Duration(warmed.Duration), time.Duration(cold.Duration))
	}
	// The pull is about 0 s: only the manifest is asked for again, no layer is fetched (the
	// registry's count and the pull's own). Its duration, logged above, is not the measure:
	// a metadata round trip took 0.66 s, over a tenth of the cold pull, on the loaded machine.
	if reg.Total()-pulled > 64<<10 {
		t.Errorf("pull after warm took %d registry bytes", reg.Total()-pulled)
	}
	for _, l := range warmed.Pull.Layers {
		if l.Bytes != 0 {
			t.Errorf("pull after warm fetched %d bytes of layer %s", l.Bytes, l.Digest)
		}
	}
	// The model came from the store: nothing from the origin, the staged copy read whole.
	if shard.Sent() != fetched {
		t.Errorf("the origin sent %d bytes during the warm start", shard.Sent()-fetched)
	}
	var fromStore bool
	var misses int64
	for _, f := range warmed.Files {
		if f.Path == "/cache/sha256/"+hex && f.BytesRead == shard.Size() {
			fromStore = true
		}
		misses += f.CacheMisses
	}
	if !fromStore {
		t.Errorf("the warm start did not read the shard from /cache/sha256/%s", hex)
	}
	// Page-cache misses, as the tracer counts them: close to 0 against the hot set's pages.
	var hotPages int64
	for _, e := range m.Spec.HotSet {
		hotPages += e.Bytes() / 4096
	}
	t.Logf("page-cache misses after warm: %d pages; the hot set has %d", misses, hotPages)
	if misses*100 > hotPages {
		t.Errorf("page-cache misses after warm: %d pages of a hot set of %d: want under 1%%", misses, hotPages)
		for _, f := range warmed.Files {
			if f.CacheMisses > 0 {
				t.Logf("%s: %d misses, %d bytes read, %d mapped", f.Path, f.CacheMisses, f.BytesRead, f.MappedBytes)
			}
		}
		for _, e := range m.Spec.HotSet {
			if e.Bytes() > 64<<10 {
				t.Logf("hot set: %s, %d bytes in %d ranges", e.Path, e.Bytes(), len(e.Ranges))
			}
		}
	}
}

// dropCaches empties the page cache, as on a node that just booted.
func dropCaches(t *testing.T) {
	t.Helper()
	if b, err := exec.Command("sh", "-c", "sync && echo 3 > /proc/sys/vm/drop_caches").CombinedOutput(); err != nil {
		t.Fatalf("drop caches: %v %s", err, b)
	}
}

// pin maps the files of the hot set, found in the snapshots under root, and blob, and locks
// the hot ranges (all of blob) in memory; it returns how many of those pages were not in the
// page cache before (mincore), and the function that unlocks them.
func pin(t *testing.T, root, blob string, hot []manifest.HotEntry) (unpin func(), cold int64) {
	t.Helper()
	var maps [][]byte
	unpin = func() {
		for _, m := range maps {
			unix.Munmap(m)
		}
	}
	lock := func(path string, ranges []manifest.Range) {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil || fi.Size() == 0 {
			return
		}
		m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			t.Fatalf("map %s: %v", path, err)
		}
		maps = append(maps, m)
		for _, r := range ranges {
			off, end := r.Off/manifest.PageSize*manifest.PageSize, min(r.End(), fi.Size())
			if off >= end {
				continue
			}
			vec := make([]byte, (end-off+manifest.PageSize-1)/manifest.PageSize)
			if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[off])), uintptr(end-off), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
				t.Fatalf("mincore %s: %v", path, errno)
			}
			for _, v := range vec {
				cold += int64(1 - v&1)
			}
			if err := unix.Mlock(m[off:end]); err != nil {
				t.Fatalf("mlock %s: %v", path, err)
			}
		}
	}
	fi, err := os.Stat(blob)
	if err != nil {
		t.Fatal(err)
	}
	lock(blob, []manifest.Range{{Off: 0, Len: fi.Size()}})
	for _, e := range hot {
		paths, _ := filepath.Glob(filepath.Join(root, "io.containerd.snapshotter.v1.overlayfs", "snapshots", "*", "fs", e.Path))
		if len(paths) == 0 {
			t.Fatalf("hot file %s is in no snapshot under %s", e.Path, root)
		}
		for _, p := range paths {
			lock(p, e.Ranges)
		}
	}
	return unpin, cold
}

// vmstat returns the counter name of /proc/vmstat.
func vmstat(t *testing.T, name string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/vmstat")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("/proc/vmstat: %q", line)
			}
			return n
		}
	}
	t.Fatalf("/proc/vmstat has no %s", name)
	return 0
}

var residentRE = regexp.MustCompile(`Resident Pages: (\d+)/(\d+)`)

// vmtouch returns the resident and total pages of a file as vmtouch counts them.
func vmtouch(t *testing.T, path string) (resident, total int64) {
	t.Helper()
	b, err := exec.Command("vmtouch", path).CombinedOutput()
	m := residentRE.FindSubmatch(b)
	if err != nil || m == nil {
		t.Fatalf("vmtouch %s: %v\n%s", path, err, b)
	}
	resident, _ = strconv.ParseInt(string(m[1]), 10, 64)
	total, _ = strconv.ParseInt(string(m[2]), 10, 64)
	return resident, total
}

// TestWarmRefuses gives warm manifests that must not be followed: each is refused with a
// clear message and nothing outside the store is read or written.
func TestWarmRefuses(t *testing.T) {
	testenv.RequireRoot(t)
	bin := build(t)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const head = `{"apiVersion":"coldtrace.dev/v1alpha1","kind":"PrefetchManifest","metadata":{"name":"m"},"spec":{"runs":1,`
	entry := func(layer, path string) string {
		l := ""
		if layer != "" {
			l = `"layer":"` + layer + `",`
		}
		return `{` + l + `"path":"` + path + `","ranges":[{"off":0,"len":4096}],"order":0,"firstAccessNs":0,"confidence":1,"expectedSavedSeconds":0}`
	}
	layer := "sha256:" + strings.Repeat("a", 64)
	// Ten million entries: the manifest is refused by its size before it is parsed.
	huge := filepath.Join(dir, "huge.json")
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(head + `"hotSet":[`)
	one := []byte(entry(layer, "x") + ",")
	chunk := bytes.Repeat(one, 100_000)
	for range 100 {
		f.Write(chunk)
	}
	f.WriteString(entry(layer, "y") + `]}}`)
	f.Close()

	for _, c := range []struct{ name, path, want string }{
		{"dotdot", write("dotdot.json", head+`"hotSet":[`+entry(layer, "usr/../../etc/shadow")+`]}}`), "'..'"},
		{"absolute", write("abs.json", head+`"hotSet":[`+entry(layer, "/etc/shadow")+`]}}`), "must be relative"},
		{"utf8", write("utf8.json", head+`"hotSet":[`+entry(layer, "usr/lib/\xff.so")+`]}}`), "UTF-8"},
		{"digest", write("digest.json", head+`"hotSet":[`+entry("sha256:1234", "usr/lib/a.so")+`]}}`), "64 hex digits"},
		{"ten million entries", huge, "limit"},
	} {
		b, err := exec.Command(bin, "warm", "--containerd", filepath.Join(dir, "none.sock"), "--store", filepath.Join(dir, "store"), c.path).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !strings.Contains(string(b), c.want) {
			t.Errorf("%s: exit %v, output %q: want a refusal that says %q", c.name, err, b, c.want)
		}
		if _, err := os.Stat(filepath.Join(dir, "store")); err == nil {
			t.Errorf("%s: the store was created for a refused manifest", c.name)
		}
	}
}

// TestAgentManifests runs `coldtrace agent` with a manifest directory laid out as mounted
// ConfigMaps, one per tenant: the manifest is applied at start, its artifact lands in the
// tenant's store, and the metrics endpoint counts it.
func TestAgentManifests(t *testing.T) {
	testenv.RequireBPF(t)
	ctrd := ctrtest.StartContainerd(t)
	o := origin.StartHTTP(t, "/m/model.bin", origin.Random(2<<20), 0)
	dir := t.TempDir()
	m := manifest.New("llm")
	m.Spec.Runs = 1
	m.Spec.Artifacts = []manifest.Artifact{{Path: "/models/model.bin", Origin: o.URL(), Size: o.Size(), Digest: o.Digest()}}
	if err := os.MkdirAll(filepath.Join(dir, "manifests", "team-a"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteFile(filepath.Join(dir, "manifests", "team-a", "llm.yaml")); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store")
	cmd := exec.Command(build(t), "agent", "--containerd", ctrd.Address, "--namespace", "default", "--data-dir", dir,
		"--manifests", filepath.Join(dir, "manifests"), "--store", store, "--origin-allow", "127.0.0.0/8", "--metrics-address", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	addr := make(chan string, 1)
	applied := make(chan string, 1)
	go func() {
		for sc := bufio.NewScanner(stderr); sc.Scan(); {
			l := sc.Text()
			if a, ok := strings.CutPrefix(l, "coldtrace: metrics at "); ok {
				addr <- a
			}
			if strings.Contains(l, "llm.yaml (tenant team-a)") {
				applied <- l
			}
		}
	}()
	var url string
	select {
	case url = <-addr:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not say where its metrics are")
	}
	select {
	case l := <-applied:
		if !strings.Contains(l, "stage 1 done (2.0 MiB)") {
			t.Errorf("applied: %s", l)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not apply the manifest")
	}
	if got, err := os.ReadFile(filepath.Join(store, "tenants", "team-a", "sha256", strings.TrimPrefix(o.Digest(), "sha256:"))); err != nil || !bytes.Equal(got, o.Body()) {
		t.Errorf("staged artifact: %v", err)
	}
	// The first scrape shows each new series at zero (metrics.ZeroFirst), the second its value.
	var body []byte
	for range 2 {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	for _, want := range []string{
		`coldtrace_cache_items_total{action="stage",result="done",tenant="team-a"} 1`,
		`coldtrace_cache_bytes_total{action="stage",tenant="team-a"} 2.097152e+06`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("agent after SIGTERM: %v", err)
	}
}

// TestWarmKilledResumes kills `coldtrace warm` in the middle of a download: nothing is
// published, and the next warm continues where the first stopped (the origin sends only
// the rest) and publishes the verified file.
func TestWarmKilledResumes(t *testing.T) {
	testenv.RequireRoot(t)
	ctrd := ctrtest.StartContainerd(t)
	const size = 8 << 20
	o := origin.StartHTTP(t, "/m/model.bin", origin.Random(size), 2<<20)
	dir := t.TempDir()
	m := manifest.New("llm")
	m.Spec.Runs = 1
	m.Spec.Artifacts = []manifest.Artifact{{Path: "/models/model.bin", Origin: o.URL(), Size: o.Size(), Digest: o.Digest()}}
	mpath := filepath.Join(dir, "llm.yaml")
	if err := m.WriteFile(mpath); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store")
	blob := filepath.Join(store, "tenants", "default", "sha256", strings.TrimPrefix(o.Digest(), "sha256:"))
	bin := build(t)
	warm := exec.Command(bin, "warm", "--containerd", ctrd.Address, "--store", store, "--origin-allow", "127.0.0.0/8", mpath)
	if err := warm.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); o.BodyBytes() < size/4; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the download did not start: %d bytes", o.BodyBytes())
		}
	}
	warm.Process.Kill()
	warm.Wait()
	sent := o.BodyBytes()
	if _, err := os.Stat(blob); err == nil {
		t.Fatal("a killed warm published its file")
	}
	// Flags after the manifest, as the README's command table orders them.
	b, err := exec.Command(bin, "warm", mpath, "--containerd", ctrd.Address, "--store", store, "--origin-allow", "127.0.0.0/8").CombinedOutput()
	if err != nil {
		t.Fatalf("warm again: %v\n%s", err, b)
	}
	reqs := o.Requests()
	last := reqs[len(reqs)-1]
	t.Logf("killed after %d bytes; the second warm asked %q and got %d bytes", sent, last.Range, last.Body)
	// The rest, from where the first warm's kept bytes end: at least a quarter was kept.
	if len(reqs) != 2 || last.Status != http.StatusPartialContent || last.Range != fmt.Sprintf("bytes=%d-", size-last.Body) || last.Body > size-size/4 {
		t.Errorf("requests %+v: want the second warm to fetch only the rest", reqs)
	}
	if got, err := os.ReadFile(blob); err != nil || !bytes.Equal(got, o.Body()) || !strings.Contains(string(b), "resumed") {
		t.Errorf("published file: %v; output:\n%s", err, b)
	}

	// The lookup by digest finds the tenant's copy, and only the tenant's.
	if b, err := exec.Command(bin, "lookup", "--store", store, "--verify", o.Digest()).Output(); err != nil || strings.TrimSpace(string(b)) != blob {
		t.Errorf("lookup: %v %q, want %s", err, b, blob)
	}
	if b, err := exec.Command(bin, "lookup", "--store", store, "--tenant", "team-b", o.Digest()).CombinedOutput(); err == nil {
		t.Errorf("lookup for another tenant found %q", b)
	}
}

// TestWarmOriginAllow: a bad --origin-allow is bad usage, and --help explains the flag.
func TestWarmOriginAllow(t *testing.T) {
	bin := build(t)
	dir := t.TempDir()
	b, err := exec.Command(bin, "warm", "--store", filepath.Join(dir, "store"), "--origin-allow", "localhost", filepath.Join(dir, "m.yaml")).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(b), "--origin-allow") {
		t.Errorf("warm --origin-allow localhost: %v, %q, want exit 2 naming the flag", err, b)
	}
	if b, _ := exec.Command(bin, "warm", "--help").CombinedOutput(); !strings.Contains(string(b), "--origin-allow") || !strings.Contains(string(b), "169.254.169.254") {
		t.Errorf("warm --help does not explain --origin-allow:\n%s", b)
	}
}
