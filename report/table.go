package report

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strings"
	"text/tabwriter"

	"github.com/coldtrace/coldtrace/trace"
)

// TableOptions tunes Table.
type TableOptions struct {
	// Top bounds the rows of the long tables (files, peers, ioctls); 0 means 10.
	Top int
}

// trailingSpace is the padding tabwriter leaves after empty last cells.
var trailingSpace = regexp.MustCompile(`(?m) +$`)

// Table writes the phase breakdown and the tables behind it for a terminal.
func Table(w io.Writer, t *trace.Trace, opts TableOptions) error {
	if opts.Top <= 0 {
		opts.Top = 10
	}
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	for _, f := range facts(t) {
		fmt.Fprintf(tw, "%s:\t%s\n", f.key, oneLine(f.value))
	}
	tw.Flush()
	for _, s := range sections(t, opts.Top) {
		fmt.Fprintf(&buf, "\n%s\n", s.title)
		if len(s.rows) > 0 {
			// One tabwriter per section: each table gets its own column widths.
			tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
			writeCells(tw, s.head)
			for _, r := range s.rows {
				writeCells(tw, r)
			}
			tw.Flush()
		}
		if s.note != "" {
			fmt.Fprintf(&buf, "  (%s)\n", oneLine(s.note))
		}
	}
	out := trailingSpace.ReplaceAll(buf.Bytes(), nil)
	_, err := w.Write(out)
	return err
}

func writeCells(w io.Writer, cells []string) {
	for i, c := range cells {
		sep := "\t"
		if i == 0 {
			sep = "  " // indent the table under its title
		}
		io.WriteString(w, sep+oneLine(c))
	}
	io.WriteString(w, "\n")
}

// oneLine keeps a value from breaking the table's layout: paths and errors come from the
// traced workload and may hold tabs, newlines or terminal escapes.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}
