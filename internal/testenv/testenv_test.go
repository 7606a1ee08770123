package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// fakeTB records what a helper did to the test. Skip and Fatal end the calling goroutine as
// the real ones do, so code after them must not run.
type fakeTB struct {
	testing.TB // nil: a method the helpers should not call panics
	skipped    bool
	failed     bool
	msg        string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Skip(args ...any) {
	f.skipped, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

func (f *fakeTB) Skipf(format string, args ...any) { f.Skip(fmt.Sprintf(format, args...)) }

func (f *fakeTB) Fatal(args ...any) {
	f.failed, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

func (f *fakeTB) Fatalf(format string, args ...any) { f.Fatal(fmt.Sprintf(format, args...)) }

// run calls fn with a fake TB in its own goroutine and reports what happened; passed says
// whether fn ran to its end.
func run(fn func(testing.TB)) (f *fakeTB, passed bool) {
	f = &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
		passed = true
	}()
	<-done
	return f, passed
}

func TestInCI(t *testing.T) {
	for _, c := range []struct {
		val  string
		want bool
	}{{"true", true}, {"TRUE", true}, {"1", true}, {"", false}, {"false", false}, {"0", false}, {"yes", false}} {
		t.Setenv("CI", c.val)
		if got := InCI(); got != c.want {
			t.Errorf("CI=%q: InCI() = %v, want %v", c.val, got, c.want)
		}
	}
}

func TestRequire(t *testing.T) {
	for _, c := range []struct {
		ci           string
		ok           bool
		skip, failed bool
	}{
		{ci: "", ok: true},
		{ci: "true", ok: true},
		{ci: "", ok: false, skip: true},
		{ci: "false", ok: false, skip: true},
		{ci: "true", ok: false, failed: true},
	} {
		t.Run(fmt.Sprintf("CI=%q,ok=%v", c.ci, c.ok), func(t *testing.T) {
			t.Setenv("CI", c.ci)
			f, passed := run(func(tb testing.TB) { Require(tb, "a widget", c.ok, "none here") })
			if f.skipped != c.skip || f.failed != c.failed || passed != c.ok {
				t.Fatalf("skipped=%v failed=%v passed=%v, want skipped=%v failed=%v passed=%v (msg %q)",
					f.skipped, f.failed, passed, c.skip, c.failed, c.ok, f.msg)
			}
			if !c.ok && (!strings.Contains(f.msg, "requires a widget") || !strings.Contains(f.msg, "none here")) {
				t.Errorf("message %q does not say what is missing and why", f.msg)
			}
			if c.failed && !strings.Contains(f.msg, "CI=true") {
				t.Errorf("message %q does not say that CI turned the skip into a failure", f.msg)
			}
		})
	}
}

// seam sets a package variable for the rest of the test.
func seam[T any](t *testing.T, p *T, v T) {
	old := *p
	*p = v
	t.Cleanup(func() { *p = old })
}

func TestRequireRoot(t *testing.T) {
	seam(t, &geteuid, func() int { return 1000 })
	t.Setenv("CI", "")
	if f, _ := run(RequireRoot); !f.skipped || !strings.Contains(f.msg, "uid 1000") {
		t.Errorf("uid 1000 outside CI: skipped=%v msg=%q, want a skip naming the uid", f.skipped, f.msg)
	}
	t.Setenv("CI", "true")
	if f, _ := run(RequireRoot); !f.failed {
		t.Errorf("uid 1000 in CI: failed=%v skipped=%v, want a failure", f.failed, f.skipped)
	}
	seam(t, &geteuid, func() int { return 0 })
	if _, passed := run(RequireRoot); !passed {
		t.Error("uid 0 in CI: want a pass")
	}
}

func TestRequireBPF(t *testing.T) {
	btf := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(btf, []byte("btf"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name       string
		uid        int
		btf        string
		pass       bool
		msgContain string
	}{
		{"root with BTF", 0, btf, true, ""},
		{"root without BTF", 0, btf + ".missing", false, "kernel BTF"},
		{"not root", 1000, btf, false, "root"},
	} {
		t.Run(c.name, func(t *testing.T) {
			seam(t, &geteuid, func() int { return c.uid })
			seam(t, &btfPath, c.btf)
			for _, ci := range []string{"", "true"} {
				t.Setenv("CI", ci)
				f, passed := run(RequireBPF)
				switch {
				case passed != c.pass:
					t.Errorf("CI=%q: passed=%v, want %v (msg %q)", ci, passed, c.pass, f.msg)
				case !c.pass && ci == "" && !f.skipped:
					t.Errorf("CI=%q: want a skip, got failed=%v", ci, f.failed)
				case !c.pass && ci == "true" && !f.failed:
					t.Errorf("CI=%q: want a failure, got skipped=%v", ci, f.skipped)
				case !strings.Contains(f.msg, c.msgContain):
					t.Errorf("CI=%q: message %q does not contain %q", ci, f.msg, c.msgContain)
				}
			}
		})
	}
}

func TestRequireBinary(t *testing.T) {
	seam(t, &lookPath, func(name string) (string, error) {
		if name == "present" {
			return "/usr/bin/present", nil
		}
		return "", errors.New(`exec: "` + name + `": executable file not found in $PATH`)
	})
	t.Setenv("CI", "")
	var got string
	if _, passed := run(func(tb testing.TB) { got = RequireBinary(tb, "present") }); !passed || got != "/usr/bin/present" {
		t.Errorf("present: passed=%v path=%q", passed, got)
	}
	if f, _ := run(func(tb testing.TB) { RequireBinary(tb, "absent") }); !f.skipped || !strings.Contains(f.msg, "absent") {
		t.Errorf("absent outside CI: skipped=%v msg=%q, want a skip naming the program", f.skipped, f.msg)
	}
	t.Setenv("CI", "true")
	if f, _ := run(func(tb testing.TB) { RequireBinary(tb, "absent") }); !f.failed {
		t.Errorf("absent in CI: failed=%v, want a failure", f.failed)
	}
}

// The real helpers against the real machine: whatever it has, they must not panic, and in
// CI the machine must have what coldtrace's tests need.
func TestRealEnvironment(t *testing.T) {
	RequireBinary(t, "sh")
	RequireBPF(t)
}
