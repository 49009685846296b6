package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/apitest"
	"github.com/cordonhq/cordon/cordonctl/internal/cli"
	"github.com/cordonhq/cordon/internal/oidctest"
	"github.com/cordonhq/cordon/pkg/adminapi"
)

const browserUserEnv = "CORDONCTL_TEST_BROWSER_USER"

// TestBrowserHelperProcess is the --browser command of TestAdminSignInIdP:
// this test binary run again, signing in at the test IdP as the user
// named in the environment, at the URL given as the last argument.
func TestBrowserHelperProcess(t *testing.T) {
	user := os.Getenv(browserUserEnv)
	if user == "" {
		t.Skip("the --browser helper of TestAdminSignInIdP")
	}
	if err := oidctest.Browser(user, "pw")(context.Background(), os.Args[len(os.Args)-1]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestAdminSignInIdP: admin create --idp makes an account without
// password or TOTP; login --admin NAME --idp IDP --browser CMD signs in
// through the IdP (the command plays the browser) and saves a token of
// the account's role; an IdP user without MFA is refused.
func TestAdminSignInIdP(t *testing.T) {
	idp, err := oidctest.Start(oidctest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	idp.AddUser(oidctest.User{Username: "ada", Password: "pw", MFA: true})
	idp.AddUser(oidctest.User{Username: "nomfa", Password: "pw"})
	h := newHarnessWith(t, apitest.Options{OIDCIssuer: idp.Issuer})

	out := h.ok("admin", "create", "ada", "--role", "auditor", "--idp", "test")
	if !strings.Contains(out, "cordonctl login --admin ada --idp test") || strings.Contains(out, "TOTP") {
		t.Fatalf("admin create --idp:\n%s", out)
	}
	h.ok("admin", "create", "nomfa", "--role", "auditor", "--idp", "test")
	h.fails(2, []string{"do not go together"}, "admin", "create", "x", "--role", "owner", "--idp", "test", "--password-file", "/dev/null")
	h.fails(2, []string{"--subject goes with --idp"}, "admin", "create", "x", "--role", "owner", "--subject", "s")
	if out := h.ok("admin", "list"); !strings.Contains(out, "idp:test (not yet bound)") {
		t.Errorf("admin list:\n%s", out)
	}

	delete(h.env, cli.EnvToken)
	h.fails(2, []string{"--idp goes with --admin"}, "login", "--idp", "test")
	h.fails(2, []string{"no --password-stdin"}, "login", "--admin", "ada", "--idp", "test", "--totp", "123456")
	browser := os.Args[0] + " -test.run=^TestBrowserHelperProcess$ --"
	t.Setenv(browserUserEnv, "ada")
	r := h.run("", "login", "--admin", "ada", "--idp", "test", "--browser", browser, "-o", "json")
	if r.code != 0 {
		t.Fatalf("login --admin ada --idp test: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	var got struct {
		Actor     string    `json:"actor"`
		Role      string    `json:"role"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.Actor != "admin:ada" || got.Role != "auditor" ||
		got.ExpiresAt.Sub(h.srv.Now()) != adminapi.DefaultAdminSessionTTL {
		t.Fatalf("login output %q: %+v %v", r.stdout, got, err)
	}
	if !strings.Contains(r.stderr, "Sign in with test in your browser") {
		t.Errorf("login did not show the URL on stderr:\n%s", r.stderr)
	}
	// The saved token is an auditor's: it reads the audit trail and may
	// not change anything.
	if out := h.ok("audit", "list"); !strings.Contains(out, "admin.login") {
		t.Errorf("audit list with the IdP admin's token:\n%s", out)
	}
	h.fails(5, []string{"network-admin"}, "segment", "create", "x", "--cidr", "10.9.0.0/24")

	t.Setenv(browserUserEnv, "nomfa")
	r = h.run("", "login", "--admin", "nomfa", "--idp", "test", "--browser", browser)
	if r.code != cli.ExitUnauthorized || !strings.Contains(r.stderr, "no second factor") {
		t.Fatalf("login without MFA at the IdP: %d\n%s", r.code, r.stderr)
	}
}
