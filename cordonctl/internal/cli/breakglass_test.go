package cli_test

import (
	"strings"
	"testing"

	"github.com/cordonhq/cordon/cordonctl/internal/cli"
)

// breakglass create, list, show and review, and app create --emergency:
// the codes are printed once with what to do with them; a short password
// is refused; a use shows open until two different admins reviewed it;
// the same admin twice and a missing comment are refused.
func TestBreakGlass(t *testing.T) {
	h := newHarness(t)
	short := h.run("too short pw\n", "breakglass", "create", "er-1", "--password-stdin")
	if short.code != cli.ExitUsage || !strings.Contains(short.stderr, "at least 16") {
		t.Fatalf("short password: exit %d, %s", short.code, short.stderr)
	}
	r := h.run("a sealed passphrase for the ED\n", "breakglass", "create", "er-1", "--password-stdin")
	out := r.stdout
	if !strings.Contains(out, "Created emergency account er-1") || !strings.Contains(out, "seal them in an envelope") ||
		strings.Count(out, "\n  ") != 10 {
		t.Fatalf("breakglass create output:\n%s", out)
	}
	if out := h.ok("user", "list"); !strings.Contains(out, "BREAK-GLASS") || !strings.Contains(out, "yes") {
		t.Errorf("user list does not mark the emergency account:\n%s", out)
	}
	h.ok("segment", "create", "clinical", "--cidr", "10.20.0.0/24")
	h.ok("app", "create", "ehr", "--segment", "clinical", "--dns-name", "ehr.hosp.internal", "--address", "10.20.0.5", "--port", "443", "--emergency")
	if out := h.ok("app", "list"); !strings.Contains(out, "EMERGENCY") || !strings.Contains(out, "yes") {
		t.Errorf("app list does not mark the emergency app:\n%s", out)
	}

	if err := h.srv.AddBreakGlassUse(t.Context(), "bg-0123456789", "er-1", "ED downtime, IdP down"); err != nil {
		t.Fatal(err)
	}
	if out := h.ok("breakglass", "list"); !strings.Contains(out, "bg-0123456789") || !strings.Contains(out, "open") || !strings.Contains(out, "0/2") {
		t.Errorf("breakglass list:\n%s", out)
	}
	h.fails(cli.ExitUsage, []string{"--comment is required"}, "breakglass", "review", "bg-0123456789")
	h.fails(cli.ExitNotFound, []string{"bg-nope"}, "breakglass", "review", "bg-nope", "--comment", "x")
	out = h.ok("breakglass", "review", "bg-0123456789", "--comment", "matches the downtime log")
	if !strings.Contains(out, "State:         open") || !strings.Contains(out, "matches the downtime log") {
		t.Errorf("first review:\n%s", out)
	}
	h.fails(cli.ExitConflict, []string{"a different admin"}, "breakglass", "review", "bg-0123456789", "--comment", "again")
	h.env[cli.EnvToken] = strings.TrimSpace(h.ok("token", "create", "--name", "aud", "--role", "auditor", "--ttl", "1d"))
	if out := h.ok("breakglass", "review", "bg-0123456789", "--comment", "agreed"); !strings.Contains(out, "State:         closed") {
		t.Errorf("second review:\n%s", out)
	}
	if out := h.ok("breakglass", "show", "bg-0123456789"); strings.Count(out, "Reviewed:") != 2 || !strings.Contains(out, "Justification: ED downtime, IdP down") {
		t.Errorf("breakglass show:\n%s", out)
	}
}
