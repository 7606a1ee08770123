package cache

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/coldtrace/coldtrace/internal/units"
)

// Results of an item.
const (
	ResultDone    = "done"    // pulled, staged or warmed now
	ResultPresent = "present" // already there: nothing to move
	ResultRefused = "refused" // not done, on purpose: outside the roots, another tenant's, changed on disk
	ResultFailed  = "failed"  // not done: the registry, origin, disk or containerd failed
)

// Reasons for refusals, the values of the reason label.
const (
	ReasonManifest = "manifest" // unreadable or invalid manifest
	ReasonTenant   = "tenant"   // the manifest claims another tenant than its source
	ReasonPath     = "path"     // a path outside the roots (.., absolute, symlink escape)
	ReasonChanged  = "changed"  // the file's size or digest differs from the manifest's
	ReasonEntry    = "entry"    // an entry the agent cannot act on (no digest, no origin URL)
)

// Summary is what one application of a manifest did.
type Summary struct {
	Manifest string        `json:"manifest"`
	Tenant   string        `json:"tenant"`
	Items    []Item        `json:"items"`
	Took     time.Duration `json:"took_ns"`
}

// Item is one image, artifact or hot file.
type Item struct {
	Action string `json:"action"` // ActionPrepull, ActionStage or ActionWarm
	Name   string `json:"name"`   // the image reference, artifact path or file
	Result string `json:"result"` // one of the Result constants
	// Detail says how (resumed, refetched after corruption) or why (refused, failed);
	// Reason is a refusal's Reason constant, for the metrics.
	Detail string `json:"detail,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Bytes is what was moved now; Resident the share of the ranges in the page cache
	// afterwards (warm only).
	Bytes    int64         `json:"bytes"`
	Resident float64       `json:"resident,omitempty"`
	Took     time.Duration `json:"took_ns"`
}

// OK reports whether nothing was refused or failed.
func (s *Summary) OK() bool {
	for _, it := range s.Items {
		if it.Result == ResultRefused || it.Result == ResultFailed {
			return false
		}
	}
	return true
}

type tally struct {
	n     map[string]int
	bytes int64
	res   float64 // resident fractions, summed over warmed files
	warm  int
}

func (s *Summary) tallies() map[string]*tally {
	t := map[string]*tally{}
	for _, it := range s.Items {
		a := t[it.Action]
		if a == nil {
			a = &tally{n: map[string]int{}}
			t[it.Action] = a
		}
		a.n[it.Result]++
		a.bytes += it.Bytes
		if it.Action == ActionWarm && (it.Result == ResultDone || it.Result == ResultPresent) {
			a.res += it.Resident
			a.warm++
		}
	}
	return t
}

// Line sums the summary up in one line, for logs.
func (s *Summary) Line() string {
	var parts []string
	tallies := s.tallies()
	for _, a := range []string{ActionPrepull, ActionStage, ActionWarm} {
		t := tallies[a]
		if t == nil {
			continue
		}
		p := fmt.Sprintf("%s %d done (%s), %d present", a, t.n[ResultDone], units.Bytes(t.bytes), t.n[ResultPresent])
		if t.warm > 0 {
			p += fmt.Sprintf(", %.1f%% resident", 100*t.res/float64(t.warm))
		}
		if n := t.n[ResultRefused] + t.n[ResultFailed]; n > 0 {
			p += fmt.Sprintf(", %d refused, %d failed", t.n[ResultRefused], t.n[ResultFailed])
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return "nothing to do"
	}
	return strings.Join(parts, "; ") + fmt.Sprintf(" in %s", s.Took.Round(time.Millisecond))
}

// Write prints the summary: a line per action, then every item that was refused or failed
// with its reason. verbose lists every item.
func (s *Summary) Write(w io.Writer, verbose bool) error {
	fmt.Fprintf(w, "manifest %s, tenant %s: %s\n", s.Manifest, s.Tenant, s.Line())
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ACTION\tRESULT\tBYTES\tRESIDENT\tTIME\tNAME\tDETAIL")
	n := 0
	for _, it := range s.Items {
		if !verbose && (it.Result == ResultDone || it.Result == ResultPresent) && it.Action == ActionWarm {
			continue
		}
		res := "-"
		if it.Action == ActionWarm && it.Result != ResultRefused && it.Result != ResultFailed {
			res = fmt.Sprintf("%.1f%%", 100*it.Resident)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", it.Action, it.Result, units.Bytes(it.Bytes), res,
			it.Took.Round(time.Millisecond), it.Name, it.Detail)
		n++
	}
	if n == 0 {
		return nil
	}
	return tw.Flush()
}
