package report

import (
	"encoding/json"
	"io"

	"github.com/coldtrace/coldtrace/trace"
)

// JSON writes t as indented JSON in the trace file format, so that trace.Read reads it back.
func JSON(w io.Writer, t *trace.Trace) error {
	c := *t // stamp the format on a copy: rendering must not modify the caller's trace
	c.Format, c.Version = trace.Format, trace.Version
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(&c)
}
