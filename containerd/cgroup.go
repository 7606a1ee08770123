package containerd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Cgroup is a cgroup v2 directory and its id: the inode number of the directory, which is
// what bpf_get_current_cgroup_id returns.
type Cgroup struct {
	Path string
	ID   uint64
}

// Cgroup2Mount finds where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup on most
// nodes, /sys/fs/cgroup/unified on hybrid hosts) and the cgroup path at its root. Of
// several, it takes the one that sees the most of the hierarchy: in a pod, the host's
// hierarchy mounted for the agent, not the runtime's mount of the pod's own cgroup.
func Cgroup2Mount() (mountpoint, root string, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	return cgroup2Mount(f)
}

func cgroup2Mount(mountinfo io.Reader) (mountpoint, root string, err error) {
	found, best := false, 0
	sc := bufio.NewScanner(mountinfo)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		fields := strings.Fields(sc.Text())
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" && len(fields) > 4 {
				r := unescapeMount(fields[3])
				if d := cgroupDepth(r); !found || d < best {
					found, best, mountpoint, root = true, d, unescapeMount(fields[4]), r
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", err
	}
	if !found {
		return "", "", errors.New("no cgroup2 hierarchy is mounted")
	}
	return mountpoint, root, nil
}

// cgroupDepth is how deep a mount's root is below the root of the reader's cgroup
// namespace: negative for a mount of the hierarchy above it ("/../..").
func cgroupDepth(root string) int {
	d := 0
	for _, c := range strings.Split(root, "/") {
		switch c {
		case "", ".":
		case "..":
			d--
		default:
			d++
		}
	}
	return d
}

// unescapeMount undoes mountinfo's octal escapes of space, tab, newline and backslash.
func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// ProcessCgroup returns the cgroup v2 of a process, from /proc/PID/cgroup.
func ProcessCgroup(pid int) (Cgroup, error) {
	mnt, root, err := Cgroup2Mount()
	if err != nil {
		return Cgroup{}, err
	}
	return ProcessCgroupAt(mnt, root, pid)
}

// ProcessCgroupAt is ProcessCgroup for a caller that knows the cgroup v2 mount already:
// its mount point and root, as Cgroup2Mount returns them.
func ProcessCgroupAt(mnt, root string, pid int) (Cgroup, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return Cgroup{}, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		rel, ok := strings.CutPrefix(line, "0::")
		if !ok {
			continue
		}
		// The path is relative to our cgroup namespace root, the mount shows its root.
		rel = strings.TrimPrefix(rel, strings.TrimSuffix(root, "/"))
		return CgroupAt(filepath.Join(mnt, rel))
	}
	return Cgroup{}, fmt.Errorf("process %d has no cgroup v2", pid)
}

// CgroupAt returns the cgroup at a directory of the cgroup v2 hierarchy.
func CgroupAt(dir string) (Cgroup, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return Cgroup{}, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	return Cgroup{Path: dir, ID: st.Ino}, nil
}
