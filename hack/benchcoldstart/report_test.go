package benchcoldstart

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

type report struct {
	Command   string    `json:"command"`
	Started   time.Time `json:"started"`
	LinkMiBps int       `json:"link_mibps"`
	ShardMiB  int       `json:"shard_mib"`
	// Load and LoadAfter are /proc/loadavg before and after: the machine is shared.
	Load      string        `json:"loadavg_before"`
	LoadAfter string        `json:"loadavg_after"`
	Main      *sizeResult   `json:"main"`
	Curve     []*sizeResult `json:"curve,omitempty"`
}

// sizeResult is the benchmark at one image size.
type sizeResult struct {
	ImageMiB   int64           `json:"image_mib"`
	ImageBytes int64           `json:"image_file_bytes"`
	Ref        string          `json:"ref"`
	Runs       []runResult     `json:"runs"`
	Summary    []summary       `json:"summary"`
	Advice     json.RawMessage `json:"advice"`
	// Predicted is what `coldtrace advise` on the baselines predicted for a strategy.
	Predicted map[string]interval `json:"predicted,omitempty"`
	// Overhead is the tracer's: the server's own clock at ready, recorded minus not, in
	// the lower-bound state (medians).
	Overhead *overhead `json:"tracer_overhead,omitempty"`
}

type overhead struct {
	Recorded   float64 `json:"recorded_s"`
	Unrecorded float64 `json:"unrecorded_s"`
	Runs       int     `json:"runs"`
}

// interval is a median with a distribution-free interval: order statistics of the runs
// chosen so that the median lies between them with probability Coverage (binomial; with
// 5 runs the smallest and the largest, 94%).
type interval struct {
	Median   float64 `json:"median"`
	Lo       float64 `json:"lo"`
	Hi       float64 `json:"hi"`
	Coverage float64 `json:"coverage,omitempty"`
}

type summary struct {
	Strategy  string             `json:"strategy"`
	Runs      int                `json:"runs"`
	Ready     interval           `json:"ready_s"`
	Server    interval           `json:"server_ready_s"`
	Download  float64            `json:"download_s"`
	Phases    map[string]float64 `json:"critical_s"` // medians
	LinkBytes float64            `json:"link_bytes"`
	WarmLink  float64            `json:"warm_link_bytes"`
	Warmed    float64            `json:"warmed_bytes"`
	Read      float64            `json:"read_bytes"`
	Warm      float64            `json:"warm_s"`
	Speedup   float64            `json:"speedup"`
}

func medianInterval(x []float64) interval {
	if len(x) == 0 {
		return interval{}
	}
	s := slices.Clone(x)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	// The largest k whose [s[k-1], s[n-k]] covers the median with probability >= 95%;
	// with too few runs, the whole range and what it covers.
	k, cov := 1, coverage(n, 1)
	for j := 2; j <= n/2; j++ {
		if c := coverage(n, j); c >= 0.95 {
			k, cov = j, c
		}
	}
	return interval{Median: med, Lo: s[k-1], Hi: s[n-k], Coverage: cov}
}

// coverage is P(s[k-1] <= median <= s[n-k]) for n runs: 1 - 2 P(Binomial(n, 1/2) < k).
func coverage(n, k int) float64 {
	var tail float64
	for i := range k {
		tail += binom(n, i) / math.Pow(2, float64(n))
	}
	return 1 - 2*tail
}

func binom(n, k int) float64 {
	r := 1.0
	for i := 1; i <= k; i++ {
		r = r * float64(n-k+i) / float64(i)
	}
	return r
}

func med(x []float64) float64 { return medianInterval(x).Median }

func (r *sizeResult) summarise(strategies []string) {
	var base float64
	for _, st := range strategies {
		var ready, server, dl, link, wlink, warmed, read, warm []float64
		phases := map[string][]float64{}
		for _, run := range r.Runs {
			if run.Strategy != st || run.Err != "" {
				continue
			}
			ready, server, dl = append(ready, run.Ready), append(server, run.Server), append(dl, run.Download)
			link, wlink = append(link, float64(run.LinkBytes)), append(wlink, float64(run.WarmLinkBytes))
			warmed, read, warm = append(warmed, float64(run.Warmed)), append(read, float64(run.Read)), append(warm, run.Warm)
			for p, v := range run.Phases {
				phases[p] = append(phases[p], v)
			}
		}
		s := summary{Strategy: st, Runs: len(ready), Ready: medianInterval(ready), Server: medianInterval(server), Download: med(dl),
			LinkBytes: med(link), WarmLink: med(wlink), Warmed: med(warmed), Read: med(read), Warm: med(warm), Phases: map[string]float64{}}
		for p, v := range phases {
			// A phase missing from a run took nothing in it.
			v = append(v, make([]float64, len(ready)-len(v))...)
			s.Phases[p] = med(v)
		}
		if st == stBaseline {
			base = s.Ready.Median
		}
		if s.Ready.Median > 0 {
			s.Speedup = base / s.Ready.Median
		}
		r.Summary = append(r.Summary, s)
	}
	var rec, unrec []float64
	for _, run := range r.Runs {
		if run.Strategy == stLower && run.Err == "" && run.Unrecorded > 0 {
			rec, unrec = append(rec, run.Server), append(unrec, run.Unrecorded)
		}
	}
	if len(rec) > 0 {
		r.Overhead = &overhead{Recorded: med(rec), Unrecorded: med(unrec), Runs: len(rec)}
	}
	r.predictions()
}

// predictions reads the advice's what-if scenarios that correspond to strategies.
func (r *sizeResult) predictions() {
	var a struct {
		WhatIf []struct {
			Name      string                          `json:"name"`
			Predicted struct{ Value, Lo, Hi float64 } `json:"predicted_s"`
		} `json:"what_if"`
	}
	if json.Unmarshal(r.Advice, &a) != nil {
		return
	}
	which := map[string][]string{"pre-pulled image": {stPrepull}, "all combined": {stWarm, stLower}}
	r.Predicted = map[string]interval{}
	for _, w := range a.WhatIf {
		for _, st := range which[w.Name] {
			r.Predicted[st] = interval{Median: w.Predicted.Value, Lo: w.Predicted.Lo, Hi: w.Predicted.Hi}
		}
	}
}

func (rep *report) write(t *testing.T, dir string) {
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	table := rep.table()
	for name, data := range map[string][]byte{"results.json": js, "table.md": []byte(table), "chart.svg": []byte(rep.Main.svg())} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("results in %s\n%s", dir, table)
}

func mib(b float64) string { return fmt.Sprintf("%.0f MiB", b/(1<<20)) }

func (rep *report) table() string {
	var b strings.Builder
	m := rep.Main
	fmt.Fprintf(&b, "Image %d MiB of files (%s), model shard %d MiB, one link of %d MiB/s; load average %s before, %s after.\n\n",
		m.ImageBytes>>20, m.Ref, rep.ShardMiB, rep.LinkMiBps, rep.Load, rep.LoadAfter)
	b.WriteString("| strategy | runs | time to ready, median [interval] | server's own clock | speed-up | pull+unpack | init | fetch | load | download span | over the link (start) | over the link (warm before) | warmed | read | warm took | predicted by advise |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range m.Summary {
		pred := "–"
		if p, ok := m.Predicted[s.Strategy]; ok {
			pred = fmt.Sprintf("%.2f s [%.2f, %.2f] (%+.0f%%)", p.Median, p.Lo, p.Hi, 100*(p.Median-s.Ready.Median)/s.Ready.Median)
		}
		fmt.Fprintf(&b, "| %s (%s) | %d | %.2f s [%.2f, %.2f] | %.2f s | %.1fx | %.2f s | %.2f s | %.2f s | %.2f s | %.2f s | %s | %s | %s | %s | %.1f s | %s |\n",
			s.Strategy, describe[s.Strategy], s.Runs, s.Ready.Median, s.Ready.Lo, s.Ready.Hi, s.Server.Median, s.Speedup,
			s.Phases["pull"]+s.Phases["unpack"], s.Phases["init"], s.Phases["fetch"], s.Phases["load"], s.Download,
			mib(s.LinkBytes), mib(s.WarmLink), mib(s.Warmed), mib(s.Read), s.Warm, pred)
	}
	if o := m.Overhead; o != nil {
		fmt.Fprintf(&b, "\nTracer overhead (lower-bound state, server's own clock at ready, medians of %d): recorded %.3f s, not recorded %.3f s: %+.1f%%.\n",
			o.Runs, o.Recorded, o.Unrecorded, 100*(o.Recorded-o.Unrecorded)/o.Unrecorded)
	}
	if len(rep.Curve) > 0 {
		b.WriteString("\n| image | baseline | coldtrace | speed-up |\n|---|---|---|---|\n")
		for _, c := range rep.Curve {
			var base, ct interval
			for _, s := range c.Summary {
				switch s.Strategy {
				case stBaseline:
					base = s.Ready
				case stWarm:
					ct = s.Ready
				}
			}
			fmt.Fprintf(&b, "| %d MiB | %.2f s [%.2f, %.2f] | %.2f s [%.2f, %.2f] | %.1fx |\n", c.ImageBytes>>20,
				base.Median, base.Lo, base.Hi, ct.Median, ct.Lo, ct.Hi, base.Median/max(ct.Median, 1e-9))
		}
	}
	return b.String()
}

// svg draws the median time to ready of each strategy as a horizontal bar, its interval
// as a whisker.
func (r *sizeResult) svg() string {
	const left, width, rowH, top = 330, 520, 34, 40
	var hi float64
	for _, s := range r.Summary {
		hi = max(hi, s.Ready.Hi, s.Ready.Median)
	}
	hi = math.Max(hi, 1e-9)
	x := func(v float64) float64 { return left + v/hi*width }
	var b strings.Builder
	h := top + rowH*len(r.Summary) + 30
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="13">`+"\n", left+width+90, h)
	fmt.Fprintf(&b, `<text x="10" y="22" font-size="15" font-weight="bold">Time to ready, %d MiB image, new node per run (median, interval)</text>`+"\n", r.ImageBytes>>20)
	for i, s := range r.Summary {
		y := top + i*rowH
		color := "#4c78a8"
		if strings.HasPrefix(s.Strategy, "coldtrace") {
			color = "#f58518"
		}
		fmt.Fprintf(&b, `<text x="10" y="%d">%s</text>`+"\n", y+18, s.Strategy+": "+strings.ReplaceAll(describe[s.Strategy], "`", ""))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="22" fill="%s"/>`+"\n", left, y+4, x(s.Ready.Median)-left, color)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="black"/>`+"\n", x(s.Ready.Lo), x(s.Ready.Hi), y+15, y+15)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%.2f s</text>`+"\n", x(max(s.Ready.Hi, s.Ready.Median))+6, y+19, s.Ready.Median)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
