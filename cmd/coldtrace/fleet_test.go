package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/s3test"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
	"github.com/coldtrace/coldtrace/tracestore"
)

// Three nodes' real traces uploaded to a real SeaweedFS: advise on the bucket gives the
// same advice and the same manifest, byte for byte, as advise on the files. (Each
// example run has its own command line: --force takes them as one workload.)
func TestAdviseBucketEqualsFiles(t *testing.T) {
	testenv.RequireBPF(t)
	bin := build(t)
	srv := s3test.Start(t, "traces")
	dir := t.TempDir()
	var files []string
	for i := range 3 {
		f := filepath.Join(dir, fmt.Sprintf("run%d.json.gz", i))
		if out, err := exec.Command(bin, "record", "--example", "-o", f).CombinedOutput(); err != nil {
			t.Fatalf("record --example: %v\n%s", err, out)
		}
		tr, err := trace.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b, err := tracestore.OpenBucket(context.Background(), srv.URL("traces", "fleet"), fmt.Sprintf("node-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Put(context.Background(), "default/run", tr); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	advise := func(args ...string) (out, manifest []byte) {
		t.Helper()
		m := filepath.Join(t.TempDir(), "m.yaml")
		cmd := exec.Command(bin, append([]string{"advise", "--force", "--format", "json", "--seed", "7", "-o", m}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("advise %v: %v\n%s", args, err, stderr.Bytes())
		}
		manifest, err = os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		return out, manifest
	}
	fromFiles, mFiles := advise(files...)
	fromBucket, mBucket := advise(srv.URL("traces", "fleet"), "--since", "1h")
	if !bytes.Equal(fromFiles, fromBucket) {
		t.Errorf("advice differs:\nfiles:\n%s\nbucket:\n%s", fromFiles, fromBucket)
	}
	if !bytes.Equal(mFiles, mBucket) {
		t.Errorf("manifests differ:\nfiles:\n%s\nbucket:\n%s", mFiles, mBucket)
	}
	// A prefix with nothing under it is an error, not empty advice.
	if out, err := exec.Command(bin, "advise", srv.URL("traces", "elsewhere")).CombinedOutput(); err == nil {
		t.Errorf("advise on an empty prefix succeeded:\n%s", out)
	}
}

// The agent with --trace-store s3://: a container's trace lands in the bucket under the
// node's name and the image's repository, and leaves the spool.
func TestAgentTraceStoreBucket(t *testing.T) {
	testenv.RequireBPF(t)
	testenv.RequireBinary(t, "ctr")
	srv := s3test.Start(t, "traces")
	ctrd := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{})
	img, err := ctrtest.BuildImage([]v1.Layer{ctrtest.BusyboxLayer(t)}, []string{"/bin/sh", "-c"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Push(t, "test/busybox:v1", img)
	ctrd.TrustHTTP(t, reg.Host)
	ctrd.Ctr(t, "images", "pull", "--hosts-dir", ctrd.HostsDir, ref)

	data := t.TempDir()
	url := srv.URL("traces", "fleet")
	logPath := filepath.Join(t.TempDir(), "agent.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(build(t), "agent", "--containerd", ctrd.Address, "--namespace", "default", "--data-dir", data,
		"--trace-store", url, "--node-name", "node-x")
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("the agent's log:\n%s", b)
		}
	}()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if b, _ := os.ReadFile(logPath); bytes.Contains(b, []byte("watching containerd")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent did not start watching within a minute")
		}
	}
	ctrd.Ctr(t, "run", "-d", ref, "crash", "sh", "-c", "cat /bin/busybox > /dev/null; exit 3")

	b, err := tracestore.OpenBucket(context.Background(), url, "")
	if err != nil {
		t.Fatal(err)
	}
	var es []tracestore.Entry
	for deadline := time.Now().Add(time.Minute); len(es) == 0; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no trace in the bucket a minute after the container ran")
		}
		if es, err = b.List(context.Background(), tracestore.Filter{}); err != nil {
			t.Fatal(err)
		}
	}
	e := es[0]
	prefix := "fleet/workload/" + reg.Host + "/test/busybox/" + e.Workload.ImageDigest + "/"
	if len(es) != 1 || e.Outcome != trace.OutcomeExited || !strings.HasPrefix(e.Name, prefix) || !strings.HasSuffix(e.Name, "-node-x-crash.json.gz") {
		t.Errorf("bucket holds %+v, want the crash container's trace under %s...-node-x-crash.json.gz", es, prefix)
	}
	// The spool's directories may stay; its traces must not.
	filepath.WalkDir(filepath.Join(data, "spool"), func(p string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			t.Errorf("left in the spool: %s", p)
		}
		return nil
	})
}
