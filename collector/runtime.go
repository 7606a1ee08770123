package collector

import (
	"os"
	"strconv"
	"strings"
)

// A container's cgroup holds its runtime before it holds the workload: runc's init and its
// helpers set the container up (namespaces, mounts, /proc/self/*, the host's loader and
// libraries mapped by runc's own binary, the bundle's rootfs/etc/hosts) until the init
// process execs the entrypoint. That time is the create phase's; the files it touches are
// the runtime's plumbing, not the image's, so they stay out of the trace's files (and so
// out of the advisor's manifest), while the processes stay, marked as the runtime's.

// SetInit names the container's init process, the one the runtime starts and that execs
// the entrypoint: until then every process of the container is the runtime's, and so is
// every process that did not descend from the init after that exec (a runtime's exec
// into the container). Without it every process is the workload's (`record -- CMD`).
func (c *Collector) SetInit(pid uint32) { c.init = pid }

// runtime says whether what pid did at ts (CLOCK_MONOTONIC) was the container runtime's
// (see SetInit). The time matters for the init: the kernel sends read runs in batches,
// page-cache misses when their run ends and open runs when the recording ends, so what it
// did before its exec may arrive after it.
func (c *Collector) runtime(pid uint32, ts uint64) bool {
	p, ok := c.procs[pid]
	if !ok {
		return c.init != 0 // as proc would make it
	}
	return p.Runtime || ts < p.since
}

// procStat reads the name and the parent of a process that joined the traced set without
// a traced fork (a runtime's init moved into the container's cgroup), while it lives.
func procStat(pid uint32) (comm string, ppid int) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/stat")
	if err != nil {
		return "", 0
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", 0
	}
	fields := strings.Fields(s[end+1:])
	if len(fields) < 2 {
		return s[open+1 : end], 0
	}
	ppid, _ = strconv.Atoi(fields[1])
	return s[open+1 : end], ppid
}
