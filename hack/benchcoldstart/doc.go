// Package benchcoldstart is the reference benchmark of coldtrace (`make bench-coldstart`):
// the scale-out cold start of an LLM server, side by side under six strategies — nothing
// cached, the whole image pre-pulled, `coldtrace warm` before the start (with and without
// a budget, and started only seconds before the pod), and everything local and hot —
// on a new node for every run: a fresh containerd, an empty artifact store, the page cache
// dropped. Registry and model origin sit in a network namespace behind one veth pair
// shaped with tc, the node's one link.
//
// It is a test, TestBenchColdStart, because its harness (internal/ctrtest: a real
// containerd, a real registry) is built on testing.TB. Its flags size it; the defaults are
// tiny, so that CI runs it in a minute and it keeps working. See docs/benchmark.md.
package benchcoldstart
