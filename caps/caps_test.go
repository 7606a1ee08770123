package caps

import (
	"strings"
	"testing"
)

func TestMissing(t *testing.T) {
	// /proc/self/status of a process with CAP_BPF and CAP_PERFMON only (capsh --decode).
	st := "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000000c000000000\nCapBnd:\t000001ffffffffff\n"
	eff, err := parseStatus(strings.NewReader(st), "CapEff")
	if err != nil || eff != 0xc000000000 {
		t.Fatalf("CapEff %x, %v", eff, err)
	}
	var names []string
	for _, c := range Missing(eff, Agent) {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, " "); got != "SYS_PTRACE DAC_READ_SEARCH" {
		t.Errorf("missing %q", got)
	}
	if m := Missing(1<<41-1, Agent); len(m) != 0 {
		t.Errorf("all capabilities, yet missing %v", m)
	}
	if _, err := parseStatus(strings.NewReader("Name:\tx\n"), "CapEff"); err == nil {
		t.Error("a status without CapEff was accepted")
	}
}
