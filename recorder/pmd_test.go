package recorder

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

// TestFaultsMappedByPMD records a program that reads every page of a 64 MiB mapping in
// order. Readahead then builds folios of 2 MiB, and the fault that meets one maps all of
// it with one PMD: the reads of the rest of that block fault no more. The trace must
// still hold every page as mapped, as the program (ground truth) touched them all, and
// the program's own /proc/self/smaps must show PMD mappings, or the case was not tested.
func TestFaultsMappedByPMD(t *testing.T) {
	testenv.RequireBPF(t)
	prog := buildC(t, "touchall.c", "touchall")
	const size = 64 << 20
	data := make([]byte, size)
	rand.Read(data)
	path := filepath.Join(t.TempDir(), "weights.bin")
	writeEvicted(t, path, data)

	var out bytes.Buffer
	tr, err := Record(context.Background(), Options{
		Command: []string{prog, path}, Stdout: &out, Stderr: os.Stderr, Timeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	pmdKB, ok := marks(t, out.String())["pmd_kb"]
	if !ok {
		t.Fatalf("no pmd_kb mark in the output:\n%s", out.String())
	}
	testenv.Require(t, "PMD-mapped file pages", pmdKB > 0,
		"the kernel mapped none of the scan with PMDs (FilePmdMapped "+out.String()+"): no large folios for this filesystem")
	if tr.LostEvents != 0 {
		t.Fatalf("lost %d events", tr.LostEvents)
	}
	f := fileByName(t, tr, path)
	var mapped int64
	for _, r := range f.Ranges {
		if r.Via == trace.AccessMmap {
			mapped += r.Len
		}
	}
	t.Logf("FilePmdMapped %d KiB; the trace: %d bytes mapped in %d ranges, %d page-cache misses",
		pmdKB, f.MappedBytes, len(f.Ranges), f.CacheMisses)
	if f.MappedBytes != size || mapped != size || len(f.Ranges) != 1 {
		t.Errorf("the trace has %d bytes mapped (%d in mmap ranges %+v); the program touched all %d", f.MappedBytes, mapped, f.Ranges, size)
	}
}
