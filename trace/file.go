package trace

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// MaxFileSize bounds how much a reader decompresses, so that a hostile file cannot exhaust
// memory. Real traces of very large workloads stay far below it.
const MaxFileSize = 2 << 30

var gzipMagic = []byte{0x1f, 0x8b}

// Write encodes t as JSON, gzip-compressed when gz is set.
func Write(w io.Writer, t *Trace, gz bool) error {
	t.Format, t.Version = Format, Version
	if !gz {
		enc := json.NewEncoder(w)
		return enc.Encode(t)
	}
	zw := gzip.NewWriter(w)
	if err := json.NewEncoder(zw).Encode(t); err != nil {
		return err
	}
	return zw.Close()
}

// WriteFile writes t to path atomically (a temporary file renamed into place), gzipped
// when the name ends in ".gz", readable by everyone.
func WriteFile(path string, t *Trace) error { return WriteFileMode(path, t, 0o644) }

// WriteFileMode is WriteFile with the file's permissions: 0o600 for the agent's store,
// whose traces hold file paths and URLs.
func WriteFileMode(path string, t *Trace, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write trace: %w", err)
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err := Write(bw, t, strings.HasSuffix(path, ".gz")); err != nil {
		tmp.Close()
		return fmt.Errorf("write trace %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("write trace %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write trace %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write trace %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), perm); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Read decodes a trace, gzipped or not, and validates it.
func Read(r io.Reader) (*Trace, error) {
	br := bufio.NewReader(r)
	head, _ := br.Peek(2)
	var src io.Reader = br
	if bytes.Equal(head, gzipMagic) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("not a trace: bad gzip header: %w", err)
		}
		defer zr.Close()
		src = zr
	}
	lr := &io.LimitedReader{R: src, N: MaxFileSize + 1}
	dec := json.NewDecoder(lr)
	dec.DisallowUnknownFields()
	var t Trace
	if err := dec.Decode(&t); err != nil {
		if lr.N <= 0 {
			return nil, fmt.Errorf("not a trace: larger than %d bytes once decompressed", MaxFileSize)
		}
		return nil, fmt.Errorf("not a trace: %w", describeJSONError(err))
	}
	if dec.More() {
		return nil, errors.New("not a trace: trailing data after the trace object")
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}

// ReadFile reads and validates the trace at path.
func ReadFile(path string) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

func describeJSONError(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("malformed JSON at byte %d: %v", se.Offset, err)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("field %q has the wrong type at byte %d: want %s, got %s", te.Field, te.Offset, te.Type, te.Value)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return errors.New("truncated file")
	}
	return err
}

// ValidDigest reports whether d is "sha256:" and 64 lowercase hex digits, the one form of
// digest traces and manifests hold.
func ValidDigest(d string) bool {
	hex, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hex) != 64 {
		return false
	}
	for _, c := range hex {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Validate checks the invariants that readers of a trace rely on.
func (t *Trace) Validate() error {
	if t.Format != Format {
		return fmt.Errorf("not a trace: format is %q, want %q", t.Format, Format)
	}
	if t.Version < 1 || t.Version > Version {
		return fmt.Errorf("trace format version %d is not supported (this build reads 1 to %d)", t.Version, Version)
	}
	if t.Duration < 0 {
		return fmt.Errorf("invalid trace: negative duration %d", t.Duration)
	}
	switch t.Outcome {
	case OutcomeReady, OutcomeExited, OutcomeTimeout, OutcomeInterrupted, OutcomeFailed:
	default:
		return fmt.Errorf("invalid trace: unknown outcome %q", t.Outcome)
	}
	if t.Ready != nil && (t.Ready.At < 0 || t.Ready.At > t.Duration) {
		return fmt.Errorf("invalid trace: ready at %d outside the trace [0, %d]", t.Ready.At, t.Duration)
	}
	for i, f := range t.Files {
		if f.Size < 0 || f.BytesRead < 0 || f.MappedBytes < 0 || f.CacheMisses < 0 || f.WrittenBytes < 0 {
			return fmt.Errorf("invalid trace: file %d (%s) has a negative count", i, f.Path)
		}
		if f.Digest != "" && !ValidDigest(f.Digest) {
			return fmt.Errorf("invalid trace: file %s has digest %q, want sha256: and 64 lowercase hex digits", f.Path, f.Digest)
		}
		var prevEnd int64
		for j, r := range f.Ranges {
			if r.Off < 0 || r.Len <= 0 || r.Off > (1<<62) || r.Len > (1<<62) {
				return fmt.Errorf("invalid trace: file %s range %d [%d,+%d) is invalid", f.Path, j, r.Off, r.Len)
			}
			if r.Off < prevEnd {
				return fmt.Errorf("invalid trace: file %s ranges are not sorted and disjoint at %d", f.Path, j)
			}
			if r.Via != AccessRead && r.Via != AccessMmap {
				return fmt.Errorf("invalid trace: file %s range %d has unknown access %q", f.Path, j, r.Via)
			}
			prevEnd = r.End()
		}
	}
	for i, c := range t.Conns {
		if c.BytesRecv < 0 || c.BytesSent < 0 {
			return fmt.Errorf("invalid trace: connection %d has a negative byte count", i)
		}
	}
	if p := t.Pull; p != nil {
		for i, o := range p.Overlaps {
			if o.Bytes < 0 {
				return fmt.Errorf("invalid trace: pull overlap %d has a negative byte count", i)
			}
			var prevEnd Duration
			for j, iv := range o.Intervals {
				if iv.Start < prevEnd || iv.End <= iv.Start {
					return fmt.Errorf("invalid trace: pull overlap %d interval %d [%d, %d) is empty, or not sorted and disjoint", i, j, iv.Start, iv.End)
				}
				prevEnd = iv.End
			}
		}
	}
	var sum Duration
	seen := map[PhaseName]bool{}
	for _, p := range t.Phases {
		if !p.Name.Known() {
			return fmt.Errorf("invalid trace: unknown phase %q", p.Name)
		}
		if seen[p.Name] {
			return fmt.Errorf("invalid trace: phase %q appears twice", p.Name)
		}
		seen[p.Name] = true
		if p.Start < 0 || p.End < p.Start || p.Busy < 0 || p.Critical < 0 {
			return fmt.Errorf("invalid trace: phase %q has an invalid span [%d, %d]", p.Name, p.Start, p.End)
		}
		sum += p.Critical
	}
	var at Duration
	for i, s := range t.Critical {
		if !s.Phase.Known() {
			return fmt.Errorf("invalid trace: critical path segment %d has unknown phase %q", i, s.Phase)
		}
		if s.Start != at || s.End <= s.Start {
			return fmt.Errorf("invalid trace: critical path segment %d [%d, %d) does not follow %d", i, s.Start, s.End, at)
		}
		at = s.End
	}
	if len(t.Critical) > 0 && at != t.Duration {
		return fmt.Errorf("invalid trace: critical path ends at %d, the trace at %d", at, t.Duration)
	}
	if len(t.Phases) > 0 && len(t.Critical) > 0 && sum != t.Duration {
		return fmt.Errorf("invalid trace: phase attributions add up to %d, not the duration %d", sum, t.Duration)
	}
	return nil
}
