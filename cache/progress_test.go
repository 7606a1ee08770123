package cache

import (
	"strings"
	"testing"
	"time"
)

func TestProgress(t *testing.T) {
	var out strings.Builder
	p := NewProgress(&out, false)
	now := time.Unix(0, 0)
	p.now = func() time.Time { return now }
	b := p.Start(ActionStage, "model.safetensors", 64<<20)
	now = now.Add(2 * time.Second)
	b.Set(16 << 20)
	if got := b.String(); got != "stage model.safetensors 16.0 MiB/64.0 MiB 25% 8.0 MiB/s ETA 6s" {
		t.Errorf("bar %q", got)
	}
	now = now.Add(6 * time.Second)
	b.Set(64 << 20)
	b.Finish("fetched")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if last := lines[len(lines)-1]; last != "stage    model.safetensors: fetched (64.0 MiB in 8s, 8.0 MiB/s)" {
		t.Errorf("finished line %q", last)
	}

	// On a terminal the status line is redrawn in place and erased before a finished line.
	out.Reset()
	p = NewProgress(&out, true)
	p.now = func() time.Time { return now }
	b = p.Start(ActionWarm, "libs", 0)
	b.Set(4096)
	b.Finish("warmed")
	if s := out.String(); !strings.Contains(s, "\r\x1b[K") || !strings.HasSuffix(s, "warm     libs: warmed (4.0 KiB)\n") {
		t.Errorf("terminal output %q", s)
	}
}
