package manifest

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const (
	dA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	dB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func sample() *Manifest {
	m := New("llm-server")
	two := 2
	m.Spec = Spec{
		Workload:  Workload{Image: "registry.local/llm:1", Digest: dA},
		Tenant:    "team-a",
		Runs:      5,
		Images:    []Image{{Ref: "registry.local/llm:1", Digest: dA, Size: 1 << 30}},
		Artifacts: []Artifact{{Path: "/models/qwen/model.safetensors", Origin: "https://hub.local/qwen", Size: 1 << 20, Digest: dB}},
		HotSet: []HotEntry{
			{Layer: dB, LayerIndex: &two, Path: "usr/lib/libpython3.11.so", Size: 8192, Ranges: []Range{{0, 8192}}, Order: 0, FirstAccessNs: 1e6, Confidence: 1, ExpectedSavedSeconds: 0.01},
			{Path: "/models/qwen/model.safetensors", Size: 1 << 20, Ranges: []Range{{0, 4096}, {65536, 8192}}, Order: 1, FirstAccessNs: 2e9, Confidence: 0.6, ExpectedSavedSeconds: 0.2},
		},
	}
	return m
}

func TestRoundTrip(t *testing.T) {
	for _, format := range []string{"yaml", "json"} {
		var buf bytes.Buffer
		m := sample()
		write := m.WriteYAML
		if format == "json" {
			write = m.WriteJSON
		}
		if err := write(&buf); err != nil {
			t.Fatal(err)
		}
		got, err := Parse(buf.Bytes(), Limits{})
		if err != nil {
			t.Fatalf("%s: %v\n%s", format, err, buf.String())
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("%s round trip differs:\n%+v\n%+v", format, got, m)
		}
	}
}

func TestWriteFileAndLoad(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"m.yaml", "m.json"} {
		p := filepath.Join(dir, name)
		if err := sample().WriteFile(p); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p, Limits{}); err != nil {
			t.Fatal(err)
		}
	}
	data, _ := os.ReadFile(filepath.Join(dir, "m.json"))
	if !bytes.HasPrefix(data, []byte("{")) {
		t.Errorf("m.json is not JSON: %.40s", data)
	}
}

// TestRefused checks that each kind of broken manifest is refused with an error that
// names the problem.
func TestRefused(t *testing.T) {
	cases := []struct {
		name, want string
		edit       func(m *Manifest)
	}{
		{"apiVersion", "apiVersion", func(m *Manifest) { m.APIVersion = "coldtrace.dev/v9" }},
		{"kind", "kind", func(m *Manifest) { m.Kind = "ConfigMap" }},
		{"dotdot relative", "'..'", func(m *Manifest) { m.Spec.HotSet[0].Path = "usr/../../etc/shadow" }},
		{"dotdot host", "'..'", func(m *Manifest) { m.Spec.HotSet[1].Path = "/models/../etc/shadow" }},
		{"absolute in layer", "relative", func(m *Manifest) { m.Spec.HotSet[0].Path = "/etc/shadow" }},
		{"relative host", "not absolute", func(m *Manifest) { m.Spec.HotSet[1].Path = "models/x" }},
		{"unclean", "not clean", func(m *Manifest) { m.Spec.HotSet[1].Path = "/models//x" }},
		{"nul", "NUL", func(m *Manifest) { m.Spec.HotSet[1].Path = "/models/x\x00y" }},
		{"artifact dotdot", "'..'", func(m *Manifest) { m.Spec.Artifacts[0].Path = "/cache/../../root" }},
		{"bad layer digest", "64 hex", func(m *Manifest) { m.Spec.HotSet[0].Layer = "sha256:abc" }},
		{"upper-case digest", "64 hex", func(m *Manifest) { m.Spec.Workload.Digest = strings.ToUpper(dA) }},
		{"md5 digest", "64 hex", func(m *Manifest) { m.Spec.Images[0].Digest = "md5:d41d8cd98f00b204e9800998ecf8427e" }},
		{"artifact size 0", "must be positive", func(m *Manifest) { m.Spec.Artifacts[0].Size = 0 }},
		{"artifact size negative", "must be positive", func(m *Manifest) { m.Spec.Artifacts[0].Size = -1 }},
		{"artifact digest", "64 hex", func(m *Manifest) { m.Spec.Artifacts[0].Digest = dA + "0" }},
		{"overlap", "overlaps", func(m *Manifest) { m.Spec.HotSet[1].Ranges = []Range{{0, 8192}, {4096, 4096}} }},
		{"unsorted", "overlaps", func(m *Manifest) { m.Spec.HotSet[1].Ranges = []Range{{8192, 4096}, {0, 4096}} }},
		{"negative", "negative", func(m *Manifest) { m.Spec.HotSet[1].Ranges = []Range{{-4096, 4096}} }},
		{"unaligned", "aligned", func(m *Manifest) { m.Spec.HotSet[1].Ranges = []Range{{100, 4096}} }},
		{"overflow", "overflows", func(m *Manifest) { m.Spec.HotSet[1].Ranges = []Range{{1 << 62, 1 << 62}} }},
		{"no ranges", "no ranges", func(m *Manifest) { m.Spec.HotSet[1].Ranges = nil }},
		{"confidence", "confidence", func(m *Manifest) { m.Spec.HotSet[1].Confidence = 1.5 }},
		{"duplicate", "twice", func(m *Manifest) { m.Spec.HotSet[1] = m.Spec.HotSet[0] }},
		{"tenant", "tenant", func(m *Manifest) { m.Spec.Tenant = "../b" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := sample()
			c.edit(m)
			if err := m.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate = %v, want an error containing %q", err, c.want)
			}
			// Parse must refuse the same document written without validation.
			y, err := yaml.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Parse(y, Limits{}); err == nil {
				t.Fatalf("Parse accepted it")
			}
		})
	}
}

func TestParseRefusesInput(t *testing.T) {
	var ok bytes.Buffer
	if err := sample().WriteYAML(&ok); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		in   string
		lim  Limits
		want string
	}{
		"invalid UTF-8":   {in: strings.Replace(ok.String(), "llm-server", "llm-\xff", 1), want: "UTF-8"},
		"unknown field":   {in: ok.String() + "extra: 1\n", want: "unknown field"},
		"duplicate key":   {in: ok.String() + "kind: PrefetchManifest\n", want: "YAML"},
		"other kind":      {in: "apiVersion: v1\nkind: ConfigMap\n", want: "not a coldtrace.dev/v1alpha1/PrefetchManifest"},
		"too large":       {in: ok.String(), lim: Limits{MaxBytes: 100}, want: "limit"},
		"too many":        {in: ok.String(), lim: Limits{MaxEntries: 1}, want: "more than the limit"},
		"not an object":   {in: "[1, 2]", want: "not an object"},
		"trailing json":   {in: `{"apiVersion":"coldtrace.dev/v1alpha1","kind":"PrefetchManifest","metadata":{"name":"x"},"spec":{"runs":1}} {}`, want: "trailing"},
		"two documents":   {in: ok.String() + "---\n" + ok.String(), want: "more than one"},
		"wrong type":      {in: "apiVersion: coldtrace.dev/v1alpha1\nkind: PrefetchManifest\nspec:\n  runs: many\n", want: "runs"},
		"empty":           {in: "", want: ""},
		"negative budget": {in: "apiVersion: coldtrace.dev/v1alpha1\nkind: PrefetchManifest\nmetadata: {name: x}\nspec:\n  budgetBytes: -1\n", want: "negative"},
		"no name":         {in: "apiVersion: coldtrace.dev/v1alpha1\nkind: PrefetchManifest\n", want: "metadata.name"},
		"key case":        {in: strings.Replace(ok.String(), "hotSet:", "HotSet:", 1), want: `unknown field "HotSet" in spec`},
		"nested key case": {in: strings.Replace(ok.String(), "confidence:", "Confidence:", 1), want: "spec.hotSet[0]"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(c.in), c.lim)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Parse = %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestEntryLimitDefault(t *testing.T) {
	m := sample()
	e := m.Spec.HotSet[1]
	m.Spec.HotSet = nil
	for i := 0; i <= DefaultMaxEntries; i++ {
		e.Path = "/f/" + strconv.Itoa(i)
		m.Spec.HotSet = append(m.Spec.HotSet, e)
	}
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "100000") {
		t.Fatalf("Validate of %d entries = %v", len(m.Spec.HotSet), err)
	}
}

func TestHasDotDot(t *testing.T) {
	for p, want := range map[string]bool{
		"..": true, "../a": true, "a/..": true, "/a/../b": true, "a//../b": true,
		"": false, "a": false, "/a/b": false, "a..b": false, ".../a": false, "a/..b": false, "a/./b": false,
	} {
		if got := HasDotDot(p); got != want {
			t.Errorf("HasDotDot(%q) = %v, want %v", p, got, want)
		}
	}
}
