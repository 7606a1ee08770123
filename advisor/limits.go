package advisor

import "github.com/coldtrace/coldtrace/trace"

// Limits are the host's physical limits that phases are judged against, in bytes per
// second. A zero field is taken from the trace's host facts where they say it, and from
// the defaults below otherwise.
type Limits struct {
	// Link is the network link: from the fastest non-loopback link of Host.Links, or a flag.
	Link float64 `json:"link_bytes_per_sec"`
	// Disk is sequential read throughput of local storage.
	Disk float64 `json:"disk_bytes_per_sec"`
	// PageCache is the rate of copying cached pages into a process.
	PageCache float64 `json:"page_cache_bytes_per_sec"`
}

// Defaults when the trace does not say. The trace records disks' rotational flag but not
// their throughput, so these are conservative figures for a datacenter SSD, a spinning
// disk, a 10 Gb/s link and memory bandwidth available to one reader.
const (
	DefaultDiskSSD   = 1e9
	DefaultDiskHDD   = 150e6
	DefaultLink      = 10e9 / 8
	DefaultPageCache = 8e9
)

// resolve fills the zero fields of l from host and the defaults.
func (l Limits) resolve(host trace.Host) Limits {
	if l.Link == 0 {
		for _, k := range host.Links {
			if k.Name != "lo" && float64(k.Mbps)*1e6/8 > l.Link {
				l.Link = float64(k.Mbps) * 1e6 / 8
			}
		}
		if l.Link == 0 {
			l.Link = DefaultLink
		}
	}
	if l.Disk == 0 {
		l.Disk = DefaultDiskSSD
		if len(host.Disks) > 0 && allRotational(host.Disks) {
			l.Disk = DefaultDiskHDD
		}
	}
	if l.PageCache == 0 {
		l.PageCache = DefaultPageCache
	}
	return l
}

func allRotational(disks []trace.Disk) bool {
	for _, d := range disks {
		if !d.Rotational {
			return false
		}
	}
	return true
}
