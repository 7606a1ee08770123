// Package s3test runs a real S3-compatible server for the tests: SeaweedFS, the weed tool
// of the module hack/seaweedfs, on loopback ports under a temporary directory, which a
// test may kill and start again on the same data.
package s3test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/coldtrace/coldtrace/internal/testenv"
)

// Server is a SeaweedFS server (master, volume, filer and S3 gateway in one process).
type Server struct {
	Endpoint string // the S3 gateway's base URL
	t        testing.TB
	bin, dir string
	args     []string
	cmd      *exec.Cmd
	done     chan struct{}
}

// Credentials are what the tests sign with; the server, configured with no identity,
// accepts any.
func Credentials(t testing.TB) {
	t.Setenv("AWS_ACCESS_KEY_ID", "coldtrace")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "coldtrace-secret")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_REGION", "us-east-1")
}

// Start runs a server until the test ends, with an empty bucket named bucket, and sets the
// AWS credentials in the test's environment.
func Start(t testing.TB, bucket string) *Server {
	t.Helper()
	Credentials(t)
	s := &Server{t: t, bin: testenv.GoTool(t, "seaweedfs", "weed"), dir: t.TempDir()}
	port := func(flag string) string { return "-" + flag + "=" + strconv.Itoa(testenv.FreePort(t)) }
	s3port := testenv.FreePort(t)
	s.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", s3port)
	s.args = []string{"server", "-dir=" + s.dir, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		port("master.port"), port("master.port.grpc"), port("volume.port"), port("volume.port.grpc"),
		"-filer", port("filer.port"), port("filer.port.grpc"), "-filer.localSocket=" + filepath.Join(s.dir, "filer.sock"),
		"-s3", "-s3.port=" + strconv.Itoa(s3port), port("s3.port.grpc"), port("iam.port"),
		"-master.volumeSizeLimitMB=64", "-volume.max=20", "-master.telemetry=false"}
	s.Start()
	t.Cleanup(s.Kill)
	c := s.Client()
	s.until(func(ctx context.Context) error {
		_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket})
		if err != nil && strings.Contains(err.Error(), "BucketAlreadyExists") {
			err = nil
		}
		return err
	})
	s.Ready(bucket)
	return s
}

// Start starts the server (again, on the same data and ports).
func (s *Server) Start() {
	s.t.Helper()
	logf, err := os.OpenFile(filepath.Join(s.dir, "weed.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	s.cmd = exec.Command(s.bin, s.args...)
	s.cmd.Dir, s.cmd.Stdout, s.cmd.Stderr = s.dir, logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.done = make(chan struct{})
	go func() { s.cmd.Wait(); logf.Close(); close(s.done) }()
}

// Kill kills the server at once, as a crash would.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
	if s.t.Failed() {
		b, _ := os.ReadFile(filepath.Join(s.dir, "weed.log"))
		s.t.Logf("weed's log (tail):\n%s", b[max(0, len(b)-4000):])
	}
}

// Ready waits until an object can be written to bucket and read back.
func (s *Server) Ready(bucket string) {
	c := s.Client()
	key := ".ready"
	s.until(func(ctx context.Context) error {
		_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader([]byte("ok"))})
		if err == nil {
			_, err = c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: &key})
		}
		return err
	})
}

// until retries f for up to two minutes: the server's parts (a volume server joining its
// master) take seconds to come up on a busy machine.
func (s *Server) until(f func(context.Context) error) {
	s.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("seaweedfs at %s did not come up: %v", s.Endpoint, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Client is an S3 client of the server, for the tests' own look at the bucket.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(s.Endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("coldtrace", "coldtrace-secret", "")})
}

// URL is the trace-store URL of bucket/prefix on this server.
func (s *Server) URL(bucket, prefix string) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=%s&path_style=true", bucket, prefix, s.Endpoint)
}
