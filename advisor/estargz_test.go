package advisor_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/advisor"
	"github.com/coldtrace/coldtrace/internal/ctrtest"
	"github.com/coldtrace/coldtrace/internal/origin"
	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/recorder"
	"github.com/coldtrace/coldtrace/trace"
)

// recordEntry is one line of a `ctr-remote image optimize --record-out` file.
type recordEntry struct {
	Path           string `json:"path"`
	ManifestDigest string `json:"manifestDigest"`
	LayerIndex     *int   `json:"layerIndex"`
}

func (e recordEntry) String() string {
	idx := "nil"
	if e.LayerIndex != nil {
		idx = fmt.Sprint(*e.LayerIndex)
	}
	return fmt.Sprintf("%s (layer %s, manifest %s)", e.Path, idx, e.ManifestDigest)
}

// readRecord parses JSON lines of record entries into a set keyed by their text.
func readRecord(t *testing.T, b []byte) map[string]recordEntry {
	t.Helper()
	set := map[string]recordEntry{}
	dec := json.NewDecoder(bytes.NewReader(b))
	for dec.More() {
		var e recordEntry
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("record: %v\n%s", err, b)
		}
		set[e.String()] = e
	}
	return set
}

// TestEStargzExportMatchesCtrRemote runs one workload twice on the container test image:
// recorded by coldtrace and exported with --export estargz, and under stargz-snapshotter's
// `ctr-remote image optimize --record-out`, which runs the same entrypoint with the same
// arguments and environment under its own fanotify monitor. The two lists must hold the
// same (path, manifestDigest, layerIndex) entries, apart from order and duplicates.
func TestEStargzExportMatchesCtrRemote(t *testing.T) {
	testenv.RequireBPF(t)
	testenv.RequireBinary(t, "gcc")
	ctrRemote := testenv.RequireBinary(t, "ctr-remote")
	ctrd := ctrtest.StartContainerd(t)
	reg := ctrtest.StartRegistry(t, ctrtest.RegistryOptions{})
	port := origin.Start(t, 64<<10).Port()
	// The edge layer, on top, holds what a plain read of each file does not cover: links
	// (to a file, to a directory as usrmerge's /lib -> usr/lib, absolute and relative), a
	// file opened and never read, an empty file, a library of the layer below that it
	// replaces, and a file that the workload appends to (overlayfs copies it up).
	override := ctrtest.LibsDir + "/d00/lib0000.so"
	edge, err := ctrtest.Layer(
		ctrtest.File{Path: "/edge/target", Data: bytes.Repeat([]byte("t"), 5000)},
		ctrtest.File{Path: "/edge/link", Link: "target"},
		ctrtest.File{Path: "/edge/usr/lib/libdir.so", Data: bytes.Repeat([]byte("d"), 5000)},
		ctrtest.File{Path: "/edge/lib", Link: "usr/lib"},
		ctrtest.File{Path: "/edge/abs", Link: "/edge/lib/../lib/libdir.so"},
		ctrtest.File{Path: "/edge/openonly", Data: bytes.Repeat([]byte("o"), 5000)},
		ctrtest.File{Path: "/edge/empty"},
		ctrtest.File{Path: "/edge/appended", Data: bytes.Repeat([]byte("a"), 5000)},
		ctrtest.File{Path: override, Data: bytes.Repeat([]byte("x"), 2048)},
	)
	if err != nil {
		t.Fatal(err)
	}
	im := ctrtest.PushColdStart(t, reg, port, ctrtest.Sizes{Libs: 20, LibSize: 2048, Weights: 1 << 20, Tensors: 8}, edge)
	cs, ref, coldstart := im.ColdStart, im.Ref, im.Args
	const script = `cat /edge/link /edge/lib/libdir.so >/dev/null && cat /edge/abs >/dev/null && : </edge/openonly && cat /edge/empty && echo x >>/edge/appended && exec "$@"`
	args := append([]string{"/bin/sh", "-c", script, "sh"}, coldstart...)

	tr, err := recorder.RecordImage(context.Background(), recorder.ImageOptions{
		Image: ref, Address: ctrd.Address, Namespace: "default", PlainHTTP: true, Fresh: true,
		Args: args, HostNetwork: true, Timeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Outcome != trace.OutcomeReady || tr.Incomplete {
		t.Fatalf("outcome %s (%s), incomplete %v, warnings %v", tr.Outcome, tr.Error, tr.Incomplete, tr.Warnings)
	}
	m, err := advisor.BuildManifest([]*trace.Trace{tr}, advisor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var exported bytes.Buffer
	if _, err := advisor.Export(&exported, m, advisor.ExportEStargz); err != nil {
		t.Fatal(err)
	}
	ours := readRecord(t, exported.Bytes())

	// ctr-remote analyses the image coldtrace pulled into containerd: it mounts the
	// image's snapshot, runs the entrypoint in a container on it for --period seconds with
	// fanotify on the mount, and writes what it saw before converting the image.
	recordOut := filepath.Join(t.TempDir(), "record.json")
	argsJSON, _ := json.Marshal(args[4:])
	entryJSON, _ := json.Marshal(args[:4])
	cmd := exec.Command(ctrRemote, "--address", ctrd.Address, "--namespace", "default",
		"image", "optimize", "--record-out", recordOut, "--net-host", "--period", "10",
		"--entrypoint", string(entryJSON), "--args", string(argsJSON),
		tr.Workload.Image, strings.TrimSuffix(tr.Workload.Image, ":v1")+":esgz")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	b, err := os.ReadFile(recordOut)
	if err != nil {
		t.Fatalf("%v\nctr-remote output:\n%s", err, out)
	}
	theirs := readRecord(t, b)

	// What the trace says of each file, by its path in the image.
	files := map[string]trace.File{}
	for _, f := range tr.Files {
		p := f.Path
		if f.Layer != nil && f.Layer.Path != "" {
			p = f.Layer.Path
		}
		files[strings.TrimPrefix(p, "/")] = f
	}
	var onlyOurs, onlyTheirs []string
	for k := range ours {
		if _, ok := theirs[k]; !ok {
			onlyOurs = append(onlyOurs, k)
		}
	}
	explained := map[string]int{}
	for k, e := range theirs {
		if _, ok := ours[k]; ok {
			continue
		}
		// The principled differences (advisor/ADVISOR.md, "Exports"): ctr-remote records
		// every file opened (fanotify's FAN_OPEN), coldtrace lists files whose bytes were
		// read. A file of an image layer opened and never read, an empty one included,
		// costs a lazy pull no fetch. A file opened for writing is copied up into the
		// writable layer, where the trace finds it; the copy-up's read of the image
		// layer is a gap of coldtrace's.
		f, ok := files[e.Path]
		switch {
		case ok && f.Opens > 0 && len(f.Ranges) == 0 && f.Layer != nil && f.Layer.Where == "image":
			explained["opened, never read"]++
			t.Logf("only ctr-remote, opened and never read: %s", k)
		case ok && f.Layer != nil && f.Layer.Where == "rw":
			explained["copied up"]++
			t.Logf("only ctr-remote, copied up into the writable layer: %s", k)
		default:
			onlyTheirs = append(onlyTheirs, k)
		}
	}
	slices.Sort(onlyOurs)
	slices.Sort(onlyTheirs)
	t.Logf("coldtrace exported %d entries, ctr-remote recorded %d; %d in both; only in ctr-remote for a documented reason: %v",
		len(ours), len(theirs), len(ours)-len(onlyOurs), explained)
	if len(onlyOurs) > 0 || len(onlyTheirs) > 0 {
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			t.Logf("ctr-remote: %s", sc.Text())
		}
		t.Errorf("only in coldtrace's export:\n  %s\nonly in ctr-remote's record:\n  %s",
			strings.Join(onlyOurs, "\n  "), strings.Join(onlyTheirs, "\n  "))
	}
	// Every library, the weights and the entrypoint are in both: without them the
	// comparison would prove nothing.
	if want := len(cs.LibPaths) + 2; len(ours)-len(onlyOurs) < want {
		t.Errorf("%d entries in both, want at least %d", len(ours)-len(onlyOurs), want)
	}
}
