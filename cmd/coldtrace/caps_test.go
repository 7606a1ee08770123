package main

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coldtrace/coldtrace/caps"
	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

// withCaps runs a command as uid 0 with exactly the capabilities named (setpriv bounds
// what the exec grants root: its permitted and effective sets become these).
func withCaps(names []string, name string, args ...string) *exec.Cmd {
	set := "-all"
	for _, n := range names {
		set += ",+" + strings.ToLower(n)
	}
	return exec.Command("setpriv", append([]string{"--inh-caps=" + set, "--ambient-caps=" + set, "--bounding-set=" + set, "--", name}, args...)...)
}

func agentCapNames() []string {
	var out []string
	for _, c := range caps.Agent {
		out = append(out, c.Name)
	}
	return out
}

// TestAgentRefusesMissingCapability: without any one of its capabilities the agent
// names it and exits before it loads anything.
func TestAgentRefusesMissingCapability(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "setpriv")
	bin := build(t)
	all := agentCapNames()
	for i, c := range all {
		less := append(append([]string{}, all[:i]...), all[i+1:]...)
		out, err := withCaps(less, bin, "agent", "--data-dir", t.TempDir(), "--containerd", "/nonexistent.sock").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "CAP_"+c+": ") || strings.Count(string(out), "CAP_") != 1 {
			t.Errorf("without CAP_%s: %v, %s", c, err, out)
		}
	}
}

// TestAgentLeastCapabilities runs the agent as uid 0 with exactly caps.Agent and checks
// what each capability is there for, from ground truth outside the agent: an image pulled
// from a rate-limited registry while it watches (the pull, and the registry connections'
// bytes against the registry's own counts: BPF, PERFMON, and no NET_ADMIN), and a
// container that copies a known 2 MiB file into a 0700 directory of uid 1000 in its
// writable layer with dd (busybox cp and cat use sendfile, which is no write to the
// probes) (the copy's layer and digest: DAC_READ_SEARCH, SYS_PTRACE).
func TestAgentLeastCapabilities(t *testing.T) {
	testenv.RequireBPF(t)
	testenv.RequireBinary(t, "setpriv")
	testenv.RequireBinary(t, "ctr")
	ctrd := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{Rate: 8 << 20})
	blob := make([]byte, 2<<20)
	rand.NewChaCha8([32]byte{13}).Read(blob)
	data, err := ctrtest.StoredLayer(ctrtest.File{Path: "/data/blob", Data: blob})
	if err != nil {
		t.Fatal(err)
	}
	img, err := ctrtest.BuildImage([]v1.Layer{ctrtest.BusyboxLayer(t), data}, []string{"/bin/sh", "-c"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "test/caps:v1", img)
	ctrd.TrustHTTP(t, reg.Host)

	dir := t.TempDir()
	agent := startAgent(t, withCaps(agentCapNames(), build(t), "agent", "--containerd", ctrd.Address,
		"--namespace", "default", "--data-dir", dir, "--hosts-dir", ctrd.HostsDir))
	agent.waitLine(t, "watching containerd")
	ctrd.Ctr(t, "images", "pull", "--hosts-dir", ctrd.HostsDir, ref)
	ctrd.Ctr(t, "run", "-d", ref, "least", "sh", "-c",
		"mkdir -m 700 /s && dd if=/data/blob of=/s/copy bs=64k 2>/dev/null && chown -R 1000 /s && exec httpd -f -p 8080")
	agent.waitLine(t, "container least: ready")
	tr, err := trace.ReadFile(filepath.Join(dir, "traces", "default", "least.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	if tr.Outcome != trace.OutcomeReady || tr.Incomplete {
		t.Errorf("outcome %s (%s), incomplete %v, warnings %q", tr.Outcome, tr.Error, tr.Incomplete, tr.Warnings)
	}
	if tr.Pull == nil || tr.Pull.Ref != ref {
		t.Fatalf("pull %+v, want %s's; warnings %q", tr.Pull, ref, tr.Warnings)
	}
	var recv int64
	for _, c := range tr.Conns {
		if c.Role == "registry" {
			recv += c.BytesRecv
		}
	}
	// The registry connections carry the blobs plus HTTP framing (see TestAgentPullPhase).
	if total := reg.Total(); recv < total || recv > total+total/100+256<<10 {
		t.Errorf("registry connections received %d bytes; the registry served %d", recv, total)
	}
	var cp *trace.File
	for i := range tr.Files {
		if tr.Files[i].Path == "/s/copy" {
			cp = &tr.Files[i]
		}
	}
	want := fmt.Sprintf("sha256:%x", sha256.Sum256(blob))
	if cp == nil || cp.Layer == nil || cp.Layer.Where != "rw" || cp.Digest != want {
		t.Errorf("/s/copy: %+v, want in the writable layer with digest %s; warnings %q", cp, want, tr.Warnings)
	}
}
