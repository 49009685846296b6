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

	const pw = "helpdesk passphrase for e2e"
	out := w.mustCtl(pw+"\n", "admin", "create", "hd", "--role", "helpdesk", "--password-stdin")
	m := regexp.MustCompile(`TOTP secret: ([A-Z2-7]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("admin create printed no TOTP secret:\n%s", out)
	}
	// The helpdesk admin's own cordonctl: no token file, its own config.
	home := t.TempDir()
	hd := func(stdin string, args ...string) (string, string, int) {
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
	if o, e, rc := hd(pw+"\n", "login", "--admin", "hd", "--password-stdin", "--totp", code); rc != 0 || !strings.Contains(o, "role helpdesk") {
		t.Fatalf("cordonctl login --admin hd: exit %d\n%s%s", rc, o, e)
	}
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
