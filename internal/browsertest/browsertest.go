// Package browsertest serves tests that drive a real headless Chromium
// (Debian's package, through chromedp): it finds the browser, skipping
// loudly where it is missing outside CI and failing in CI (.ci/run
// installs it), and says where a test keeps its screenshots and other
// artifacts. It is for tests only.
package browsertest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cordonhq/cordon/internal/chromium"
)

// Chromium returns the path of Chromium. Without one the test skips,
// saying what was not tested, except in CI (CI=true), where it fails.
func Chromium(t testing.TB, what string) string {
	t.Helper()
	if p, err := chromium.Find(); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed: CI must install it (apt-get install chromium; .ci/run does)")
	}
	t.Skipf("SKIPPED: chromium is not installed, so %s was NOT tested in a browser (apt-get install chromium)", what)
	return ""
}

// Artifacts is where a test keeps screenshots and other artifacts:
// $CORDON_ARTIFACTS/<test name>, else a temporary directory. It logs
// the directory.
func Artifacts(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if d := os.Getenv("CORDON_ARTIFACTS"); d != "" {
		dir = filepath.Join(d, t.Name())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("artifacts in %s", dir)
	return dir
}
