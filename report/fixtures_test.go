package report

import (
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/trace"
)

const (
	msec = time.Millisecond
	sec  = time.Second
	gib  = 1 << 30
	mib  = 1 << 20
)

// weirdPath is a file name a workload could really create; it must not break any format.
const weirdPath = "/tmp/we<ird> & \"q\"\x01\tname.bin"

// realistic is a vLLM container cold start on an 8-GPU host: pull, unpack, create, init,
// a model download, weights loading, CUDA init and compilation, every phase present.
func realistic() *trace.Trace {
	iv := func(s, e time.Duration) trace.Interval { return trace.Interval{Start: s, End: e} }
	shard := func(i int, first time.Duration) trace.File {
		return trace.File{
			Path: "/models/Qwen3-8B/model-0000" + string(rune('0'+i)) + "-of-00004.safetensors",
			Dev:  2049, Ino: uint64(1000 + i), Size: 4 * gib, Kind: trace.KindWeights,
			FirstOpen: first - 50*msec, Opens: 1, Mmaps: 1,
			Ranges: []trace.Range{
				{Off: 0, Len: 64 * 1024, First: first, Last: first, Via: trace.AccessRead},
				// Loader threads fault in both halves at once: the ranges overlap in time.
				{Off: 1 * gib, Len: 2 * gib, First: first + 100*msec, Last: first + 2*sec, Via: trace.AccessMmap},
				{Off: 3 * gib, Len: 1 * gib, First: first + 1*sec, Last: first + 3*sec, Via: trace.AccessMmap},
			},
			BytesRead: 64 * 1024, MappedBytes: 3 * gib, ReadTime: 2 * msec,
			CacheMisses: int64(i) * 100000, CacheMissAt: first + 100*msec,
		}
	}
	return &trace.Trace{
		ID: "01J9Z6ZK4Y",
		Workload: trace.Workload{
			Image:       "registry.example.internal/vllm/vllm-openai:v0.9.0",
			ImageDigest: "sha256:4f1c0de5a1b2",
			ContainerID: "c0ffee", Pod: "qwen3-8b-7d9f", Namespace: "serving", Container: "vllm",
		},
		Start:    time.Date(2026, 11, 28, 9, 30, 0, 0, time.UTC),
		Duration: 118 * sec,
		Outcome:  trace.OutcomeReady,
		Ready:    &trace.Ready{At: 118 * sec, Kind: "listen", PID: 4242, Addr: "0.0.0.0:8000"},
		Host: trace.Host{
			Hostname: "gpu-node-7", Kernel: "6.8.0-1015-aws", Arch: "x86_64", CPUs: 96, MemoryBytes: 1024 * gib,
			Links:  []trace.Link{{Name: "ens5", Mbps: 100000}},
			GPUs:   []trace.GPUDev{{Model: "NVIDIA H100 80GB HBM3", BusID: "0000:18:00.0"}, {Model: "NVIDIA H100 80GB HBM3"}},
			Driver: "550.54.15", Persistence: "enabled",
			Probes: []trace.Probe{
				{Name: "tracepoint/syscalls/sys_enter_openat", Attached: true},
				{Name: "fentry/vfs_read", Attached: false, Error: "operation not permitted", Loses: "per-file read latency"},
			},
		},
		Processes: []trace.Process{{PID: 4242, PPID: 1, Comm: "python3", Exe: "/usr/bin/python3.12", Fork: 55 * sec, Exec: 56*sec + 500*msec}},
		Files: []trace.File{
			shard(1, 95*sec), shard(2, 97*sec), shard(3, 99*sec), shard(4, 101*sec),
			{
				Path: "/usr/local/lib/python3.12/site-packages/torch/lib/libtorch_cuda.so", Size: 900 * mib, Kind: trace.KindLibrary,
				FirstOpen: 57 * sec, Opens: 1, Mmaps: 2,
				Ranges:      []trace.Range{{Off: 0, Len: 850 * mib, First: 57 * sec, Last: 59 * sec, Via: trace.AccessMmap}},
				MappedBytes: 850 * mib, CacheMisses: 217600,
			},
			{
				Path: "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15", Size: 30 * mib, Kind: trace.KindLibrary,
				FirstOpen: 68 * sec, Opens: 2,
				Ranges:    []trace.Range{{Off: 0, Len: 30 * mib, First: 68 * sec, Last: 68*sec + 40*msec, Via: trace.AccessRead}},
				BytesRead: 30 * mib, ReadTime: 40 * msec, CacheMisses: 7680,
			},
			{Path: "/dev/nvidia0", Kind: trace.KindDevice, FirstOpen: 68 * sec, Opens: 3},
			{
				Path: weirdPath, Size: 100, Kind: trace.KindOther, FirstOpen: 58 * sec, Opens: 1,
				Ranges:    []trace.Range{{Off: 0, Len: 100, First: 58 * sec, Last: 58 * sec, Via: trace.AccessRead}},
				BytesRead: 100, ReadTime: 10 * time.Microsecond,
			},
		},
		Conns: []trace.Conn{
			{PID: 812, Local: "10.0.0.7:40001", Remote: "10.0.0.5:443", Dir: "connect", Role: "registry",
				Open: 200 * msec, Close: 48 * sec, BytesRecv: 6 * gib, BytesSent: 2 * mib, FirstRecv: 300 * msec, LastRecv: 48 * sec,
				Samples: []trace.Sample{{At: 1 * sec, Recv: 100 * mib, Sent: mib}, {At: 24 * sec, Recv: 3 * gib, Sent: mib}, {At: 48 * sec, Recv: 6 * gib, Sent: 2 * mib}}},
			{PID: 812, Local: "10.0.0.7:40002", Remote: "10.0.0.5:443", Dir: "connect", Role: "registry",
				Open: 250 * msec, Close: 30 * sec, BytesRecv: 3 * gib, BytesSent: mib, FirstRecv: 400 * msec, LastRecv: 30 * sec},
			{PID: 4242, Local: "172.17.0.2:50000", Remote: "18.164.52.1:443", Dir: "connect", Role: "peer",
				Open: 60 * sec, Close: 95 * sec, BytesRecv: 8 * gib, BytesSent: 40 * 1024, FirstRecv: 61 * sec, LastRecv: 95 * sec,
				Samples: []trace.Sample{{At: 61 * sec, Recv: mib, Sent: 40 * 1024}, {At: 80 * sec, Recv: 4 * gib, Sent: 40 * 1024}}},
			{PID: 4242, Local: "172.17.0.2:50001", Remote: "18.164.52.1:443", Dir: "connect", Role: "peer",
				Open: 60 * sec, Close: 94 * sec, BytesRecv: 8 * gib, BytesSent: 40 * 1024, FirstRecv: 61 * sec, LastRecv: 94 * sec},
			{PID: 4242, Local: "172.17.0.2:8000", Remote: "10.0.0.9:51234", Dir: "accept", Role: "peer",
				Open: 117 * sec, BytesRecv: 300, BytesSent: 0},
		},
		GPU: trace.GPU{
			Opens: []trace.DeviceOpen{
				{Path: "/dev/nvidiactl", PID: 4242, At: 68*sec + 50*msec},
				{Path: "/dev/nvidia0", PID: 4242, At: 68*sec + 60*msec},
				{Path: "/dev/nvidia-uvm", PID: 4242, At: 68*sec + 70*msec},
				{Path: "/dev/nvidia0", PID: 4242, At: 100 * sec},
			},
			Ioctls: []trace.IoctlStat{
				{Device: "/dev/nvidiactl", Request: 0xc020462a, Count: 1520, Total: 1800 * msec, First: 68 * sec, Last: 75 * sec},
				{Device: "/dev/nvidiactl", Request: 0xc030462b, Count: 40, Total: 200 * msec, First: 70 * sec, Last: 100 * sec},
				{Device: "/dev/nvidia0", Request: 0xc00c4622, Count: 310, Total: 900 * msec, First: 69 * sec, Last: 106 * sec},
				{Device: "/dev/nvidia-uvm", Request: 0x30000001, Count: 12, Total: 30 * msec, First: 68*sec + 80*msec, Last: 101 * sec},
			},
			Mmaps: 24,
			Calls: []trace.Call{
				{Name: "cuInit", PID: 4242, TID: 4242, Start: 68 * sec, End: 71*sec + 300*msec},
				{Name: "cuDevicePrimaryCtxRetain", PID: 4242, TID: 4242, Start: 100 * sec, End: 101*sec + 900*msec},
				{Name: "cuDevicePrimaryCtxRetain", PID: 4242, TID: 4250, Start: 104 * sec, End: 105 * sec},
			},
			Library: "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15",
		},
		Pull: &trace.Pull{
			Ref: "registry.example.internal/vllm/vllm-openai:v0.9.0", Registry: "registry.example.internal",
			Start: 200 * msec, End: 48 * sec,
			Layers: []trace.Layer{
				{Index: 0, Digest: "sha256:aaa", Size: 6 * gib, Bytes: 6 * gib, Fetched: 48 * sec, UnpackStart: 48 * sec, UnpackEnd: 55 * sec},
				{Index: 1, Digest: "sha256:bbb", Size: 3 * gib, Bytes: 3 * gib, Fetched: 30 * sec, UnpackStart: 30 * sec, UnpackEnd: 40 * sec},
			},
			Contended: []string{"registry.example.internal/monitoring/dcgm-exporter:3.3"},
		},
		Phases: []trace.Phase{
			// Deliberately out of order: the report sorts phases itself.
			{Name: trace.PhaseCompute, Start: 106 * sec, End: 118 * sec, Busy: 12 * sec, Critical: 12 * sec, Activity: []trace.Interval{iv(106*sec, 118*sec)}},
			{Name: trace.PhasePull, Start: 200 * msec, End: 48 * sec, Busy: 46*sec + 800*msec, Critical: 48 * sec, Bytes: 9 * gib,
				Activity: []trace.Interval{iv(200*msec, 30*sec), iv(31*sec, 48*sec)}},
			{Name: trace.PhaseUnpack, Start: 5 * sec, End: 55 * sec, Busy: 35 * sec, Critical: 7 * sec, Bytes: 9 * gib,
				Activity: []trace.Interval{iv(5*sec, 20*sec), iv(25*sec, 40*sec), iv(50*sec, 55*sec)}},
			{Name: trace.PhaseCreate, Start: 55 * sec, End: 56*sec + 500*msec, Busy: 1500 * msec, Critical: 1500 * msec},
			{Name: trace.PhaseInit, Start: 56*sec + 500*msec, End: 68 * sec, Busy: 11*sec + 500*msec, Critical: 3*sec + 500*msec, Bytes: 880 * mib,
				Activity: []trace.Interval{iv(56*sec+500*msec, 68*sec)}},
			{Name: trace.PhaseFetch, Start: 60 * sec, End: 95 * sec, Busy: 35 * sec, Critical: 35 * sec, Bytes: 16 * gib,
				Activity: []trace.Interval{iv(60*sec, 95*sec)}},
			{Name: trace.PhaseLoad, Start: 95 * sec, End: 104 * sec, Busy: 9 * sec, Critical: 9 * sec, Bytes: 12 * gib,
				Activity: []trace.Interval{iv(95*sec, 104*sec)}},
			{Name: trace.PhaseGPU, Start: 68 * sec, End: 106 * sec, Busy: 9*sec + 300*msec, Critical: 2 * sec,
				Activity: []trace.Interval{iv(68*sec, 71*sec+300*msec), iv(100*sec, 106*sec)}},
		},
		Critical: []trace.Segment{
			{Phase: trace.PhasePull, Start: 0, End: 48 * sec},
			{Phase: trace.PhaseUnpack, Start: 48 * sec, End: 55 * sec},
			{Phase: trace.PhaseCreate, Start: 55 * sec, End: 56*sec + 500*msec},
			{Phase: trace.PhaseInit, Start: 56*sec + 500*msec, End: 60 * sec},
			{Phase: trace.PhaseFetch, Start: 60 * sec, End: 95 * sec},
			{Phase: trace.PhaseLoad, Start: 95 * sec, End: 104 * sec},
			{Phase: trace.PhaseGPU, Start: 104 * sec, End: 106 * sec},
			{Phase: trace.PhaseCompute, Start: 106 * sec, End: 118 * sec},
		},
	}
}

// empty is a command that exited at once: no phases, no files, nothing to draw.
func empty() *trace.Trace {
	return &trace.Trace{
		ID:       "empty",
		Workload: trace.Workload{Command: []string{"./serve", "--port", "8080"}},
		Duration: 3 * msec,
		Outcome:  trace.OutcomeExited,
		Error:    "the command exited with status 127 before it listened",
	}
}

// incomplete timed out with lost events and a probe missing.
func incomplete() *trace.Trace {
	return &trace.Trace{
		ID:         "incomplete",
		Workload:   trace.Workload{Command: []string{"python3", "serve.py"}},
		Duration:   30 * sec,
		Outcome:    trace.OutcomeTimeout,
		Error:      "not ready after --timeout 30s",
		Incomplete: true,
		LostEvents: 1234,
		Warnings:   []string{"ring buffer full: 1234 events lost between 12 s and 14 s"},
		Host: trace.Host{Probes: []trace.Probe{
			{Name: "tracepoint/exceptions/page_fault_user", Attached: false, Error: "no such tracepoint", Loses: "mmapped reads of weights"},
		}},
		Phases: []trace.Phase{
			{Name: trace.PhaseInit, Start: 0, End: 10 * sec, Busy: 10 * sec, Critical: 10 * sec},
			{Name: trace.PhaseLoad, Start: 10 * sec, End: 30 * sec, Busy: 20 * sec, Critical: 20 * sec, Bytes: 2 * gib},
		},
		Critical: []trace.Segment{
			{Phase: trace.PhaseInit, Start: 0, End: 10 * sec},
			{Phase: trace.PhaseLoad, Start: 10 * sec, End: 30 * sec},
		},
	}
}

// fixtures are the hand-built traces every format is tested on.
func fixtures() map[string]*trace.Trace {
	return map[string]*trace.Trace{"realistic": realistic(), "empty": empty(), "incomplete": incomplete()}
}

// The fixtures must be valid traces, or the tests would check rendering of impossible input.
func TestFixturesValid(t *testing.T) {
	for name, tr := range fixtures() {
		tr.Format, tr.Version = trace.Format, trace.Version
		if err := tr.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
