// Package caps names the Linux capabilities the node agent needs, and why: the one list
// that the agent checks at its start and that the Helm chart grants (its test compares
// them). See docs/deploy.md for how each was measured.
package caps

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Capability is one capability, by its number and its name without the CAP_ prefix (as a
// Kubernetes securityContext spells it).
type Capability struct {
	Bit  int
	Name string
	Why  string
}

// Agent are the capabilities of `coldtrace agent` running as uid 0 in the host's PID and
// network namespaces, with tracefs and the cgroup2 hierarchy mounted for it. Not needed:
// SYS_ADMIN (only to mount tracefs where it is missing), SYS_RESOURCE (kernels since 5.11
// charge BPF memory to the cgroup, not to RLIMIT_MEMLOCK), NET_ADMIN (socket diagnostics
// and their notices of destroyed sockets need none), DAC_OVERRIDE (nothing is written
// outside the agent's own directory, which uid 0 owns).
var Agent = []Capability{
	{unix.CAP_BPF, "BPF", "load the probes' programs and create their maps"},
	{unix.CAP_PERFMON, "PERFMON", "attach the programs to tracepoints and uprobes"},
	{unix.CAP_SYS_PTRACE, "SYS_PTRACE", "reach files through /proc/PID/root of the containers' processes, which hold capabilities the agent lacks: a download's digest"},
	{unix.CAP_DAC_READ_SEARCH, "DAC_READ_SEARCH", "look up files in other users' 0700 directories of the layers: a file's layer, a download's digest"},
}

// Effective reads the effective capability set of the calling process.
func Effective() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parseStatus(f, "CapEff")
}

func parseStatus(r io.Reader, field string) (uint64, error) {
	for sc := bufio.NewScanner(r); sc.Scan(); {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/self/status", field)
}

// Missing are the capabilities of need that the set eff lacks.
func Missing(eff uint64, need []Capability) []Capability {
	var out []Capability
	for _, c := range need {
		if eff&(1<<c.Bit) == 0 {
			out = append(out, c)
		}
	}
	return out
}

// Check says which of need the process lacks, each with why it is needed, or nil.
func Check(need []Capability) error {
	eff, err := Effective()
	if err != nil {
		return fmt.Errorf("reading the capabilities: %w", err)
	}
	miss := Missing(eff, need)
	if len(miss) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("missing capabilities (run as root, or grant them: securityContext.capabilities.add):")
	for _, c := range miss {
		fmt.Fprintf(&b, "\n  CAP_%s: %s", c.Name, c.Why)
	}
	return fmt.Errorf("%s", b.String())
}
