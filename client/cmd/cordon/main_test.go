package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/controller/apitest"
	"github.com/cordonhq/cordon/internal/gendocs"
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

// --help shows the state directory of the user running cordon; the manual
// pages, written on the build machine, show the rule instead of the
// builder's directory.
func TestStateDirDefault(t *testing.T) {
	for _, tc := range []struct {
		euid      int
		xdg, home string
		want      string
	}{
		{0, "/home/x/.state", "/root", "/var/lib/cordon"},
		{1000, "/home/nurse/.state", "/home/nurse", "/home/nurse/.state/cordon"},
		{1000, "", "/home/nurse", "/home/nurse/.local/state/cordon"},
		{1000, "", "", ".cordon"},
	} {
		if got := stateDirFor(tc.euid, tc.xdg, tc.home); got != tc.want {
			t.Errorf("stateDirFor(%d, %q, %q) = %q, want %q", tc.euid, tc.xdg, tc.home, got, tc.want)
		}
	}

	t.Setenv("CORDON_STATE_DIR", "")
	var root *cobra.Command
	rootHooks = append(rootHooks, func(r *cobra.Command) { root = r })
	t.Cleanup(func() { rootHooks = rootHooks[:len(rootHooks)-1] })
	var stdout, stderr bytes.Buffer
	if code := run([]string{"login", "--help"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("--help: exit %d, %s", code, stderr.String())
	}
	if want := `(default "` + defaultStateDir() + `")`; !strings.Contains(stdout.String(), want) {
		t.Errorf("--help lacks %s:\n%s", want, stdout.String())
	}

	forManPages(root)
	dir := t.TempDir()
	if err := gendocs.WriteCobra(root, dir); err != nil {
		t.Fatal(err)
	}
	page, err := os.ReadFile(filepath.Join(dir, "cordon-login.1"))
	if err != nil {
		t.Fatal(err)
	}
	if p := string(page); strings.Contains(p, `="`+defaultStateDir()+`"`) || !strings.Contains(p, `--state-dir\fP="`+manStateDir+`"`) {
		t.Errorf("the man page shows the builder's %s or lacks the rule:\n%s", defaultStateDir(), p)
	}
}

// cordon login --break-glass: the flags are checked before anything is
// sent (a justification, one code, no TOTP); an emergency account signs
// in only with them, and is told it was alerted.
func TestBreakGlassLogin(t *testing.T) {
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
	const pw = "a sealed passphrase for the ED"
	acct, err := admin.CreateBreakGlass(t.Context(), &adminapi.CreateBreakGlassRequest{Name: "er-1", Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"login", "--state-dir", t.TempDir(), "--controller", srv.URL, "--ca-cert", ca, "--user", "er-1", "--password-file", pwFile}
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"justification alone", []string{"--justification", "x", "--totp", "123456"}, exitError, "only for --break-glass"},
		{"no justification", []string{"--break-glass", "--recovery-code", acct.Codes[0]}, exitError, "--justification"},
		{"blank justification", []string{"--break-glass", "--justification", "  ", "--recovery-code", acct.Codes[0]}, exitError, "--justification"},
		{"too long", []string{"--break-glass", "--justification", strings.Repeat("x", 1001), "--recovery-code", acct.Codes[0]}, exitError, "at most 1000"},
		{"totp", []string{"--break-glass", "--justification", "x", "--totp", "123456"}, exitError, "not --totp"},
		{"ordinary sign-in", []string{"--recovery-code", acct.Codes[0]}, exitUnauthorized, "--break-glass"},
		{"break-glass", []string{"--break-glass", "--justification", "ED downtime, IdP down", "--recovery-code", acct.Codes[0]}, exitOK, ""},
	} {
		var stdout, stderr bytes.Buffer
		code := run(append(slices.Clone(base), tc.args...), &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.msg) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and %q", tc.name, code, stderr.String(), tc.code, tc.msg)
		}
		if tc.code == exitOK && !strings.Contains(stdout.String(), "BREAK-GLASS") {
			t.Errorf("%s: stdout %q does not say the use was alerted", tc.name, stdout.String())
		}
	}
}
