package collector

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/coldtrace/coldtrace/trace"
)

// HostFacts reads the facts about this machine that a trace carries: what the advisor
// judges each phase against. Anything unreadable is left empty, never an error.
func HostFacts() trace.Host {
	h := trace.Host{CPUs: runtime.NumCPU(), Arch: runtime.GOARCH}
	h.Hostname, _ = os.Hostname()
	h.Kernel = kernelRelease()
	h.MemoryBytes = memTotal()
	h.Disks = disks()
	h.Links = links()
	h.Driver, h.GPUs = nvidiaGPUs()
	if h.Driver != "" {
		h.Persistence = persistenceMode()
	}
	return h
}

func memTotal() uint64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, _ := strconv.ParseUint(strings.Fields(rest)[0], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func readTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func disks() []trace.Disk {
	var out []trace.Disk
	entries, _ := os.ReadDir("/sys/block")
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "loop") || strings.HasPrefix(name, "ram") || strings.HasPrefix(name, "zram") {
			continue
		}
		sectors, _ := strconv.ParseUint(readTrim(filepath.Join("/sys/block", name, "size")), 10, 64)
		out = append(out, trace.Disk{
			Name: name, SizeBytes: sectors * 512,
			Rotational: readTrim(filepath.Join("/sys/block", name, "queue/rotational")) == "1",
		})
	}
	return out
}

func links() []trace.Link {
	var out []trace.Link
	entries, _ := os.ReadDir("/sys/class/net")
	for _, e := range entries {
		if e.Name() == "lo" {
			continue
		}
		l := trace.Link{Name: e.Name()}
		if mbps, err := strconv.Atoi(readTrim(filepath.Join("/sys/class/net", e.Name(), "speed"))); err == nil && mbps > 0 {
			l.Mbps = mbps
		}
		out = append(out, l)
	}
	return out
}

// nvidiaGPUs reads the driver's procfs: the version and, per GPU, model and bus.
func nvidiaGPUs() (string, []trace.GPUDev) {
	ver := readTrim("/proc/driver/nvidia/version")
	if ver == "" {
		return "", nil
	}
	driver := driverVersion(ver)
	var gpus []trace.GPUDev
	dirs, _ := filepath.Glob("/proc/driver/nvidia/gpus/*/information")
	for _, p := range dirs {
		g := trace.GPUDev{BusID: filepath.Base(filepath.Dir(p))}
		for _, line := range strings.Split(readTrim(p), "\n") {
			if v, ok := strings.CutPrefix(line, "Model:"); ok {
				g.Model = strings.TrimSpace(v)
			}
		}
		gpus = append(gpus, g)
	}
	return driver, gpus
}

// driverVersion finds the version in /proc/driver/nvidia/version's first line, which
// varies by build: "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Fri ..." or
// "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build ...".
func driverVersion(ver string) string {
	line, _, _ := strings.Cut(ver, "\n")
	for _, f := range strings.Fields(line) {
		if f[0] >= '0' && f[0] <= '9' && strings.Count(f, ".") >= 1 && strings.Trim(f, "0123456789.") == "" {
			return f
		}
	}
	return strings.TrimSpace(line)
}

func persistenceMode() string {
	out, err := exec.Command("nvidia-smi", "--query-gpu=persistence_mode", "--format=csv,noheader").Output()
	if err != nil {
		return ""
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.ToLower(strings.TrimSpace(first))
}

// kernelRelease is uname's release ("6.18.44-..."), or "" when unknown.
func kernelRelease() string {
	var uts unix.Utsname
	if unix.Uname(&uts) != nil {
		return ""
	}
	return unix.ByteSliceToString(uts.Release[:])
}
