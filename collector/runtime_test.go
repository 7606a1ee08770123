package collector

import (
	"maps"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/bpf"
	"github.com/coldtrace/coldtrace/trace"
)

func execEv(pid uint32, at time.Duration, name string, ino uint64) []byte {
	e := bpf.EventExec{H: hdr(bpf.EvExec, pid, at), Dev: 8, Ino: ino}
	cstr(e.Filename[:], name)
	cstr(e.Comm[:], name[1:])
	return bpf.Encode(&e)
}

// TestRuntimeProcesses replays a container's start as runc makes it: its init (pid 20,
// seen first by a read, as it joined the cgroup), which execs runc itself, forks a helper
// (21) that forks the container's init (22), which reads /proc/self/status and execs the
// entrypoint; that read's run arrives in a batch after the exec, as the kernel sends them.
// Only the entrypoint's files are in the trace, runc's processes are marked runtime, and
// the create phase (time before the first exec) ends at the entrypoint's exec.
func TestRuntimeProcesses(t *testing.T) {
	c := New(t0, Options{})
	c.SetInit(22)
	ms := time.Millisecond
	fork := func(parent, child uint32, at time.Duration) []byte {
		e := bpf.EventFork{H: hdr(bpf.EvFork, parent, at), Child: child}
		cstr(e.Comm[:], "runc:[0:PARENT]")
		return bpf.Encode(&e)
	}
	handle(t, c,
		readEv(20, 0, 3, 100, 0, 40),            // /proc/self/cgroup, opened before the cgroup
		execEv(20, 1*ms, "/proc/self/exe", 101), // runc runs itself
		openEv(20, 2*ms, atFDCWD, 4, "/etc/ld.so.cache", 102, sIFREG, 500),
		readEv(20, 2*ms, 4, 102, 0, 500),
		fork(20, 21, 3*ms), fork(21, 22, 4*ms),
		openEv(22, 5*ms, atFDCWD, 5, "/proc/self/status", 103, sIFREG, 0),
		execEv(22, 7*ms, "/app", 104),     // the entrypoint
		readEv(22, 6*ms, 5, 103, 0, 1300), // runc's read, sent after the exec
		openEv(22, 8*ms, atFDCWD, 3, "/data/model.bin", 105, sIFREG, 4096),
		readEv(22, 8*ms, 3, 105, 0, 4096),
		fork(22, 23, 9*ms), // a worker of the workload
		openEv(23, 10*ms, atFDCWD, 3, "/data/vocab", 106, sIFREG, 10),
		readEv(23, 10*ms, 3, 106, 0, 10),
	)
	tr := c.Trace(Meta{End: t0 + uint64(20*ms), Outcome: trace.OutcomeExited})
	files := map[string]int64{}
	for _, f := range tr.Files {
		files[f.Path] = f.BytesRead
	}
	if want := map[string]int64{"/app": 0, "/data/model.bin": 4096, "/data/vocab": 10}; !maps.Equal(files, want) {
		t.Errorf("files %v, want %v", files, want)
	}
	runtime := map[int]bool{}
	for _, p := range tr.Processes {
		runtime[p.PID] = p.Runtime
	}
	if want := map[int]bool{20: true, 21: true, 22: false, 23: false}; !maps.Equal(runtime, want) {
		t.Errorf("runtime processes %v, want %v", runtime, want)
	}
	if create, ok := tr.Phase(trace.PhaseCreate); !ok || create.End != trace.Duration(7*ms) {
		t.Errorf("create phase %+v, want it to end at the entrypoint's exec, 7ms", create)
	}
}

// TestNoInitAllWorkload: without SetInit (record -- CMD) every process is the workload's.
func TestNoInitAllWorkload(t *testing.T) {
	c := New(t0, Options{})
	handle(t, c, readEv(20, 0, 3, 100, 0, 40), execEv(20, time.Millisecond, "/bin/app", 101))
	tr := c.Trace(Meta{End: t0 + uint64(5*time.Millisecond), Outcome: trace.OutcomeExited})
	if len(tr.Files) != 2 || len(tr.Processes) != 1 || tr.Processes[0].Runtime {
		t.Errorf("files %+v, processes %+v", tr.Files, tr.Processes)
	}
}
