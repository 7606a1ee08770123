package containerd

import (
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestCgroup2Mount(t *testing.T) {
	for _, tc := range []struct {
		name, mountinfo, mnt, root string
	}{
		{"hybrid", `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`, "/sys/fs/cgroup/unified", "/"},
		{"unified", `25 30 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`, "/sys/fs/cgroup", "/"},
		{"in a container", `1210 1200 0:26 /kubepods.slice/kubepods-pod1.slice /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw
`, "/sys/fs/cgroup", "/kubepods.slice/kubepods-pod1.slice"},
		{"escaped", `41 31 0:38 / /mnt/cg\040v2 rw - cgroup2 none rw
`, "/mnt/cg v2", "/"},
		// A pod in its own cgroup namespace, with the host's hierarchy mounted for it: the
		// runtime's mount shows the pod's cgroup as the root, the host's its ancestors.
		{"pod, own cgroup namespace", `1210 1200 0:26 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw
1290 1200 0:26 /../../.. /host/sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw
`, "/host/sys/fs/cgroup", "/../../.."},
		{"pod, host's cgroup namespace", `1210 1200 0:26 /kubepods/besteffort/pod1/c1 /sys/fs/cgroup ro - cgroup2 cgroup rw
1290 1200 0:26 / /host/sys/fs/cgroup ro - cgroup2 cgroup2 rw
`, "/host/sys/fs/cgroup", "/"},
	} {
		mnt, root, err := cgroup2Mount(strings.NewReader(tc.mountinfo))
		if err != nil || mnt != tc.mnt || root != tc.root {
			t.Errorf("%s: got %q %q %v, want %q %q", tc.name, mnt, root, err, tc.mnt, tc.root)
		}
	}
	if _, _, err := cgroup2Mount(strings.NewReader("35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")); err == nil {
		t.Error("found a cgroup2 mount in a v1-only mountinfo")
	}
}

func TestProcessCgroup(t *testing.T) {
	cg, err := ProcessCgroup(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(cg.Path, &st); err != nil || st.Ino != cg.ID {
		t.Errorf("cgroup %+v: stat says inode %d, %v", cg, st.Ino, err)
	}
	if _, err := os.Stat(cg.Path + "/cgroup.procs"); err != nil {
		t.Errorf("%s is not a cgroup directory: %v", cg.Path, err)
	}
}
