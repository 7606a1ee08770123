package watcher

import "github.com/coldtrace/coldtrace/trace"

// Stats is a snapshot of the watcher's state, for its metrics.
type Stats struct {
	// Recording counts the containers being recorded; Held the cgroups tracked from their
	// creation whose container no recording has claimed yet, and HeldEvents the events
	// kept for them.
	Recording, Held, HeldEvents int
	// Written and WriteFailures count the traces written and those that could not be.
	Written, WriteFailures uint64
	// LostEvents counts the events the kernel dropped because the ring buffer was full,
	// since the probes were loaded; LostErr says why it could not be read.
	LostEvents uint64
	LostErr    error
	// Probes are the kernel attach points as they stand now.
	Probes []trace.Probe
}

// Stats reads the watcher's state now.
func (a *Watcher) Stats() Stats {
	a.mu.Lock()
	s := Stats{Recording: len(a.byID), Held: len(a.early), HeldEvents: a.earlyEvents}
	a.mu.Unlock()
	s.Written, s.WriteFailures = a.written.Load(), a.writeFailed.Load()
	s.LostEvents, s.LostErr = a.probes.Lost()
	s.Probes = a.probes.Status()
	return s
}
