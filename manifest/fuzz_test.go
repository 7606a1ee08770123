package manifest

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzParse checks that Parse never panics, and that whatever it accepts is valid and
// survives a write and a second parse unchanged.
func FuzzParse(f *testing.F) {
	var y, j bytes.Buffer
	if err := sample().WriteYAML(&y); err != nil {
		f.Fatal(err)
	}
	if err := sample().WriteJSON(&j); err != nil {
		f.Fatal(err)
	}
	f.Add(y.Bytes())
	f.Add(j.Bytes())
	f.Add([]byte("apiVersion: coldtrace.dev/v1alpha1\nkind: PrefetchManifest\nmetadata: {name: x}\nspec: {runs: 1}\n"))
	f.Add([]byte("apiVersion: coldtrace.dev/v1alpha1\nkind: PrefetchManifest\nspec:\n  hotSet:\n  - path: ../../etc/shadow\n    ranges: [{off: 0, len: 4096}]\n    confidence: 1\n"))
	f.Add([]byte("apiVersion: coldtrace.dev/v1alpha1\nkind: PrefetchManifest\nspec:\n  hotSet:\n  - path: /a\n    ranges: [{off: 0, len: 8192}, {off: 4096, len: 4096}]\n    confidence: 1\n"))
	f.Add([]byte("apiVersion: coldtrace.dev/v1alpha1\nkind: PrefetchManifest\nmetadata: {name: x}\nspec:\n  artifacts:\n  - {path: /m, origin: 'http://h/m', size: 0}\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Add([]byte("\xff\xfe"))
	f.Add([]byte(`{"ApiVersion":"coldtrace.dev/v1alpha1","kind":"PrefetchManifest","metadata":{"name":"x"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data, Limits{MaxEntries: 1000})
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("Parse accepted a manifest that Validate refuses: %v", err)
		}
		var buf bytes.Buffer
		if err := m.WriteJSON(&buf); err != nil {
			t.Fatal(err)
		}
		again, err := Parse(buf.Bytes(), Limits{MaxEntries: 1000})
		if err != nil {
			t.Fatalf("written manifest does not parse: %v\n%s", err, buf.String())
		}
		// Compare encodings: an empty list and an absent one are the same manifest.
		a, _ := json.Marshal(again)
		b, _ := json.Marshal(m)
		if !bytes.Equal(a, b) {
			t.Fatalf("round trip differs:\n%s\n%s", a, b)
		}
	})
}
