package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/cordonhq/cordon/cordonctl/internal/cli"
	"github.com/cordonhq/cordon/pkg/adminapi"
)

var totpSecretRE = regexp.MustCompile(`TOTP secret: ([A-Z2-7]+)`)

func (h *harness) totp(secret string, at time.Time) string {
	h.t.Helper()
	c, err := totp.GenerateCode(secret, at)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// TestAdminSignIn: admin create prints the TOTP enrolment once; login
// --admin saves a short-lived token (0600) that later commands use, with
// the role's limits (403 exits 5 naming the permission), until it expires.
func TestAdminSignIn(t *testing.T) {
	h := newHarness(t)
	r := h.run("helpdesk passphrase 1\n", "admin", "create", "hd1", "--role", "helpdesk", "--password-stdin")
	m := totpSecretRE.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil || !strings.Contains(r.stdout, "otpauth://totp/") || !strings.Contains(r.stdout, "█") ||
		!strings.Contains(r.stdout, "cordonctl login --admin hd1") {
		t.Fatalf("admin create: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	secret := m[1]
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte("another long password\n"), 0o600)
	h.fails(2, []string{"unknown role", "network-admin"}, "admin", "create", "x", "--role", "root", "--password-file", pwFile)
	h.fails(2, []string{`required flag(s) "role"`}, "admin", "create", "x")
	if out := h.ok("admin", "list"); !strings.Contains(out, "hd1") || !strings.Contains(out, "helpdesk") {
		t.Errorf("admin list:\n%s", out)
	}

	// Sign in as hd1: no token in the environment; the saved token is used.
	delete(h.env, cli.EnvToken)
	h.fails(2, []string{"no terminal", "--password-stdin"}, "login", "--admin", "hd1", "--totp", "123456")
	h.fails(2, []string{"go with --admin"}, "login", "--totp", "123456")
	r = h.run("helpdesk passphrase 1\n", "login", "--admin", "hd1", "--password-stdin", "--totp", h.totp(secret, h.srv.Now()))
	if r.code != 0 || !strings.Contains(r.stdout, "as admin hd1 (role helpdesk) until") {
		t.Fatalf("login --admin: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	path := filepath.Join(h.env["XDG_CONFIG_HOME"], "cordon", "cordonctl.json")
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("saved settings: %v %v", fi, err)
	}
	// Plain login (no --admin) now checks and keeps the saved sign-in.
	if out := h.ok("login"); !strings.Contains(out, "admin:hd1") {
		t.Errorf("login with the saved token: %q", out)
	}
	c, _ := adminapi.New(h.srv.URL, savedToken(t, path), h.srv.CAPEM)
	defer c.Close()
	if w, err := c.WhoAmI(t.Context()); err != nil || w.Role != "helpdesk" || w.Actor != "admin:hd1" || w.ExpiresAt.IsZero() {
		t.Fatalf("whoami %+v %v", w, err)
	}
	h.ok("session", "list")
	h.fails(5, []string{"policy.write", "owner or network-admin", "role helpdesk"}, "segment", "create", "x", "--cidr", "10.0.0.0/24")
	h.fails(5, []string{"admins.read"}, "admin", "list")

	// Wrong code: 5, nothing saved over the good token.
	h.srv.Advance(time.Minute)
	r = h.run("helpdesk passphrase 1\n", "login", "--admin", "hd1", "--password-stdin", "--totp", "000000")
	if r.code != 5 || !strings.Contains(r.stderr, "admin sign-in failed") {
		t.Fatalf("wrong code: %d %s", r.code, r.stderr)
	}
	if savedToken(t, path) == "" {
		t.Fatal("failed sign-in removed the saved token")
	}

	// Expiry: after 8 hours the token stops working, and says what to do.
	h.srv.Advance(8 * time.Hour)
	h.fails(5, []string{"expired", "cordonctl login --admin"}, "session", "list")

	// Sign in again, then sign out: the token is revoked and forgotten.
	h.srv.Advance(time.Minute)
	h.run("helpdesk passphrase 1\n", "login", "--admin", "hd1", "--password-stdin", "--totp", h.totp(secret, h.srv.Now()))
	tok := savedToken(t, path)
	h.ok("logout")
	if savedToken(t, path) != "" {
		t.Fatal("logout left the token saved")
	}
	c2, _ := adminapi.New(h.srv.URL, tok, h.srv.CAPEM)
	defer c2.Close()
	if _, err := c2.WhoAmI(t.Context()); !adminapi.IsCode(err, adminapi.CodeUnauthorized) {
		t.Fatalf("token after logout: %v", err)
	}
}

func savedToken(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.Token
}

// TestAdminTokens: token create prints only the secret (once), list never
// shows it, the token works within its scope, revoke stops it.
func TestAdminTokens(t *testing.T) {
	h := newHarness(t)
	r := h.run("", "token", "create", "--name", "siem", "--role", "auditor", "--scope", "audit.read", "--ttl", "30d")
	tok := strings.TrimSpace(r.stdout)
	if r.code != 0 || strings.Count(r.stdout, "\n") != 1 || !strings.HasPrefix(tok, "cordon-admin-") || !strings.Contains(r.stderr, "shown only once") {
		t.Fatalf("token create: %d %q %q", r.code, r.stdout, r.stderr)
	}
	h.fails(2, []string{`required flag(s) "ttl"`}, "token", "create", "--name", "x", "--role", "auditor")
	h.fails(2, []string{"at most 90d"}, "token", "create", "--name", "x", "--role", "auditor", "--ttl", "365d")
	out := h.ok("token", "list")
	if strings.Contains(out, tok) || !strings.Contains(out, "siem") || !strings.Contains(out, "audit.read") || !strings.Contains(out, "admin:root") {
		t.Errorf("token list:\n%s", out)
	}
	var toks []adminapi.AdminToken
	if err := json.Unmarshal([]byte(h.ok("token", "list", "-o", "json")), &toks); err != nil {
		t.Fatal(err)
	}
	var id string
	for _, x := range toks {
		if x.Name == "siem" {
			id = x.ID
		}
	}
	if st := cell(out, id, "STATE"); st != "valid" { // a 30-day token, on the controller's clock
		t.Errorf("token %s state %q, want valid:\n%s", id, st, out)
	}
	h.ok("audit", "list", "--token", tok)
	h.fails(5, []string{"read"}, "user", "list", "--token", tok)
	if out := h.ok("token", "revoke", id); !strings.Contains(out, "Revoked") {
		t.Errorf("revoke output %q", out)
	}
	h.fails(5, []string{"revoked"}, "audit", "list", "--token", tok)
	h.fails(3, []string{"not found"}, "token", "revoke", id)
}

// TestRecoveryCodesCLI: user create prints ten codes once; regenerate
// prints ten new ones.
func TestRecoveryCodesCLI(t *testing.T) {
	h := newHarness(t)
	codeRE := regexp.MustCompile(`(?m)^  ([a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4})$`)
	r := h.run("correct horse battery staple\n", "user", "create", "nurse", "--password-stdin")
	first := codeRE.FindAllStringSubmatch(r.stdout, -1)
	if r.code != 0 || len(first) != 10 || !strings.Contains(r.stdout, "cordon login --recovery-code") {
		t.Fatalf("user create: %d %d codes\n%s", r.code, len(first), r.stdout)
	}
	out := h.ok("user", "recovery-codes", "regenerate", "nurse")
	second := codeRE.FindAllStringSubmatch(out, -1)
	if len(second) != 10 || second[0][1] == first[0][1] || !strings.Contains(out, "void") {
		t.Fatalf("regenerate:\n%s", out)
	}
	h.fails(3, []string{"not found"}, "user", "recovery-codes", "regenerate", "ghost")
}
