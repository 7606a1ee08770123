package cache

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coldtrace/coldtrace/manifest"
)

// TestWatch applies a directory's manifests at start, again when one changes, and refuses
// one that claims another tenant than its directory.
func TestWatch(t *testing.T) {
	dir := t.TempDir()
	writeManifest(t, filepath.Join(dir, "team-a", "llm.yaml"), "llm", "")
	writeManifest(t, filepath.Join(dir, "team-a", "sneaky.yaml"), "sneaky", "team-b")
	metrics := NewMetrics(prometheus.NewRegistry())
	var mu sync.Mutex
	var applied []string
	apply := func(_ context.Context, tenant string, m *manifest.Manifest) (*Summary, error) {
		mu.Lock()
		defer mu.Unlock()
		applied = append(applied, tenant+"/"+m.Metadata.Name+"/"+m.Spec.Images[0].Ref)
		metrics.residentRatio(tenant, m.Metadata.Name, 1)
		return &Summary{Manifest: m.Metadata.Name, Tenant: tenant}, nil
	}
	got := func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(applied, ",")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var log strings.Builder
	go func() {
		done <- Watch(ctx, WatchOptions{Dir: dir, Poll: 20 * time.Millisecond, Every: time.Hour, Log: &syncWriter{w: &log}}, apply, metrics)
	}()
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for got() != want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got() != want {
			t.Fatalf("applied %q, want %q", got(), want)
		}
	}
	waitFor("team-a/llm/registry.example/app:v1")

	// The ConfigMap is updated: the manifest is applied again, once.
	m := manifest.New("llm")
	m.Spec.Images = []manifest.Image{{Ref: "registry.example/app:v2"}}
	if err := m.WriteFile(filepath.Join(dir, "team-a", "llm.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor("team-a/llm/registry.example/app:v1,team-a/llm/registry.example/app:v2")
	time.Sleep(100 * time.Millisecond)
	waitFor("team-a/llm/registry.example/app:v1,team-a/llm/registry.example/app:v2")

	// The manifest goes: so does its resident-ratio series.
	if n := testutil.CollectAndCount(metrics.resident); n != 1 {
		t.Errorf("%d resident-ratio series, want 1", n)
	}
	if err := os.Remove(filepath.Join(dir, "team-a", "llm.yaml")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); testutil.CollectAndCount(metrics.resident) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the series of a removed manifest stayed")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(metrics.refusals.WithLabelValues("team-a", ReasonTenant)); n != 1 {
		t.Errorf("refusals{team-a,tenant} = %v, want 1 (the sneaky manifest, once)", n)
	}
	if !strings.Contains(log.String(), `claims tenant "team-b"`) {
		t.Errorf("log %q does not say why sneaky.yaml was refused", log.String())
	}
	if err := Watch(context.Background(), WatchOptions{}, apply, nil); err == nil {
		t.Error("a watch of nothing started")
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
