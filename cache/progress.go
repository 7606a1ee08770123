package cache

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/coldtrace/coldtrace/internal/units"
)

// Progress shows the actions of a warm as they run: one bar per action (bytes, rate, ETA)
// and a line for each finished one. On a terminal the bars of the running actions share
// one status line that is redrawn in place; elsewhere (a log) only the finished lines and,
// for long actions, a line every Every.
type Progress struct {
	w     io.Writer
	tty   bool
	every time.Duration
	now   func() time.Time

	mu     sync.Mutex
	bars   []*Bar
	drawn  bool // a status line is on screen
	logged time.Time
}

// NewProgress writes to w; tty says whether w is a terminal.
func NewProgress(w io.Writer, tty bool) *Progress {
	p := &Progress{w: w, tty: tty, every: 10 * time.Second, now: time.Now}
	p.logged = p.now()
	return p
}

// Bar is the progress of one action.
type Bar struct {
	p            *Progress
	action, name string
	total        int64
	start        time.Time
	done         int64
}

// Start begins a bar for action on name; total is the bytes expected (0: unknown).
func (p *Progress) Start(action, name string, total int64) *Bar {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	b := &Bar{p: p, action: action, name: name, total: total, start: p.now()}
	p.bars = append(p.bars, b)
	if p.tty {
		p.redraw()
	}
	return b
}

// Set records that done bytes are through.
func (b *Bar) Set(done int64) {
	if b == nil {
		return
	}
	b.p.mu.Lock()
	defer b.p.mu.Unlock()
	b.done = done
	// Redrawn at most ten times a second on a terminal, once every Every in a log: a pull
	// reports each 32 KiB.
	every := b.p.every
	if b.p.tty {
		every = 100 * time.Millisecond
	}
	if now := b.p.now(); now.Sub(b.p.logged) >= every {
		b.p.logged = now
		b.p.redraw()
	}
}

// Finish ends the bar with a result ("pulled", "already present", "refused: ...").
func (b *Bar) Finish(result string) {
	if b == nil {
		return
	}
	p := b.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.bars {
		if x == b {
			p.bars = append(p.bars[:i], p.bars[i+1:]...)
			break
		}
	}
	p.clear()
	took := p.now().Sub(b.start)
	line := fmt.Sprintf("%-8s %s: %s", b.action, b.name, result)
	switch {
	case b.done > 0 && took < time.Millisecond:
		line += fmt.Sprintf(" (%s)", units.Bytes(b.done))
	case b.done > 0:
		line += fmt.Sprintf(" (%s in %s, %s/s)", units.Bytes(b.done), took.Round(time.Millisecond), units.Bytes(perSecond(b.done, took)))
	}
	fmt.Fprintln(p.w, line)
	if p.tty {
		p.redraw()
	}
}

func perSecond(n int64, d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(float64(n) / d.Seconds())
}

// String is the bar as the status line shows it: "stage model.safetensors 12 MiB/64 MiB
// 19% 8.1 MiB/s ETA 6s".
func (b *Bar) String() string {
	took := b.p.now().Sub(b.start)
	r := perSecond(b.done, took)
	s := fmt.Sprintf("%s %s %s", b.action, b.name, units.Bytes(b.done))
	if b.total > 0 {
		s += fmt.Sprintf("/%s %d%%", units.Bytes(b.total), b.done*100/b.total)
	}
	s += fmt.Sprintf(" %s/s", units.Bytes(r))
	if b.total > b.done && r > 0 {
		s += fmt.Sprintf(" ETA %s", (time.Duration(float64(b.total-b.done)/float64(r)) * time.Second).Round(time.Second))
	}
	return s
}

func (p *Progress) clear() {
	if p.tty && p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
}

func (p *Progress) redraw() {
	if len(p.bars) == 0 {
		return
	}
	parts := make([]string, len(p.bars))
	for i, b := range p.bars {
		parts[i] = b.String()
	}
	line := strings.Join(parts, " | ")
	if p.tty {
		p.clear()
		fmt.Fprint(p.w, line)
		p.drawn = true
		return
	}
	fmt.Fprintln(p.w, "  ... "+line)
}

// Note prints a line between the bars.
func (p *Progress) Note(line string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	fmt.Fprintln(p.w, line)
	if p.tty {
		p.redraw()
	}
}
