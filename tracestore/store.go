// Package tracestore keeps the agent's traces: written as each recording ends, bounded by
// size and age, and listed and read back by the node's API. Dir keeps them in a local
// directory; an object-storage backend implements the same Store.
package tracestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/coldtrace/coldtrace/trace"
)

// Store holds traces by name.
type Store interface {
	// Put stores t under name, replacing the trace stored under it before, and returns
	// where it went (a path or URL, for the log).
	Put(ctx context.Context, name string, t *trace.Trace) (string, error)
	// List describes the stored traces that f matches, in the order of their start.
	List(ctx context.Context, f Filter) ([]Entry, error)
	// Open reads the trace whose ID is id as it is stored: gzipped JSON (trace.Read
	// decodes it). ErrNotFound says there is none.
	Open(ctx context.Context, id string) (io.ReadCloser, error)
}

// ErrNotFound is Open's error for an ID that is not stored.
var ErrNotFound = errors.New("no such trace")

// Entry describes a stored trace: what a listing needs without reading the whole trace.
type Entry struct {
	ID         string         `json:"id"`
	Name       string         `json:"name"` // as given to Put
	Workload   trace.Workload `json:"workload"`
	Start      time.Time      `json:"start"`
	Duration   trace.Duration `json:"duration_ns"`
	Outcome    trace.Outcome  `json:"outcome"`
	Incomplete bool           `json:"incomplete"`
	Size       int64          `json:"size"`    // stored bytes
	Written    time.Time      `json:"written"` // retention's age counts from here
}

// Filter selects traces; its zero value selects all of them.
type Filter struct {
	// Namespace and Pod are the Kubernetes pod's namespace and name.
	Namespace, Pod string
	// Workload is the workload's key (its image digest, see trace.Workload.Key) or its
	// image reference.
	Workload string
	// Since and Until bound the trace's start: Since <= start < Until.
	Since, Until time.Time
}

// Match says whether f selects e.
func (f Filter) Match(e Entry) bool {
	w := e.Workload
	return (f.Namespace == "" || f.Namespace == w.Namespace) &&
		(f.Pod == "" || f.Pod == w.Pod) &&
		(f.Workload == "" || f.Workload == w.Key() || f.Workload == w.Image) &&
		f.within(e.Start)
}

// within says whether start lies in [Since, Until).
func (f Filter) within(start time.Time) bool {
	return (f.Since.IsZero() || !start.Before(f.Since)) && (f.Until.IsZero() || start.Before(f.Until))
}

// CheckName checks a name given to Put: a relative slash-separated path ("k8s.io/<container
// id>") without empty, "." or ".." components, which every backend can use as a key.
func CheckName(name string) error {
	if name == "" || path.IsAbs(name) || strings.HasSuffix(name, "/") {
		return fmt.Errorf("trace name %q is not a relative path", name)
	}
	for _, c := range strings.Split(name, "/") {
		if c == "" || c == "." || c == ".." || strings.HasPrefix(c, ".") {
			return fmt.Errorf("trace name %q: component %q is empty or starts with a dot", name, c)
		}
	}
	return nil
}
