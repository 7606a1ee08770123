package recorder

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coldtrace/coldtrace/internal/testenv"
	"github.com/coldtrace/coldtrace/trace"
)

func TestForks200Children(t *testing.T) {
	testenv.RequireBPF(t)
	tr, err := Record(context.Background(), Options{
		Command: []string{"/bin/sh", "-c", "for i in $(seq 200); do /bin/true & done; wait"},
		Timeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Outcome != trace.OutcomeExited || tr.LostEvents != 0 {
		t.Fatalf("outcome %s, lost %d", tr.Outcome, tr.LostEvents)
	}
	trues := 0
	for _, p := range tr.Processes {
		if p.Exe == "/bin/true" || p.Exe == "/usr/bin/true" {
			trues++
			if p.Exit == 0 || p.ExitCode != 0 {
				t.Errorf("child %d: exit at %v code %d", p.PID, p.Exit, p.ExitCode)
			}
		}
	}
	if trues != 200 {
		t.Errorf("%d children exec'd true, want 200", trues)
	}
}

func TestNeverReady(t *testing.T) {
	testenv.RequireBPF(t)
	start := time.Now()
	tr, err := Record(context.Background(), Options{Command: []string{"sleep", "30"}, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Outcome != trace.OutcomeTimeout || !tr.Incomplete || tr.Ready != nil {
		t.Errorf("outcome %s incomplete %v ready %v, want a timeout marked incomplete", tr.Outcome, tr.Incomplete, tr.Ready)
	}
	if !strings.Contains(tr.Error, "not ready after 500ms") {
		t.Errorf("error %q does not say it timed out", tr.Error)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("the recording took %v: the command was not stopped", time.Since(start))
	}
}

func TestCommandNotFound(t *testing.T) {
	_, err := Record(context.Background(), Options{Command: []string{"coldtrace-no-such-command"}})
	if err == nil || !strings.Contains(err.Error(), `cannot run "coldtrace-no-such-command"`) || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("error %v, want a clear not-found error", err)
	}
}

func TestFailingCommand(t *testing.T) {
	testenv.RequireBPF(t)
	tr, err := Record(context.Background(), Options{Command: []string{"/bin/sh", "-c", "exit 3"}})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Outcome != trace.OutcomeExited || !strings.Contains(tr.Error, "exit status 3") {
		t.Errorf("outcome %s error %q, want an exit with status 3", tr.Outcome, tr.Error)
	}
}

func TestTinyRingBufferCountsLoss(t *testing.T) {
	testenv.RequireBPF(t)
	// Opens come faster than a reader that takes a millisecond per record drains a
	// one-page buffer.
	burst := []string{"/usr/bin/python3", "-c", "for i in range(20000): open('/etc/hostname').close()"}
	tr, err := Record(context.Background(), Options{
		Command:         burst,
		RingBufferBytes: os.Getpagesize(),
		slowReader:      time.Millisecond,
		Timeout:         time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if tr.LostEvents == 0 || !tr.Incomplete {
		t.Fatalf("lost %d events, incomplete %v: a one-page ring buffer must lose some", tr.LostEvents, tr.Incomplete)
	}
	found := false
	for _, w := range tr.Warnings {
		found = found || strings.Contains(w, "events were lost")
	}
	if !found {
		t.Errorf("warnings %q do not report the loss", tr.Warnings)
	}
	t.Logf("lost %d events", tr.LostEvents)
}

func TestInterruptWritesPartialTrace(t *testing.T) {
	testenv.RequireBPF(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr, err := Record(ctx, Options{
		Command: []string{"/bin/sh", "-c", "cat /etc/hostname >/dev/null; sleep 30"},
		OnStart: func(int) { time.AfterFunc(300*time.Millisecond, cancel) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Outcome != trace.OutcomeInterrupted || !tr.Incomplete {
		t.Fatalf("outcome %s incomplete %v", tr.Outcome, tr.Incomplete)
	}
	if tr.Duration < 300*time.Millisecond || tr.Duration > 3*time.Second {
		t.Errorf("duration %v, want the time until the interruption", tr.Duration)
	}
	if len(tr.Processes) < 2 {
		t.Errorf("processes %+v: the partial trace lost what happened", tr.Processes)
	}
	if err := tr.Validate(); err != nil {
		t.Error(err)
	}
}
