package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/controller/apitest"
	"github.com/cordonhq/cordon/pkg/adminapi"
)

// Each kind of failure has its own exit code (exitcodes.go), as cordonctl's.
func TestExitCodes(t *testing.T) {
	srv := apitest.New(t, apitest.Options{})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, srv.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	admin, err := adminapi.New(srv.URL, srv.AdminToken, srv.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.CreateUser(t.Context(), &adminapi.CreateUserRequest{Name: "nurse", Password: "correct horse battery"}); err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("not her password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"unknown flag", []string{"--nope"}, exitUsage, "unknown flag"},
		{"bad log format", []string{"logout", "--log-format", "xml"}, exitUsage, "--log-format"},
		{"not signed in", []string{"logout", "--state-dir", state}, exitNotSignedIn, "cordon login"},
		{"wrong password", []string{"login", "--state-dir", state, "--controller", srv.URL, "--ca-cert", ca, "--user", "nurse",
			"--password-file", pwFile, "--totp", "123456"}, exitUnauthorized, ""},
		{"controller unreachable", []string{"login", "--state-dir", state, "--controller", "https://127.0.0.1:1", "--ca-cert", ca,
			"--user", "nurse", "--password-file", pwFile, "--totp", "123456"}, exitUnreachable, ""},
		{"version", []string{"--version"}, exitOK, ""},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(tc.args, &stdout, &stderr); code != tc.code || !strings.Contains(stderr.String(), tc.msg) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and %q", tc.name, code, stderr.String(), tc.code, tc.msg)
		}
	}
}
