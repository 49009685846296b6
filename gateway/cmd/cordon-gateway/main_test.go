package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Flags after an argument are not ignored: the gateway refuses the
// argument instead of starting on the defaults (nothing is written).
func TestArgumentsAreNotIgnored(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	for _, tc := range []struct {
		args     []string
		code     int
		out, err string
	}{
		{args: []string{"start", "--state-dir", dir, "--endpoint", "192.0.2.1:51820"}, code: 2, err: `unexpected argument "start"`},
		{args: []string{"--state-dir", dir, "--endpoint", "192.0.2.1:51820", "version"}, code: 0, out: "cordon-gateway "},
		{args: []string{"--version"}, code: 0, out: "cordon-gateway "},
		{args: []string{"--state-dir", dir, "--endpoint", "192.0.2.1:51820", "--log-format", "xml"}, code: 2, err: "--log-format"},
		{args: []string{"--state-dir", dir}, code: 2, err: "--endpoint is required"},
		{args: []string{"--state-dir", dir, "--endpoint", "192.0.2.1:51820", "--cluster-listen", "0.0.0.0:7946"}, code: 2, err: "this gateway's own address"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stdout.String(), tc.out) || !strings.Contains(stderr.String(), tc.err) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
				tc.args, code, stdout.String(), stderr.String(), tc.code, tc.out, tc.err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("%q: the state directory was created (%v)", tc.args, err)
		}
	}
}
