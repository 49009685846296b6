package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDemoUserspace runs what 'make demo' runs: the whole system in
// userspace mode, without root (controller, userspace gateway in front of
// two loopback apps, userspace client behind its local proxies). The demo
// program asserts each step itself and exits non-zero on any failure; this
// test also checks the story it tells.
func TestDemoUserspace(t *testing.T) {
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin("cordon-demo"), "-bin", binDir).CombinedOutput()
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	for _, want := range []string{
		"200 OK: EHR: patient chart",
		"HTTP 403 cordon: not an app you are entitled to",
		"flow.allow",
		"flow.deny",
		"Demo finished: every step behaved as expected.",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q\n%s", want, out)
		}
	}
}
