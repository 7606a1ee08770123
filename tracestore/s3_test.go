package tracestore

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coldtrace/coldtrace/internal/s3test"
	"github.com/coldtrace/coldtrace/trace"
)

func spooled(t *testing.T, url, node, dir string, maxBytes int64) *Spooled {
	t.Helper()
	b, err := OpenBucket(context.Background(), url, node)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSpooled(b, SpoolOptions{Dir: dir, MaxBytes: maxBytes, MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// drained waits until every spool is empty: all their traces are in the bucket.
func drained(t *testing.T, ss ...*Spooled) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for _, s := range ss {
		for {
			es, _ := s.spool.List(context.Background(), Filter{})
			if len(es) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d traces still spooled after 2 minutes", len(es))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Three agents (three node names, three spools) upload to a real SeaweedFS; the server is
// killed while they record and one agent restarts meanwhile: every trace reaches the
// bucket, under keys listable by workload and time, byte for byte what was recorded.
func TestSpooledSurvivesStoreOutage(t *testing.T) {
	srv := s3test.Start(t, "traces")
	url := srv.URL("traces", "fleet/traces")
	nodes := []string{"node-a", "node-b", "node-c"}
	dirs := map[string]string{}
	agents := map[string]*Spooled{}
	for _, n := range nodes {
		dirs[n] = t.TempDir()
		agents[n] = spooled(t, url, n, dirs[n], 0)
	}
	want := map[string]*trace.Trace{}
	record := func(round int) {
		for i, n := range nodes {
			for j := range 4 {
				id := fmt.Sprintf("r%d-%s-%d", round, n, j)
				tr := sample(id, "ns", "pod", "registry.example:5000/team/app:v1", t0.Add(time.Duration(round*100+i*10+j)*time.Second), 512)
				if _, err := agents[n].Put(context.Background(), "k8s.io/c"+id, tr); err != nil {
					t.Fatal(err)
				}
				want[id] = tr
			}
		}
	}
	record(0)
	drained(t, agents["node-a"], agents["node-b"], agents["node-c"])

	srv.Kill()
	record(1)
	// node-c's agent restarts while the store is down; its spool is all it has.
	agents["node-c"].Close()
	// The others try, fail, and back off.
	for deadline := time.Now().Add(30 * time.Second); testutil.ToFloat64(agents["node-a"].uploads.WithLabelValues("error")) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no failed upload counted 30 s into the store's outage")
		}
	}
	for _, n := range nodes {
		es, _ := agents[n].spool.List(context.Background(), Filter{})
		if len(es) != 4 {
			t.Errorf("%s: %d traces spooled while the store is down, want 4", n, len(es))
		}
	}
	agents["node-c"] = spooled(t, url, "node-c", dirs["node-c"], 0)
	srv.Start()
	srv.Ready("traces")
	record(2)
	drained(t, agents["node-a"], agents["node-b"], agents["node-c"])

	b, err := OpenBucket(context.Background(), url, "")
	if err != nil {
		t.Fatal(err)
	}
	es, err := b.List(context.Background(), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != len(want) {
		t.Fatalf("%d traces in the bucket, want %d", len(es), len(want))
	}
	for _, e := range es {
		tr := want[e.ID]
		if tr == nil {
			t.Fatalf("unexpected trace %s in the bucket", e.ID)
		}
		node := strings.Split(e.ID, "-")[1] + "-" + strings.Split(e.ID, "-")[2]
		wantKey := path.Join("fleet/traces/workload/registry.example:5000/team/app", tr.Workload.ImageDigest,
			tr.Start.UTC().Format(keyTime)+"-"+node+"-c"+e.ID+suffix)
		if e.Name != wantKey {
			t.Errorf("trace %s under %s, want %s", e.ID, e.Name, wantKey)
		}
		r, err := b.Open(context.Background(), e.ID)
		if err != nil {
			t.Fatal(err)
		}
		got, err := trace.Read(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got.Warnings[0] != tr.Warnings[0] {
			t.Errorf("trace %s: the bucket's copy differs from the recorded one", e.ID)
		}
	}

	// Time bounds are applied on the keys: round 2 alone.
	var round2 []string
	err = b.Each(context.Background(), Filter{Since: t0.Add(200 * time.Second)}, func(tr *trace.Trace) error {
		round2 = append(round2, tr.ID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(round2)
	if len(round2) != 12 || !strings.HasPrefix(round2[0], "r2-") || !strings.HasPrefix(round2[11], "r2-") {
		t.Errorf("since round 2: %v", round2)
	}
}

// With the store away, a spool over its bound drops its oldest traces and counts them.
func TestSpoolFullDropsOldest(t *testing.T) {
	s3test.Credentials(t)
	// A port that nothing listens on: every upload fails.
	s := spooled(t, "s3://traces/x?endpoint=http://127.0.0.1:1&path_style=true", "n", t.TempDir(), 10_000)
	for i := range 4 {
		id := fmt.Sprintf("t%d", i)
		if _, err := s.Put(context.Background(), "k8s.io/"+id, sample(id, "ns", "pod", "app:v1", t0.Add(time.Duration(i)*time.Second), 3000)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // distinct write times: the oldest is the first put
	}
	es, _ := s.spool.List(context.Background(), Filter{})
	var ids []string
	for _, e := range es {
		ids = append(ids, e.ID)
	}
	if !slices.Equal(ids, []string{"t2", "t3"}) && !slices.Equal(ids, []string{"t1", "t2", "t3"}) {
		t.Errorf("spool holds %v: want the newest that fit 10,000 bytes", ids)
	}
	if got := testutil.ToFloat64(s.spool.m.removed.WithLabelValues("size")); int(got) != 4-len(ids) {
		t.Errorf("%v traces counted as dropped, want %d", got, 4-len(ids))
	}
}
