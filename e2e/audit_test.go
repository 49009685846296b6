package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// auditEvent is one record of 'cordonctl audit list -o json'.
type auditEvent struct {
	Seq     int64             `json:"seq"`
	Time    time.Time         `json:"time"`
	Type    string            `json:"type"`
	Actor   string            `json:"actor"`
	Outcome string            `json:"outcome"`
	Subject string            `json:"subject"`
	Details map[string]string `json:"details"`
}

func (e auditEvent) String() string {
	return fmt.Sprintf("#%d %s actor=%s outcome=%s subject=%s %v", e.Seq, e.Type, e.Actor, e.Outcome, e.Subject, e.Details)
}

// audit lists audit events (newest first) with extra cordonctl flags.
func (w *world) audit(flags ...string) []auditEvent {
	w.t.Helper()
	var evs []auditEvent
	w.ctlJSON(&evs, append([]string{"audit", "list"}, flags...)...)
	return evs
}

// waitAudit polls the audit trail until an event matches, and returns it.
// Flow events reach the controller in batches, so they take a moment.
func (w *world) waitAudit(what string, match func(auditEvent) bool) auditEvent {
	w.t.Helper()
	var found auditEvent
	var last []auditEvent
	_, err := poll(10*time.Second, 200*time.Millisecond, func() error {
		last = w.audit("--limit", "1000")
		for _, e := range last {
			if match(e) {
				found = e
				return nil
			}
		}
		return fmt.Errorf("not yet")
	})
	if err != nil {
		var b strings.Builder
		for _, e := range last {
			if len(last) > 60 && !strings.HasPrefix(e.Type, "flow.") {
				continue
			}
			fmt.Fprintln(&b, e)
		}
		w.t.Fatalf("no audit event for %s within 10s; audit trail:\n%s", what, b.String())
	}
	return found
}

// The audit trail records the allowed flow (with user and rule), the
// denied one, the logins, the enrollments and every admin change; the type
// and limit filters work.
func TestAuditTrail(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.waitReach(w.nurse, w.svcs["ehr"], 15*time.Second)
	w.unreachable(w.nurse, w.svcs["ehr-admin"]) // in the tunnel's AllowedIPs, denied by the gateway
	st, err := w.nurse.status()
	if err != nil {
		t.Fatal(err)
	}

	allow := w.waitAudit("flow.allow nurse → ehr", func(e auditEvent) bool {
		return e.Type == "flow.allow" && e.Details["dst"] == ehrAddr
	})
	t.Logf("allow: %v", allow)
	for k, want := range map[string]string{"user": "nurse", "rule": ruleName, "proto": "tcp", "device": st.DeviceID} {
		if got := allow.Details[k]; got != want {
			t.Errorf("flow.allow %s = %q, want %q (%v)", k, got, want, allow)
		}
	}
	if allow.Subject != "ehr" {
		t.Errorf("flow.allow subject = %q, want the app name ehr", allow.Subject)
	}
	if !strings.HasPrefix(allow.Details["src"], st.OverlayAddr+":") {
		t.Errorf("flow.allow src = %q, want the nurse's overlay address %s", allow.Details["src"], st.OverlayAddr)
	}

	deny := w.waitAudit("flow.deny nurse → ehr:8080", func(e auditEvent) bool {
		return e.Type == "flow.deny" && e.Details["dst"] == ehrAdminAddr
	})
	t.Logf("deny: %v", deny)
	if deny.Details["user"] != "nurse" || deny.Outcome != "deny" {
		t.Errorf("flow.deny: want user nurse, outcome deny: %v", deny)
	}
	if r := deny.Details["rule"]; r != "" {
		t.Errorf("flow.deny names rule %q; no rule allowed it", r)
	}

	// Search by key through the real controller, whose search indexer
	// runs: every record returned matches, and the flows are found (the
	// denied one matched no app: its subject, the app key, is the
	// destination).
	search := func(want auditEvent, match func(auditEvent) bool, flags ...string) {
		t.Helper()
		var found struct {
			Events []auditEvent `json:"events"`
		}
		w.ctlJSON(&found, append([]string{"audit", "search", "--all"}, flags...)...)
		has := false
		for _, e := range found.Events {
			has = has || e.Seq == want.Seq
			if !match(e) {
				t.Errorf("audit search %v returned %v", flags, e)
			}
		}
		if !has {
			t.Errorf("audit search %v: %d records, not %v", flags, len(found.Events), want)
		}
	}
	search(allow, func(e auditEvent) bool { return e.Details["user"] == "nurse" && e.Subject == "ehr" }, "--user", "nurse", "--app", "ehr")
	search(deny, func(e auditEvent) bool { return e.Details["user"] == "nurse" && e.Type == "flow.deny" }, "--user", "nurse", "--type", "flow.deny")
	search(allow, func(e auditEvent) bool {
		return e.Details["device"] == st.DeviceID || e.Subject == st.DeviceID || strings.HasSuffix(e.Actor, st.DeviceID)
	},
		"--device", st.DeviceID)

	// A wrong password from the clerk's device: refused, and recorded.
	out, errOut, rc := w.clerk.cordon("not-the-password-at-all\n", "login", "--controller", controllerURL,
		"--ca-cert", w.caFile(), "--user", "clerk", "--password-stdin", "--totp", "000000")
	if rc == 0 {
		t.Fatalf("cordon login with a wrong password succeeded:\n%s%s", out, errOut)
	}
	w.waitAudit("failed auth.login for clerk", func(e auditEvent) bool {
		return e.Type == "auth.login" && e.Subject == "clerk" && e.Outcome == "failure"
	})

	flows := w.audit("--type", "flow.", "--limit", "1000")
	if len(flows) == 0 {
		t.Error("audit list --type flow.: empty")
	}
	for _, e := range flows {
		if !strings.HasPrefix(e.Type, "flow.") {
			t.Errorf("audit list --type flow. returned %v", e)
		}
	}

	all := w.audit("--limit", "1000")
	has := func(what string, match func(auditEvent) bool) {
		t.Helper()
		for _, e := range all {
			if match(e) {
				return
			}
		}
		t.Errorf("audit trail has no %s", what)
	}
	for _, u := range []string{"nurse", "clerk"} {
		has("successful auth.login for "+u, func(e auditEvent) bool {
			return e.Type == "auth.login" && e.Subject == u && e.Outcome == "success"
		})
	}
	has("enroll.gateway for "+gwName, func(e auditEvent) bool { return e.Type == "enroll.gateway" && e.Outcome == "success" })
	has("enroll.device for nurse", func(e auditEvent) bool { return e.Type == "enroll.device" && e.Subject == st.DeviceID })
	for _, typ := range []string{
		"admin.segment.create", "admin.app.create", "admin.user.create", "admin.group.create",
		"admin.group.add_member", "admin.rule.create", "admin.gateway_token.create",
	} {
		has(typ+" by an admin", func(e auditEvent) bool {
			return e.Type == typ && strings.HasPrefix(e.Actor, "admin:") && e.Outcome == "success"
		})
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq >= all[i-1].Seq {
			t.Errorf("audit list not newest first: #%d after #%d", all[i].Seq, all[i-1].Seq)
			break
		}
	}
	if few := w.audit("--limit", "3"); len(few) != 3 || few[0].Seq < all[0].Seq {
		t.Errorf("audit list --limit 3: got %d events starting at #%d, want the 3 newest (from #%d)", len(few), seqOf(few), all[0].Seq)
	}
}

func seqOf(evs []auditEvent) int64 {
	if len(evs) == 0 {
		return -1
	}
	return evs[0].Seq
}
