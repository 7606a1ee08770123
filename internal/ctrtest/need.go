package ctrtest

import (
	"os"
	"testing"
)

// need skips the test when the environment lacks what it needs, or fails it under CI
// (CI=true), where a skipped test would hide a broken environment.
// internal/testenv will replace this helper.
func need(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and the environment lacks: %s", why)
	}
	t.Skipf("skipped: %s", why)
}
