package e2e

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
)

// TestAccessHelpdeskAdmin: an admin account with the helpdesk role signs
// in with cordonctl (password + TOTP, real binaries), cannot change
// policy, and ends the nurse's session, which cuts her open connection
// within 1 s; the audit trail names the helpdesk admin.
func TestAccessHelpdeskAdmin(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ehr := w.svcs["ehr"]
	w.waitReach(w.nurse, ehr, 15*time.Second)

	hd := w.adminCtl("hd", "helpdesk")
	if o, e, rc := hd("", "rule", "create", "x", "--group", "nurses", "--app", "ehr"); rc != 5 || !strings.Contains(e, "policy.write") {
		t.Errorf("helpdesk changing policy: exit %d, want 5 naming policy.write\n%s%s", rc, o, e)
	}
	w.cutAndRestore(ehr, "helpdesk: cordonctl session end --user nurse",
		func() {
			if o, e, rc := hd("", "session", "end", "--user", "nurse"); rc != 0 {
				t.Errorf("helpdesk session end: exit %d\n%s%s", rc, o, e)
			}
		},
		func() { w.login(w.nurse) }, time.Second)
	w.waitAudit("session.end by admin:hd", func(e auditEvent) bool {
		return e.Type == "session.end" && e.Actor == "admin:hd" && e.Details["user"] == "nurse"
	})
	w.waitAudit("the refused policy change", func(e auditEvent) bool {
		return e.Type == "admin.auth" && e.Actor == "admin:hd" && e.Details["reason"] == "forbidden: needs policy.write"
	})
}

// adminCtl creates an admin account with role and signs it in with
// cordonctl of its own (no token file, its own config; password + TOTP,
// as a person at their workstation), and returns a runner of that
// cordonctl.
func (w *world) adminCtl(name, role string) func(stdin string, args ...string) (string, string, int) {
	t := w.t
	t.Helper()
	pw := name + " passphrase for e2e"
	out := w.mustCtl(pw+"\n", "admin", "create", name, "--role", role, "--password-stdin")
	m := regexp.MustCompile(`TOTP secret: ([A-Z2-7]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("admin create printed no TOTP secret:\n%s", out)
	}
	home := t.TempDir()
	ctl := func(stdin string, args ...string) (string, string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		env := []string{
			"CORDON_CONTROLLER=" + controllerURL, "CORDON_CA_CERT=" + w.caFile(),
			"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, "config"),
		}
		return run(ctx, stdin, env, "ip", append([]string{"netns", "exec", w.ctl.name, bin("cordonctl")}, args...)...)
	}
	code, err := totp.GenerateCode(m[1], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if o, e, rc := ctl(pw+"\n", "login", "--admin", name, "--password-stdin", "--totp", code); rc != 0 || !strings.Contains(o, "role "+role) {
		t.Fatalf("cordonctl login --admin %s: exit %d\n%s%s", name, rc, o, e)
	}
	return ctl
}
