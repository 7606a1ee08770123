package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

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
