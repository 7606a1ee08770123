package report

import (
	"bytes"
	"fmt"
	"io"

	"github.com/coldtrace/coldtrace/trace"
)

// htmlStyle is inline so that the page has no external resources: it must open from a
// file, an e-mail attachment or an air-gapped node.
const htmlStyle = `
body { font-family: ` + fontStack + `; color: #222; margin: 24px; max-width: 1320px; }
h1 { font-size: 22px; margin: 0 0 12px; }
h2 { font-size: 16px; margin: 28px 0 8px; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 0 0 16px; }
dt { color: #777; } dd { margin: 0; }
dt.bad, dd.bad { color: #c0392b; font-weight: 700; }
svg { max-width: 100%; height: auto; border: 1px solid #e4e4e4; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 10px; text-align: left; white-space: nowrap; }
th { border-bottom: 2px solid #ccc; color: #555; font-weight: 600; }
tr:nth-child(even) td { background: #f6f6f6; }
td { font-variant-numeric: tabular-nums; }
p.note { color: #777; font-size: 13px; margin: 4px 0; }
`

// htmlTop bounds the long tables of the page, which scrolls and can show more than a terminal.
const htmlTop = 20

// HTML writes one self-contained page: the header facts, the waterfall and every table.
func HTML(w io.Writer, t *trace.Trace) error {
	var buf bytes.Buffer
	name := workloadName(t)
	fmt.Fprintf(&buf, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>coldtrace: %s</title>\n<style>%s</style>\n</head>\n<body>\n", esc(name), htmlStyle)
	fmt.Fprintf(&buf, "<h1>%s</h1>\n<dl>\n", esc(name))
	for _, f := range facts(t) {
		class := ""
		if f.key == "INCOMPLETE" || f.key == "warning" {
			class = ` class="bad"`
		}
		fmt.Fprintf(&buf, "<dt%s>%s</dt><dd%s>%s</dd>\n", class, esc(f.key), class, esc(f.value))
	}
	buf.WriteString("</dl>\n<figure>\n")
	writeSVG(&buf, t, false)
	buf.WriteString("</figure>\n")
	for _, s := range sections(t, htmlTop) {
		fmt.Fprintf(&buf, "<h2>%s</h2>\n", esc(s.title))
		if len(s.rows) > 0 {
			buf.WriteString("<table>\n<thead><tr>")
			for _, h := range s.head {
				fmt.Fprintf(&buf, "<th>%s</th>", esc(h))
			}
			buf.WriteString("</tr></thead>\n<tbody>\n")
			for _, r := range s.rows {
				buf.WriteString("<tr>")
				for _, c := range r {
					fmt.Fprintf(&buf, "<td>%s</td>", esc(c))
				}
				buf.WriteString("</tr>\n")
			}
			buf.WriteString("</tbody>\n</table>\n")
		}
		if s.note != "" {
			fmt.Fprintf(&buf, "<p class=\"note\">%s</p>\n", esc(s.note))
		}
	}
	buf.WriteString("</body>\n</html>\n")
	_, err := w.Write(buf.Bytes())
	return err
}
