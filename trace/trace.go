// Package trace holds the cold-start trace: the data model that the collector writes and that
// report, advisor and diff read, and its file format (see FORMAT.md).
//
// Every instant in a trace is a Duration since time zero (Trace.Start), the earliest of the
// command start, the pull request and the container create request. Durations marshal as
// integer nanoseconds, which keeps large traces compact and exact.
package trace

import (
	"time"
)

// Format is the value of the "format" field of every trace file this package writes.
// A reader accepts files whose format is Format and whose version is at most Version.
const (
	Format  = "coldtrace.trace"
	Version = 1
)

// Outcome says how a recording ended.
type Outcome string

const (
	OutcomeReady       Outcome = "ready"       // the workload became ready
	OutcomeExited      Outcome = "exited"      // the workload exited before it was ready
	OutcomeTimeout     Outcome = "timeout"     // --timeout passed before ready
	OutcomeInterrupted Outcome = "interrupted" // the user stopped the recording
	OutcomeFailed      Outcome = "failed"      // the start failed (pull error, crash during create)
)

// Trace is one recorded cold start.
type Trace struct {
	Format  string `json:"format"`
	Version int    `json:"version"`

	ID       string    `json:"id"`
	Workload Workload  `json:"workload"`
	Start    time.Time `json:"start"`
	// MonotonicStart is time zero on the host's CLOCK_MONOTONIC, in nanoseconds, so that
	// instants in the trace can be matched with other monotonic timestamps of the same boot.
	MonotonicStart int64 `json:"monotonic_start_ns"`
	// Duration is how long the recording covered: to ready, exit, timeout or interruption.
	Duration Duration `json:"duration_ns"`
	Outcome  Outcome  `json:"outcome"`
	// Ready is the readiness signal; nil when the workload never became ready.
	Ready *Ready `json:"ready,omitempty"`
	// Error explains a failed or abnormal end in words a user can act on.
	Error string `json:"error,omitempty"`

	// Incomplete is set when the trace misses part of what happened: events lost in the
	// ring buffer, a recording stopped early, probes that could not attach.
	Incomplete bool     `json:"incomplete"`
	Warnings   []string `json:"warnings,omitempty"`
	LostEvents uint64   `json:"lost_events"`

	Host      Host      `json:"host"`
	Processes []Process `json:"processes"`
	Files     []File    `json:"files"`
	Conns     []Conn    `json:"conns"`
	GPU       GPU       `json:"gpu"`
	Pull      *Pull     `json:"pull,omitempty"`
	Phases    []Phase   `json:"phases"`
	Critical  []Segment `json:"critical_path"`
}

// Duration is a time.Duration that marshals as integer nanoseconds.
type Duration = time.Duration

// Workload identifies what was started.
type Workload struct {
	Command     []string `json:"command,omitempty"`
	Image       string   `json:"image,omitempty"`
	ImageDigest string   `json:"image_digest,omitempty"`
	ContainerID string   `json:"container_id,omitempty"`
	Pod         string   `json:"pod,omitempty"`
	Namespace   string   `json:"namespace,omitempty"`
	Container   string   `json:"container,omitempty"`
	// RestartCount is how many times the kubelet had started the pod's container before
	// this cold start (its CRI attempt): each restart is a cold start of its own.
	RestartCount int               `json:"restart_count,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
}

// Key names the workload for grouping traces of the same thing: the image digest (or
// reference) for containers, the command line otherwise.
func (w Workload) Key() string {
	switch {
	case w.ImageDigest != "":
		return w.ImageDigest
	case w.Image != "":
		return w.Image
	}
	key := ""
	for i, a := range w.Command {
		if i > 0 {
			key += " "
		}
		key += a
	}
	return key
}

// Ready is the event that ended the cold start.
type Ready struct {
	At   Duration `json:"at_ns"`
	Kind string   `json:"kind"` // "listen"
	PID  int      `json:"pid"`
	Addr string   `json:"addr,omitempty"` // the listening address, "0.0.0.0:8080"
}

// Host holds the facts about the machine that the advisor judges phases against.
type Host struct {
	Hostname    string   `json:"hostname"`
	Kernel      string   `json:"kernel"`
	Arch        string   `json:"arch"`
	CPUs        int      `json:"cpus"`
	MemoryBytes uint64   `json:"memory_bytes"`
	Disks       []Disk   `json:"disks,omitempty"`
	Links       []Link   `json:"links,omitempty"`
	GPUs        []GPUDev `json:"gpus,omitempty"`
	// Driver is the accelerator driver version where one is loaded.
	Driver      string  `json:"driver,omitempty"`
	Persistence string  `json:"persistence_mode,omitempty"` // "enabled", "disabled" or empty
	Probes      []Probe `json:"probes"`
}

// Disk is a block device of the host.
type Disk struct {
	Name       string `json:"name"`
	SizeBytes  uint64 `json:"size_bytes"`
	Rotational bool   `json:"rotational"`
}

// Link is a network interface with its speed where the driver reports one.
type Link struct {
	Name string `json:"name"`
	Mbps int    `json:"mbps,omitempty"`
}

// GPUDev is one accelerator of the host.
type GPUDev struct {
	Model string `json:"model"`
	BusID string `json:"bus_id,omitempty"`
}

// Probe says whether one kernel attach point was in place, and what is lost without it.
type Probe struct {
	Name     string `json:"name"`
	Attached bool   `json:"attached"`
	Error    string `json:"error,omitempty"`
	Loses    string `json:"loses,omitempty"`
}

// Process is one process of the traced tree or container.
type Process struct {
	PID      int      `json:"pid"`
	PPID     int      `json:"ppid"`
	Comm     string   `json:"comm"`
	Exe      string   `json:"exe,omitempty"` // the last exec'd file
	Cgroup   uint64   `json:"cgroup,omitempty"`
	Fork     Duration `json:"fork_ns"`
	Exec     Duration `json:"exec_ns,omitempty"`
	Exit     Duration `json:"exit_ns,omitempty"` // zero when it outlived the recording
	ExitCode int      `json:"exit_code,omitempty"`
	// Runtime marks a container runtime's process (runc's init before it execs the
	// entrypoint, and its helpers): its time is the create phase's, and the files it
	// touches are not in Files.
	Runtime bool `json:"runtime,omitempty"`
}

// FileKind classifies a file for the phase model.
type FileKind string

const (
	KindWeights FileKind = "weights" // model weights by extension (safetensors, gguf, ...)
	KindLibrary FileKind = "library" // shared objects and interpreter modules
	KindDevice  FileKind = "device"  // accelerator device nodes
	KindOther   FileKind = "other"
)

// File is everything the workload did with one file (one inode).
type File struct {
	Path string   `json:"path"`
	Dev  uint64   `json:"dev"`
	Ino  uint64   `json:"ino"`
	Size int64    `json:"size"`
	Kind FileKind `json:"kind"`
	// Layer says which image layer provides the file, for container traces.
	Layer *LayerRef `json:"layer,omitempty"`

	FirstOpen Duration `json:"first_open_ns"`
	Opens     int      `json:"opens"`
	// Ranges are the byte ranges read, coalesced and sorted by offset; each keeps the time
	// of its first access.
	Ranges []Range `json:"ranges,omitempty"`
	// BytesRead counts bytes returned by read-family syscalls (re-reads included);
	// MappedBytes counts bytes of the file brought into the address space by page faults.
	BytesRead   int64 `json:"bytes_read"`
	MappedBytes int64 `json:"mapped_bytes"`
	// ReadTime is the time spent inside read-family syscalls on this file.
	ReadTime Duration `json:"read_time_ns"`
	// CacheMisses counts pages of the file added to the page cache (read from storage)
	// during the recording; CacheMissAt is when the first one happened.
	CacheMisses int64    `json:"cache_miss_pages"`
	CacheMissAt Duration `json:"cache_miss_ns,omitempty"`
	Mmaps       int      `json:"mmaps,omitempty"`

	// WrittenBytes counts bytes the traced processes wrote to the file through
	// write-family syscalls (rewrites included).
	WrittenBytes int64 `json:"written_bytes,omitempty"`
	// Digest is the sha256 of the file's content at the end of the recording ("sha256:"
	// and 64 hex digits), computed for files written during it that may be downloaded
	// artifacts; empty when not computed.
	Digest string `json:"digest,omitempty"`
	// Origin is where the written bytes came from: the URL of the plain-HTTP request on
	// the connection that fed the writes, else that connection's remote address.
	Origin string `json:"origin,omitempty"`
}

// MinArtifactSize is the size from which a file written during the recording is digested
// as a possible downloaded artifact (with kind weights or other): smaller files are logs,
// locks and caches. It is part of the format: FORMAT.md's digest of written files.
const MinArtifactSize = 1 << 20

// LayerRef ties a file to an image layer.
type LayerRef struct {
	Index  int    `json:"index"`
	DiffID string `json:"diff_id,omitempty"`
	Digest string `json:"digest,omitempty"`
	// Where is "image" for a lower layer, "rw" for the container's writable layer,
	// "volume" for a mount that is not part of the image.
	Where string `json:"where"`
	// Path is the file's path in the container with every symbolic link resolved, where
	// it differs from the File's (a path opened through a link); it names the entry of
	// the layer that holds the bytes.
	Path string `json:"path,omitempty"`
}

// Access says how a range was read.
type Access string

const (
	AccessRead Access = "read" // read-family syscall
	AccessMmap Access = "mmap" // page faults on a file mapping
)

// Range is one coalesced byte range of a file.
type Range struct {
	Off   int64    `json:"off"`
	Len   int64    `json:"len"`
	First Duration `json:"first_ns"`
	Last  Duration `json:"last_ns"`
	Via   Access   `json:"via"`
}

// End is the offset just past the range.
func (r Range) End() int64 { return r.Off + r.Len }

// Conn is one TCP connection of the workload.
type Conn struct {
	PID    int      `json:"pid"`
	Local  string   `json:"local"`
	Remote string   `json:"remote"`
	Dir    string   `json:"dir"` // "connect" or "accept"
	Open   Duration `json:"open_ns"`
	Close  Duration `json:"close_ns,omitempty"`
	// Role is "registry" for image pulls, "peer" otherwise (model downloads and the like).
	Role string `json:"role"`
	// URL is the first request's URL when the connection spoke plain HTTP.
	URL       string   `json:"url,omitempty"`
	BytesRecv int64    `json:"bytes_recv"`
	BytesSent int64    `json:"bytes_sent"`
	FirstRecv Duration `json:"first_recv_ns,omitempty"`
	LastRecv  Duration `json:"last_recv_ns,omitempty"`
	// Samples are cumulative byte counts over time, at most one per millisecond.
	Samples []Sample `json:"samples,omitempty"`
}

// Sample is a cumulative byte count at an instant.
type Sample struct {
	At   Duration `json:"t"`
	Recv int64    `json:"r"`
	Sent int64    `json:"s"`
}

// GPU is the accelerator initialisation timeline.
type GPU struct {
	Opens  []DeviceOpen `json:"opens,omitempty"`
	Ioctls []IoctlStat  `json:"ioctls,omitempty"`
	Mmaps  int          `json:"mmaps,omitempty"`
	Calls  []Call       `json:"calls,omitempty"`
	// Library is the libcuda that the uprobes attached to, when one was seen.
	Library string `json:"library,omitempty"`
}

// DeviceOpen is one open of an accelerator device node.
type DeviceOpen struct {
	Path string   `json:"path"`
	PID  int      `json:"pid"`
	At   Duration `json:"at_ns"`
}

// IoctlStat aggregates the ioctls of one request code on one device.
type IoctlStat struct {
	Device  string   `json:"device"`
	Request uint64   `json:"request"`
	Count   int64    `json:"count"`
	Total   Duration `json:"total_ns"`
	First   Duration `json:"first_ns"`
	Last    Duration `json:"last_ns"`
}

// Call is one call into the accelerator's user-space driver (cuInit and friends).
type Call struct {
	Name   string   `json:"name"`
	PID    int      `json:"pid"`
	TID    int      `json:"tid"`
	Start  Duration `json:"start_ns"`
	End    Duration `json:"end_ns"`
	Return int64    `json:"ret"`
}

// Pull describes the image pull of a container cold start.
type Pull struct {
	Ref      string   `json:"ref"`
	Registry string   `json:"registry"`
	Start    Duration `json:"start_ns"`
	End      Duration `json:"end_ns"`
	Layers   []Layer  `json:"layers"`
	// Contended names the other pulls that overlapped this one on the node; Overlaps
	// tells when and how much each of them downloaded meanwhile.
	Contended []string      `json:"contended,omitempty"`
	Overlaps  []PullOverlap `json:"overlaps,omitempty"`
}

// PullOverlap is another pull on the node that downloaded while this pull did, as
// containerd's content ingests showed it (polled every 100 ms).
type PullOverlap struct {
	// Ref is the other image: its reference when containerd had the image by the end of
	// the recording, else, while that pull still ran, "host/repo@sha256:..." from its
	// manifest's labels (the registry's host without its port).
	Ref       string `json:"ref,omitempty"`
	Namespace string `json:"namespace"` // the containerd namespace it pulled into
	// Blobs are the digests of the blobs it downloaded during the overlap.
	Blobs []string `json:"blobs"`
	// Intervals are when it downloaded while this pull downloaded, sorted and disjoint;
	// Bytes what it received in them.
	Intervals []Interval `json:"intervals"`
	Bytes     int64      `json:"bytes"`
}

// Layer is one image layer's pull and unpack.
type Layer struct {
	Index       int      `json:"index"`
	Digest      string   `json:"digest"`
	DiffID      string   `json:"diff_id,omitempty"`
	Size        int64    `json:"size"`
	Bytes       int64    `json:"bytes"` // bytes received for it
	Fetched     Duration `json:"fetched_ns"`
	UnpackStart Duration `json:"unpack_start_ns,omitempty"`
	UnpackEnd   Duration `json:"unpack_end_ns,omitempty"`
}
