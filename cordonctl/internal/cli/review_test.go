package cli_test

import (
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/cordonctl/internal/cli"
)

// review start, show, decide, list and close: a reviewer admin signs in,
// decides, and cannot do anything else; the owner opens and closes;
// each command says what it did and bad input exits with a usage error.
func TestReviewCLI(t *testing.T) {
	h := newHarness(t)
	h.ok("segment", "create", "clinical", "--cidr", "10.20.0.0/24")
	h.ok("app", "create", "ehr", "--segment", "clinical", "--dns-name", "ehr.hosp.internal", "--address", "10.20.0.10",
		"--proto", "tcp", "--port", "443", "--class", "phi")
	h.ok("group", "create", "clinicians")
	for _, u := range []string{"nurse", "locum"} {
		h.run("correct horse battery staple\n", "user", "create", u, "--password-stdin")
		h.ok("group", "add-member", "clinicians", u)
	}
	h.ok("rule", "create", "clinicians-ehr", "--group", "clinicians", "--app", "ehr")
	h.ok("user", "disable", "locum")
	r := h.run("reviewer passphrase 1\n", "admin", "create", "rv", "--role", "reviewer", "--password-stdin")
	m := totpSecretRE.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		t.Fatalf("admin create rv --role reviewer: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	due := h.srv.Now().AddDate(0, 0, 2).Format(time.DateOnly)
	h.fails(cli.ExitUsage, []string{"--scope and --due are required"}, "review", "start", "--scope", "phi")
	h.fails(cli.ExitUsage, []string{"--due", "2026-03-31"}, "review", "start", "--scope", "phi", "--due", "next week")
	h.fails(cli.ExitUsage, []string{"phi, app:NAME"}, "review", "start", "--scope", "everything", "--due", "2099-01-01")
	out := h.ok("review", "start", "--scope", "phi", "--due", due, "--reviewer", "rv", "--name", "Q1 PHI")
	if !strings.Contains(out, "Q1 PHI") || !strings.Contains(out, "State:     open") || !strings.Contains(out, "orphaned") {
		t.Fatalf("review start:\n%s", out)
	}
	id := strings.Fields(strings.TrimPrefix(strings.SplitN(out, "\n", 2)[0], "Campaign:"))[0]
	locumLine := ""
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == "user:locum" {
			locumLine = f[0]
		}
	}
	if locumLine == "" {
		t.Fatalf("no line for the locum:\n%s", out)
	}

	// The reviewer signs in and decides; nothing else is theirs.
	owner := h.env[cli.EnvToken]
	delete(h.env, cli.EnvToken)
	if r := h.run("reviewer passphrase 1\n", "login", "--admin", "rv", "--password-stdin", "--totp", h.totp(m[1], h.srv.Now())); r.code != 0 {
		t.Fatalf("login --admin rv: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	h.fails(cli.ExitUsage, []string{"--comment is required"}, "review", "decide", id, locumLine, "revoke")
	h.fails(cli.ExitUsage, []string{"line number"}, "review", "decide", id, "first", "revoke", "--comment", "x")
	h.fails(cli.ExitUnauthorized, []string{"reviews.manage"}, "review", "close", id)
	h.fails(cli.ExitUnauthorized, []string{"needs permission read"}, "user", "list")
	if out := h.ok("review", "decide", id, locumLine, "revoke", "--comment", "contract ended"); !strings.Contains(out, "revoke by admin:rv; applies when the campaign closes") {
		t.Errorf("review decide:\n%s", out)
	}
	if out := h.ok("review", "show", id); !strings.Contains(out, "contract ended") || !strings.Contains(out, "1 undecided") {
		t.Errorf("review show:\n%s", out)
	}

	h.env[cli.EnvToken] = owner
	if out := h.ok("review", "list"); !strings.Contains(out, id) || !strings.Contains(out, "open") || strings.Contains(out, "Overdue") {
		t.Errorf("review list:\n%s", out)
	}
	// Past due: the campaign is overdue and list names its undecided line.
	h.srv.Advance(72 * time.Hour)
	if out := h.ok("review", "list"); !strings.Contains(out, "overdue") || !strings.Contains(out, "Overdue since") ||
		!strings.Contains(out, "user:nurse") || strings.Contains(out, "user:locum") {
		t.Errorf("review list past due:\n%s", out)
	}
	if out := h.ok("review", "close", id); !strings.Contains(out, "State:     closed") || !strings.Contains(out, "revoke (applied)") {
		t.Errorf("review close:\n%s", out)
	}
	if out := h.ok("group", "show", "clinicians"); strings.Contains(out, "locum") {
		t.Errorf("the locum is still a clinician after the close:\n%s", out)
	}
	h.fails(cli.ExitConflict, []string{"closed"}, "review", "close", id)
}
