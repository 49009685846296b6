package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// 'cordon ui' serves on loopback only: another address is refused before
// anything listens.
func TestUIListensOnLoopbackOnly(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"ui", "--state-dir", t.TempDir(), "--listen", "0.0.0.0:0"}, &stdout, &stderr)
	if code != exitError || !strings.Contains(stderr.String(), "loopback") || strings.Contains(stdout.String(), "token=") {
		t.Errorf("cordon ui --listen 0.0.0.0:0: exit %d, stdout %q, stderr %q; want exit %d, a loopback error and no link", code, stdout.String(), stderr.String(), exitError)
	}
}

// As root, --open would run the browser as root: refused.
func TestUIOpenNotAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the refusal is for root")
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"ui", "--state-dir", t.TempDir(), "--open"}, &stdout, &stderr); code != exitError || !strings.Contains(stderr.String(), "as root") {
		t.Errorf("cordon ui --open as root: exit %d, stderr %q", code, stderr.String())
	}
}
