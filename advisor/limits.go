package advisor

import (
	"strings"

	"github.com/coldtrace/coldtrace/trace"
)

// Limits are the host's physical limits that phases are judged against, in bytes per
// second. A zero field is taken from what the traces measured, else from the trace's host
// facts, else from the defaults below.
type Limits struct {
	// Link is what the path to the registry and the model origin delivers: measured from
	// the traces' transfers where they moved enough bytes, else the fastest non-loopback
	// link of Host.Links (the NIC), or a flag.
	Link float64 `json:"link_bytes_per_sec"`
	// Disk is read throughput of local storage: measured from the traces' cold reads where
	// they have enough, else a default, or a flag.
	Disk float64 `json:"disk_bytes_per_sec"`
	// PageCache is the rate of copying cached pages into a process.
	PageCache float64 `json:"page_cache_bytes_per_sec"`
	// NIC is the fastest non-loopback link of the host (DefaultLink when none reports a
	// speed): what the pulls of the node could use at most, against which their link use
	// is judged.
	NIC float64 `json:"nic_bytes_per_sec"`
	// DiskLatency is the seconds a cold small file costs beyond its bytes (the lookup of
	// its inode and the first read's round trip): measured from the traces' small files
	// that missed the page cache where there are enough, else assumed.
	DiskLatency float64 `json:"disk_latency_s"`
	// LinkFrom, DiskFrom and LatencyFrom say where each came from: SourceFlag,
	// SourceMeasured, SourceNIC or SourceAssumed.
	LinkFrom    string `json:"link_from,omitempty"`
	DiskFrom    string `json:"disk_from,omitempty"`
	LatencyFrom string `json:"disk_latency_from,omitempty"`
	// LinkRange and DiskRange bound each rate: the slowest and fastest run for a measured
	// rate, the plausible hardware for an assumed one, the value itself for a flag or the
	// NIC. The what-if intervals are widened by them.
	LinkRange    [2]float64 `json:"link_range"`
	DiskRange    [2]float64 `json:"disk_range"`
	LatencyRange [2]float64 `json:"disk_latency_range"`
}

// Where a limit came from.
const (
	SourceFlag     = "flag"
	SourceMeasured = "measured"
	SourceNIC      = "nic"
	SourceAssumed  = "assumed"
)

// Defaults when the traces do not say: conservative figures for a datacenter SSD, a
// spinning disk, a 10 Gb/s link and memory bandwidth available to one reader, and the
// ranges of hardware an assumed disk rate may be off by (SATA to NVMe, slow to fast HDD).
const (
	DefaultDiskSSD   = 1e9
	DefaultDiskHDD   = 150e6
	DefaultLink      = 10e9 / 8
	DefaultPageCache = 8e9
)

var (
	assumedSSDRange = [2]float64{300e6, 3e9}
	assumedHDDRange = [2]float64{80e6, 250e6}
)

// The assumed latency of a cold small file, and its range: from a local NVMe drive
// (0.1 ms) to a network block device under load (2 ms); a spinning disk seeks (8 ms).
const (
	DefaultLatencySSD = 0.5e-3
	DefaultLatencyHDD = 8e-3
)

var (
	assumedSSDLatency = [2]float64{0.1e-3, 2e-3}
	assumedHDDLatency = [2]float64{4e-3, 15e-3}
)

// The least a measurement must move to count: below it, fixed costs (connection set-up,
// the first request, seeks) dominate and the rate says little about the limit.
const (
	minMeasuredLinkBytes = 8 << 20
	minMeasuredDiskBytes = 8 << 20
	// A small file is read in one or two requests: its time is latency, not throughput.
	smallFile            = 64 << 10
	minMeasuredColdFiles = 20
)

// measureLimits resolves the limits for a set of traces of one workload: what flags set
// (the non-zero fields of set) stays; the link and the disk are measured from the traces
// where they have the evidence; the rest comes from the first trace's host.
func measureLimits(traces []*trace.Trace, set Limits) Limits {
	l := set.markSet()
	if l.Link == 0 {
		if rates := measure(traces, pathRate); len(rates) > 0 {
			l.Link, l.LinkFrom, l.LinkRange = median(rates), SourceMeasured, spread(rates)
		}
	}
	if l.Disk == 0 {
		if rates := measure(traces, coldReadRate); len(rates) > 0 {
			l.Disk, l.DiskFrom, l.DiskRange = median(rates), SourceMeasured, spread(rates)
		}
	}
	if l.DiskLatency == 0 {
		if lat := measure(traces, coldFileLatency); len(lat) > 0 {
			l.DiskLatency, l.LatencyFrom, l.LatencyRange = median(lat), SourceMeasured, spread(lat)
		}
	}
	return l.resolve(traces[0].Host)
}

// markSet labels the fields a caller set as flags.
func (l Limits) markSet() Limits {
	if l.Link > 0 && l.LinkFrom == "" {
		l.LinkFrom, l.LinkRange = SourceFlag, [2]float64{l.Link, l.Link}
	}
	if l.Disk > 0 && l.DiskFrom == "" {
		l.DiskFrom, l.DiskRange = SourceFlag, [2]float64{l.Disk, l.Disk}
	}
	if l.DiskLatency > 0 && l.LatencyFrom == "" {
		l.LatencyFrom, l.LatencyRange = SourceFlag, [2]float64{l.DiskLatency, l.DiskLatency}
	}
	return l
}

// resolve fills the zero fields of l from host and the defaults.
func (l Limits) resolve(host trace.Host) Limits {
	l = l.markSet()
	nicFrom := SourceNIC
	if l.NIC == 0 {
		for _, k := range host.Links {
			if k.Name != "lo" {
				l.NIC = max(l.NIC, float64(k.Mbps)*1e6/8)
			}
		}
		if l.NIC == 0 {
			l.NIC, nicFrom = DefaultLink, SourceAssumed
		}
	}
	if l.Link == 0 {
		l.Link, l.LinkFrom, l.LinkRange = l.NIC, nicFrom, [2]float64{l.NIC, l.NIC}
	}
	if l.Disk == 0 {
		l.Disk, l.DiskRange, l.DiskFrom = DefaultDiskSSD, assumedSSDRange, SourceAssumed
		if spinning(host.Disks) {
			l.Disk, l.DiskRange = DefaultDiskHDD, assumedHDDRange
		}
	}
	if l.DiskLatency == 0 {
		l.DiskLatency, l.LatencyRange, l.LatencyFrom = DefaultLatencySSD, assumedSSDLatency, SourceAssumed
		if spinning(host.Disks) {
			l.DiskLatency, l.LatencyRange = DefaultLatencyHDD, assumedHDDLatency
		}
	}
	if l.PageCache == 0 {
		l.PageCache = DefaultPageCache
	}
	return l
}

// spinning reports whether every disk is rotational. Virtual disks (virtio vd*, Xen xvd*)
// report rotational by default whatever backs them, so their flag is no evidence: a
// virtual machine counts as not spinning.
func spinning(disks []trace.Disk) bool {
	if len(disks) == 0 {
		return false
	}
	for _, d := range disks {
		if !d.Rotational || strings.HasPrefix(d.Name, "vd") || strings.HasPrefix(d.Name, "xvd") {
			return false
		}
	}
	return true
}

// measure applies rate to each trace and keeps the rates it found.
func measure(traces []*trace.Trace, rate func(*trace.Trace) (float64, bool)) []float64 {
	var out []float64
	for _, t := range traces {
		if r, ok := rate(t); ok {
			out = append(out, r)
		}
	}
	return out
}

func spread(x []float64) [2]float64 {
	lo, hi := x[0], x[0]
	for _, v := range x {
		lo, hi = min(lo, v), max(hi, v)
	}
	return [2]float64{lo, hi}
}

// coldFileLatency is the median time in read syscalls of one trace's small files that
// missed the page cache: what a cold small file costs.
func coldFileLatency(t *trace.Trace) (float64, bool) {
	var took []float64
	for _, f := range t.Files {
		if f.Kind != trace.KindDevice && f.CacheMisses > 0 && f.BytesRead > 0 && f.BytesRead <= smallFile && f.ReadTime > 0 {
			took = append(took, secs(f.ReadTime))
		}
	}
	if len(took) < minMeasuredColdFiles {
		return 0, false
	}
	return median(took), true
}

// pathRate is what the network path delivered in one trace: the bytes of the pull and of
// the model download over the time either was active (the union of their activity, so
// that while both ran their sum counts once against the shared link). A pull or a
// download is bounded by the slowest of the NIC, the network and the server, so this is
// what the next pull or download can expect, where the NIC speed is only an upper bound.
func pathRate(t *trace.Trace) (float64, bool) {
	var ivs []trace.Interval
	var bytes int64
	for _, name := range []trace.PhaseName{trace.PhasePull, trace.PhaseFetch} {
		if p, ok := t.Phase(name); ok && p.Bytes > 0 {
			ivs, bytes = append(ivs, activity(p)...), bytes+p.Bytes
		}
	}
	d := secs(trace.Total(trace.Union(ivs)))
	if bytes < minMeasuredLinkBytes || d <= 0 {
		return 0, false
	}
	return float64(bytes) / d, true
}

// coldReadRate is the disk's read rate seen in one trace: the bytes that read-family
// syscalls brought in from storage over the time spent in those syscalls, for the files
// whose reads missed the page cache for at least half of what they read (on mostly cached
// files the time is copying, not disk). The syscall time includes the copy, so this is a
// lower bound of the disk's rate.
func coldReadRate(t *trace.Trace) (float64, bool) {
	var missed int64
	var took trace.Duration
	for _, f := range t.Files {
		m := f.CacheMisses * pageSize
		if f.Kind == trace.KindDevice || f.ReadTime <= 0 || f.BytesRead <= 0 || 2*m < f.BytesRead {
			continue
		}
		missed, took = missed+min(m, f.BytesRead), took+f.ReadTime
	}
	if missed < minMeasuredDiskBytes || took <= 0 {
		return 0, false
	}
	return float64(missed) / secs(took), true
}

// shared is the capacity the node's pulls shared, against which their link use is
// judged: the link when a flag gave it, else the NIC. A link measured from the same
// pulls would make the judgement circular.
func (l Limits) shared() float64 {
	if l.LinkFrom == SourceFlag {
		return l.Link
	}
	return l.NIC
}
