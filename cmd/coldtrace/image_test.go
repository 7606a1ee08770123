package main

import (
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

// TestRecordImage records a busybox container that writes to its log, reads its own
// binary and exits.
func TestRecordImage(t *testing.T) {
	testenv.RequireBPF(t)
	bin := build(t)
	ctrd := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{})
	img, err := ctrtest.BuildImage([]v1.Layer{ctrtest.BusyboxLayer(t)}, []string{"/bin/sh"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "test/busybox:v1", img)

	out := filepath.Join(t.TempDir(), "busybox.json")
	log := filepath.Join(t.TempDir(), "container.log")
	b, err := exec.Command(bin, "record", "--image", ref, "--containerd", ctrd.Address, "--plain-http",
		"--fresh", "-o", out, "--container-log", log, "--",
		"sh", "-c", "echo out; echo err >&2; cat /bin/busybox > /dev/null").CombinedOutput()
	if err != nil {
		t.Fatalf("record --image: %v\n%s", err, b)
	}
	// Two streams, copied each on its own: in either order.
	if l, _ := os.ReadFile(log); string(l) != "out\nerr\n" && string(l) != "err\nout\n" {
		t.Errorf("container log %q, want the lines out and err", l)
	}
	tr, err := trace.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Outcome != trace.OutcomeExited || tr.Error != "" || tr.Workload.Image != ref || tr.Pull == nil || len(tr.Pull.Layers) != 1 {
		t.Fatalf("outcome %s (%s), workload %+v, pull %+v", tr.Outcome, tr.Error, tr.Workload, tr.Pull)
	}
	// sh is a link to busybox: one inode, named by its first use, the exec of /bin/sh.
	for _, f := range tr.Files {
		if f.Path == "/bin/sh" {
			if f.Layer == nil || f.Layer.Index != 0 || f.BytesRead != f.Size || f.MappedBytes == 0 {
				t.Errorf("/bin/sh: layer %+v, read %d of %d bytes, mapped %d", f.Layer, f.BytesRead, f.Size, f.MappedBytes)
			}
			return
		}
	}
	t.Errorf("/bin/sh is not in the trace:\n%s", b)
}

// TestRecordImageMissing asks for an image that the registry lacks: a clear error, exit
// status 1, and a failed trace that says so.
func TestRecordImageMissing(t *testing.T) {
	testenv.RequireBPF(t)
	bin := build(t)
	ctrd := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{})
	ref := reg.Host + "/test/absent:v1"
	out := filepath.Join(t.TempDir(), "absent.json")
	b, err := exec.Command(bin, "record", "--image", ref, "--containerd", ctrd.Address, "--plain-http", "--format", "none", "-o", out).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("exit %v, want status 1", err)
	}
	if !strings.Contains(string(b), "image not found in the registry") || !strings.Contains(string(b), ref) {
		t.Errorf("output %q, want an error naming %s and saying it is not found", b, ref)
	}
	tr, err := trace.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Outcome != trace.OutcomeFailed || !tr.Incomplete || !strings.Contains(tr.Error, "image not found in the registry") {
		t.Errorf("trace: outcome %s (%q), incomplete %v", tr.Outcome, tr.Error, tr.Incomplete)
	}
	t.Logf("%s", b)
}

func TestParseMounts(t *testing.T) {
	dir := t.TempDir()
	got, err := parseMounts([]string{dir + ":/cache", dir + ":/data:rw"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Destination != "/cache" || got[0].Options[1] != "ro" || got[1].Options[1] != "rw" || got[1].Source != dir {
		t.Errorf("parseMounts = %+v", got)
	}
	for _, bad := range []string{dir, dir + ":/x:rx", "rel:/x", dir + ":rel", dir + "/missing:/x", dir + ":/x:ro:extra"} {
		if _, err := parseMounts([]string{bad}); err == nil {
			t.Errorf("parseMounts(%q) accepted", bad)
		}
	}
}

// TestRecordImageInterrupted sends Ctrl-C in the middle of the pull: the pull stops, the
// partial trace is written, and the exit status is 2.
func TestRecordImageInterrupted(t *testing.T) {
	testenv.RequireBPF(t)
	bin := build(t)
	ctrd := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{Rate: 1 << 20})
	data := make([]byte, 16<<20)
	rand.Read(data)
	payload, err := ctrtest.StoredLayer(ctrtest.File{Path: "/data", Mode: 0o644, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	img, err := ctrtest.BuildImage([]v1.Layer{payload}, []string{"/bin/sh"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "test/slow:v1", img)

	out := filepath.Join(t.TempDir(), "interrupted.json")
	cmd := exec.Command(bin, "record", "--image", ref, "--containerd", ctrd.Address, "--plain-http", "--format", "none", "-o", out)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); reg.Total() < 1<<20; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the pull did not start")
		}
	}
	cmd.Process.Signal(syscall.SIGINT)
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Errorf("exit %v, want status 2 for an interrupted recording", err)
	}
	// The pull stopped: the registry sends nothing more.
	sent := reg.Total()
	time.Sleep(time.Second)
	if reg.Total() != sent || sent >= int64(len(data)) {
		t.Errorf("the registry sent %d bytes, then %d a second after the exit, of %d", sent, reg.Total(), len(data))
	}
	tr, err := trace.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Outcome != trace.OutcomeInterrupted || !tr.Incomplete || tr.Pull == nil || len(tr.Pull.Layers) != 1 {
		t.Fatalf("outcome %s (%q), incomplete %v, pull %+v", tr.Outcome, tr.Error, tr.Incomplete, tr.Pull)
	}
	if l := tr.Pull.Layers[0]; l.Bytes <= 0 || l.Bytes > sent || l.Fetched != 0 {
		t.Errorf("layer %+v; the registry sent %d bytes", l, sent)
	}
	t.Logf("interrupted after %d of %d bytes: %s", tr.Pull.Layers[0].Bytes, len(data), tr.Error)
}
