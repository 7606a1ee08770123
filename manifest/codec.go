package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"unicode/utf8"

	yaml2 "go.yaml.in/yaml/v2"
	"sigs.k8s.io/yaml"
)

// Parse decodes a manifest from YAML or JSON (JSON is YAML) and validates it: unknown
// fields, duplicate keys, invalid UTF-8, an unknown apiVersion or kind and every broken
// invariant of Validate are refused with an error that says where.
func Parse(data []byte, lim Limits) (*Manifest, error) {
	lim = lim.withDefaults()
	if int64(len(data)) > lim.MaxBytes {
		return nil, fmt.Errorf("manifest: %d bytes is more than the limit of %d", len(data), lim.MaxBytes)
	}
	if !utf8.Valid(data) {
		return nil, errors.New("manifest: input is not valid UTF-8")
	}
	js, err := toJSON(data)
	if err != nil {
		return nil, err
	}
	// Check the type first, so that a file of another kind says so rather than failing
	// on its first unknown field.
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := json.NewDecoder(bytes.NewReader(js)).Decode(&head); err != nil {
		return nil, fmt.Errorf("manifest: not an object: %w", err)
	}
	if head.APIVersion != APIVersion || head.Kind != Kind {
		return nil, fmt.Errorf("manifest: %q/%q is not a %s/%s", head.APIVersion, head.Kind, APIVersion, Kind)
	}
	if err := checkKeys(js); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if dec.More() {
		return nil, errors.New("manifest: trailing data after the manifest")
	}
	if err := m.validate(lim); err != nil {
		return nil, err
	}
	return &m, nil
}

// toJSON returns JSON input as it is and converts YAML to JSON, refusing duplicate keys
// and a second document, which the conversion alone would silently drop.
func toJSON(data []byte) ([]byte, error) {
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		return data, nil
	}
	d := yaml2.NewDecoder(bytes.NewReader(data))
	var doc, next any
	if err := d.Decode(&doc); err != nil {
		return nil, fmt.Errorf("manifest: not YAML or JSON: %w", err)
	}
	if err := d.Decode(&next); err != io.EOF {
		return nil, errors.New("manifest: more than one YAML document")
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("manifest: not YAML or JSON: %w", err)
	}
	return js, nil
}

// checkKeys refuses keys that differ from the schema's only in case, which
// encoding/json would otherwise accept ("ApiVersion" for "apiVersion").
func checkKeys(js []byte) error {
	var doc any
	if err := json.NewDecoder(bytes.NewReader(js)).Decode(&doc); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	return matchKeys(doc, reflect.TypeFor[Manifest](), "")
}

func matchKeys(v any, t reflect.Type, at string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice:
		items, _ := v.([]any)
		for i, item := range items {
			if err := matchKeys(item, t.Elem(), fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	case reflect.Struct:
		obj, _ := v.(map[string]any)
		for key, val := range obj {
			f, ok := fieldByTag(t, key)
			if !ok {
				return fmt.Errorf("manifest: unknown field %q in %s", key, strings.TrimPrefix(at+".", "."))
			}
			if err := matchKeys(val, f.Type, at+"."+key); err != nil {
				return err
			}
		}
	}
	return nil
}

func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// Read parses a manifest from r, reading at most lim.MaxBytes.
func Read(r io.Reader, lim Limits) (*Manifest, error) {
	lim = lim.withDefaults()
	data, err := io.ReadAll(io.LimitReader(r, lim.MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return Parse(data, lim)
}

// Load reads and parses the manifest at path.
func Load(path string, lim Limits) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := Read(f, lim)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// WriteJSON validates m and writes it as indented JSON.
func (m *Manifest) WriteJSON(w io.Writer) error {
	if err := m.Validate(); err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(m)
}

// WriteYAML validates m and writes it as YAML.
func (m *Manifest) WriteYAML(w io.Writer) error {
	if err := m.Validate(); err != nil {
		return err
	}
	y, err := yaml.Marshal(m)
	if err != nil {
		return err
	}
	_, err = w.Write(y)
	return err
}

// WriteFile writes m to path atomically, as JSON when the name ends in ".json" and as
// YAML otherwise.
func (m *Manifest) WriteFile(path string) error {
	var buf bytes.Buffer
	write := m.WriteYAML
	if strings.HasSuffix(path, ".json") {
		write = m.WriteJSON
	}
	if err := write(&buf); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
