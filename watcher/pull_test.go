package watcher

import (
	"math/rand/v2"
	"testing"

	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/trace"
)

// TestAgentPullPhase has ctr pull an image from a rate-limited registry while the agent
// runs, then runs a container of it: the container's trace begins at the pull, its
// layers' bytes are the registry's counts, and pull, unpack, create and init follow in
// order, and its registry connections, seen by the agent's socket samples, received the
// registry's bytes.
func TestAgentPullPhase(t *testing.T) {
	const rate = 8 << 20
	blob := make([]byte, 4<<20)
	rnd := rand.NewChaCha8([32]byte{7})
	rnd.Read(blob) // incompressible: the layer's size is the download's
	n := buildNode(t, ctrtest.RegistryOptions{Rate: rate}, ctrtest.File{Path: "/data/blob", Data: blob})
	n.startAgent(t)
	n.pull(t)
	id := "pulled"
	if err := n.run(id, "/data/a.txt"); err != nil {
		t.Fatal(err)
	}
	tr := n.trace(t, id)
	if tr.Outcome != trace.OutcomeReady {
		t.Fatalf("outcome %s (%s), warnings %q", tr.Outcome, tr.Error, tr.Warnings)
	}
	p := tr.Pull
	if p == nil {
		t.Fatalf("no pull in the trace; warnings %q", tr.Warnings)
	}
	if p.Ref != n.ref || p.Registry != n.reg.Host || p.Start != 0 {
		t.Errorf("pull of %s from %s starting at %v, want %s from %s at time zero", p.Ref, p.Registry, p.Start, n.ref, n.reg.Host)
	}
	if len(p.Layers) != len(n.layers) {
		t.Fatalf("%d layers, want %d", len(p.Layers), len(n.layers))
	}
	var bytes int64
	for i, l := range p.Layers {
		served := n.reg.Served(n.layers[i])
		if l.Digest != n.layers[i] || served == 0 || l.Bytes != served {
			t.Errorf("layer %d %s: %d bytes, the registry served %d for %s", i, l.Digest, l.Bytes, served, n.layers[i])
		}
		if l.Fetched <= 0 || l.Fetched > p.End {
			t.Errorf("layer %d fetched at %v, outside the pull [0, %v]", i, l.Fetched, p.End)
		}
		bytes += l.Bytes
		t.Logf("layer %d: %d bytes, fetched at %v, unpacked %v .. %v", i, l.Bytes, l.Fetched, l.UnpackStart, l.UnpackEnd)
	}
	phasesInOrder(t, tr, trace.PhasePull, trace.PhaseUnpack, trace.PhaseCreate, trace.PhaseInit)
	pull, _ := tr.Phase(trace.PhasePull)
	if pull.Bytes != bytes {
		t.Errorf("pull phase: %d bytes, its layers %d", pull.Bytes, bytes)
	}
	t.Logf("pulled %d bytes in %v (%.1f MiB/s; the registry's limit %d MiB/s); ready %v after the pull request",
		bytes, pull.Span(), float64(bytes)/pull.Span().Seconds()/(1<<20), rate>>20, tr.Duration)

	// ctr's connections to the registry, from the agent's socket samples: their bytes are
	// the registry's blob bytes plus HTTP framing.
	var conns int
	var recv int64
	for _, c := range tr.Conns {
		if c.Role != "registry" {
			continue
		}
		conns++
		recv += c.BytesRecv
		t.Logf("registry connection %s -> %s: open %v, close %v, %d bytes received (%v .. %v), %d sent, %d samples",
			c.Local, c.Remote, c.Open, c.Close, c.BytesRecv, c.FirstRecv, c.LastRecv, c.BytesSent, len(c.Samples))
		if c.Remote != n.reg.Host || c.Dir != "connect" || c.Open < 0 || c.LastRecv > p.End || len(c.Samples) == 0 {
			t.Errorf("registry connection %+v: want one to %s, within the pull [0, %v], with samples", c, n.reg.Host, p.End)
		}
	}
	total := n.reg.Total()
	t.Logf("%d registry connections received %d bytes; the registry served %d blob bytes", conns, recv, total)
	if conns == 0 || recv < total || recv > total+total/100+256<<10 {
		t.Errorf("%d registry connections received %d bytes, want the registry's %d blob bytes within 1%% + 256 KiB; warnings %q", conns, recv, total, tr.Warnings)
	}
}
