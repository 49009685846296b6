package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The flag package stops at the first argument: "cordon-controller
// version --data-dir X --listen Y" used to start a controller on the
// defaults (all interfaces, /var/lib/cordon-controller). Arguments are
// refused or, for "version", answered; nothing starts and nothing is
// written.
func TestArgumentsAreNotIgnored(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	for _, tc := range []struct {
		args     []string
		code     int
		out, err string
	}{
		{args: []string{"version", "--data-dir", dir, "--listen", "127.0.0.1:0"}, code: 2, err: `unexpected argument "version"`},
		{args: []string{"--data-dir", dir, "serve"}, code: 2, err: `unexpected argument "serve"`},
		{args: []string{"version"}, code: 0, out: "cordon-controller "},
		{args: []string{"--version"}, code: 0, out: "cordon-controller "},
		{args: []string{"--data-dir", dir, "--log-format", "xml"}, code: 2, err: "--log-format"},
		{args: []string{"--data-dir", dir, "--log-level", "loud"}, code: 2, err: "--log-level"},
		{args: []string{"--no-such-flag"}, code: 2, err: "no-such-flag"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stdout.String(), tc.out) || !strings.Contains(stderr.String(), tc.err) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
				tc.args, code, stdout.String(), stderr.String(), tc.code, tc.out, tc.err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("%q: the data directory was created (%v)", tc.args, err)
		}
	}
}
