package advisor

import (
	"fmt"
	"testing"

	"github.com/coldtrace/coldtrace/trace"
)

// imageFile records that tr read size bytes of a file of the image's first layer at
// `first` seconds, missing `missed` bytes of them in the page cache, in readTime seconds.
func imageFile(tr *trace.Trace, path string, size, missed int64, first, readTime float64) {
	tr.Files = append(tr.Files, trace.File{
		Path: path, Size: size, Kind: trace.KindOther, FirstOpen: sec(first),
		Layer:     &trace.LayerRef{Index: 0, Digest: testLayer, Where: "image"},
		Ranges:    []trace.Range{{Off: 0, Len: size, First: sec(first), Last: sec(first), Via: trace.AccessRead}},
		BytesRead: size, ReadTime: sec(readTime), CacheMisses: missed / pageSize,
	})
}

// TestPrePullLeavesTheImageCold: in a baseline start the unpack has just written the
// image's files, so the start read its 500 MB of them from the page cache; on a node
// that pulled the image earlier they come from disk. At a flag's 1 GB/s that is 0.5 s
// that the pre-pull costs and that warming the page cache saves, with 1 ms for the cold
// file.
func TestPrePullLeavesTheImageCold(t *testing.T) {
	var traces []*trace.Trace
	for range 3 {
		tr := genTrace(t, "c", step{trace.PhasePull, 10, 1e9}, step{trace.PhaseUnpack, 2, 1e9},
			step{trace.PhaseCreate, 0.5, 0}, step{trace.PhaseInit, 3, 0}, step{trace.PhaseLoad, 1, 0})
		imageFile(tr, "/opt/libs/a.so", 500e6, 0, 12.5, 0.1)
		traces = append(traces, tr)
	}
	a := mustAnalyze(t, traces, Options{Limits: Limits{Disk: 1e9, DiskLatency: 1e-3}})
	pre, pc := scenario(a, ScenarioPrePull), scenario(a, ScenarioPageCache)
	// 16.5 s in all, less 12 s of pull and unpack, plus 0.501 s of cold reads.
	if !near(pre.Predicted.Value, 5.001, 1e-6) || !near(pc.Saved.Value, 0.501, 1e-6) {
		t.Errorf("pre-pull %+v, page cache %+v: want 5.001 s predicted and 0.501 s saved", pre, pc)
	}
	// Flags' disk rate and latency are certain, and so are identical runs.
	if pre.Predicted.Lo != pre.Predicted.Hi {
		t.Errorf("pre-pull interval %+v with a known disk rate and identical runs", pre.Predicted)
	}
	if all := scenario(a, ScenarioCombined); !near(all.Predicted.Value, 4.5, 1e-6) {
		t.Errorf("all combined %+v, want 4.5 s: no pull, unpack or cold read", all)
	}

	// Without a flag and without cold reads to measure, the disk is assumed; the
	// interval then spans what the plausible disks give: 500 MB at 3 GB/s and 0.1 ms for
	// the file, to 300 MB/s and 2 ms.
	a = mustAnalyze(t, traces, Options{})
	pre = scenario(a, ScenarioPrePull)
	if a.Limits.DiskFrom != SourceAssumed || !near(pre.Predicted.Lo, 4.5+0.5/3+1e-4, 1e-6) || !near(pre.Predicted.Hi, 4.5+0.5/0.3+2e-3, 1e-6) {
		t.Errorf("limits %+v, pre-pull %+v: want the interval from 4.67 s to 6.17 s", a.Limits, pre.Predicted)
	}
}

// TestDiskMeasuredFromColdReads: files that missed the page cache give the disk's rate,
// bytes missed over the time in read syscalls; a mostly cached file does not count.
func TestDiskMeasuredFromColdReads(t *testing.T) {
	var traces []*trace.Trace
	for i, took := range []float64{0.1, 0.2, 0.4} {
		tr := genTrace(t, "d", step{trace.PhaseInit, 1, 0})
		imageFile(tr, "/opt/libs/cold.so", 40e6, 40e6, 0.1, took)
		imageFile(tr, "/opt/libs/hot.so", 100e6, 1e6, 0.2, 0.01) // 1% missed: copying, not disk
		tr.ID = string(rune('a' + i))
		traces = append(traces, tr)
	}
	l := mustAnalyze(t, traces, Options{}).Limits
	// 40 MB (rounded down to pages) in 0.1, 0.2 and 0.4 s.
	missed := float64(int64(40e6) / pageSize * pageSize)
	if l.DiskFrom != SourceMeasured || !near(l.Disk, missed/0.2, 1) || !near(l.DiskRange[0], missed/0.4, 1) || !near(l.DiskRange[1], missed/0.1, 1) {
		t.Errorf("disk %+v, want measured at 200 MB/s, 100 to 400 MB/s", l)
	}
}

// TestLatencyMeasuredFromColdSmallFiles: the median read time of small files that
// missed the page cache is a cold file's latency; larger files and cached ones do not
// count, and with fewer than 20 such files it stays assumed.
func TestLatencyMeasuredFromColdSmallFiles(t *testing.T) {
	tr := genTrace(t, "m", step{trace.PhaseInit, 1, 0})
	for i := range 21 {
		imageFile(tr, fmt.Sprintf("/lib/m%d.py", i), 4096, 4096, 0.1, 1e-3*float64(1+i%3)) // 1, 2 or 3 ms
	}
	imageFile(tr, "/lib/big.so", 1<<20, 1<<20, 0.1, 1) // not small
	imageFile(tr, "/lib/hot.py", 4096, 0, 0.1, 1)      // cached
	l := mustAnalyze(t, []*trace.Trace{tr}, Options{}).Limits
	if l.LatencyFrom != SourceMeasured || !near(l.DiskLatency, 2e-3, 1e-9) {
		t.Errorf("limits %+v, want a measured latency of 2 ms", l)
	}
	tr.Files = tr.Files[2:]
	if l := mustAnalyze(t, []*trace.Trace{tr}, Options{}).Limits; l.LatencyFrom != SourceAssumed {
		t.Errorf("limits %+v from 19 cold small files, want the latency assumed", l)
	}
}

// TestVirtualDiskIsNotSpinning: a virtio disk reports rotational whatever backs it.
func TestVirtualDiskIsNotSpinning(t *testing.T) {
	for _, c := range []struct {
		disks []trace.Disk
		want  float64
	}{
		{[]trace.Disk{{Name: "vda", Rotational: true}}, DefaultDiskSSD},
		{[]trace.Disk{{Name: "xvda", Rotational: true}}, DefaultDiskSSD},
		{[]trace.Disk{{Name: "sda", Rotational: true}}, DefaultDiskHDD},
		{[]trace.Disk{{Name: "sda", Rotational: true}, {Name: "nvme0n1"}}, DefaultDiskSSD},
	} {
		if got := (Limits{}).resolve(trace.Host{Disks: c.disks}).Disk; got != c.want {
			t.Errorf("disks %+v: disk %g, want %g", c.disks, got, c.want)
		}
	}
}

// TestLinkMeasuredOverTheSharedTime: a pull of 1 GB and a download of 0.5 GB that
// overlap for 5 s of their 10 and 6 s moved 1.5 GB in the 11 s either was active.
func TestLinkMeasuredOverTheSharedTime(t *testing.T) {
	tr := genTrace(t, "s", step{trace.PhasePull, 10, 1e9}, step{trace.PhaseFetch, 6, 5e8})
	for i := range tr.Phases {
		if p := &tr.Phases[i]; p.Name == trace.PhaseFetch {
			p.Start, p.End = sec(5), sec(11)
			p.Activity = []trace.Interval{{Start: sec(5), End: sec(11)}}
		}
	}
	l := mustAnalyze(t, []*trace.Trace{tr}, Options{}).Limits
	if l.LinkFrom != SourceMeasured || !near(l.Link, 1.5e9/11, 1) || l.NIC != 10e9/8 {
		t.Errorf("limits %+v, want the link measured at 1.5 GB / 11 s", l)
	}
}
