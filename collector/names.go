package collector

import (
	"debug/elf"
	"io"
	"strings"

	"golang.org/x/sys/unix"
)

// nameFiles names the inodes that no traced open named: executables and their ELF
// interpreters, which the kernel maps without an open syscall. Then it classifies every
// file, now that names and sizes are final.
func (c *Collector) nameFiles() {
	unnamed := map[fileKey]*fileState{}
	for k, f := range c.files {
		if strings.HasPrefix(f.Path, "inode:") {
			unnamed[k] = f
		}
	}
	if len(unnamed) > 0 {
		seen := map[string]bool{}
		for _, p := range c.procs {
			for _, cand := range []string{p.Exe, interpreter(p.Exe)} {
				if cand == "" || seen[cand] {
					continue
				}
				seen[cand] = true
				var st unix.Stat_t
				if unix.Stat(cand, &st) != nil {
					continue
				}
				if f := unnamed[fileKey{kernelDev(st.Dev), st.Ino}]; f != nil {
					f.Path = cand
					f.Size = max(f.Size, st.Size)
				}
			}
		}
	}
	for _, f := range c.files {
		f.Kind = Classify(f.Path, f.Size)
	}
}

// kernelDev converts a dev_t as stat(2) reports it to the kernel's internal encoding,
// which inode and page-cache events carry.
func kernelDev(dev uint64) uint64 {
	return uint64(unix.Major(dev))<<20 | uint64(unix.Minor(dev))
}

// interpreter returns the ELF interpreter (the dynamic loader) that exe names, or "".
func interpreter(exe string) string {
	f, err := elf.Open(exe)
	if err != nil {
		return ""
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(io.LimitReader(p.Open(), 4096))
			if err != nil {
				return ""
			}
			return strings.TrimRight(string(b), "\x00")
		}
	}
	return ""
}
