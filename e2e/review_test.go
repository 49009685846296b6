package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// reviewCampaign is what 'cordonctl review ... -o json' prints.
type reviewCampaign struct {
	ID    string `json:"id"`
	State string `json:"state"`
	Lines []struct {
		N        int      `json:"line"`
		User     string   `json:"user"`
		App      string   `json:"app"`
		Flags    []string `json:"flags"`
		Decision string   `json:"decision"`
		Evidence struct {
			LastUse   time.Time `json:"last_use"`
			UserState string    `json:"user_state"`
		} `json:"evidence"`
	} `json:"lines"`
}

// TestAccessReview: a campaign over the PHI apps, opened by the owner,
// reviewed by an admin with the reviewer role. Three clinicians reach
// ehr through group clinicians: the nurse, who uses it; the clerk, who
// never did before the campaign opened (stale); and a locum whose account
// is disabled (orphaned). The reviewer keeps the nurse and revokes the
// other two; at the close the clerk's open connection (opened after the
// campaign started) is cut and new ones refused within 1 s, the nurse's
// stays, the locum leaves the group too, and the campaign record is in
// the audit log: 'cordonctl audit verify' covers it and 'audit search'
// finds it.
func TestAccessReview(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ehr := w.svcs["ehr"]
	w.waitReach(w.nurse, ehr, 15*time.Second)
	w.waitAudit("flow.allow of the nurse to ehr", func(e auditEvent) bool {
		return e.Type == "flow.allow" && e.Subject == "ehr" && e.Details["user"] == "nurse"
	})
	w.mustCtl("", "group", "add-member", groupName, "clerk")
	w.createUser("locum", "correct horse locum")
	w.mustCtl("", "group", "add-member", groupName, "locum")
	w.mustCtl("", "user", "disable", "locum")
	rv := w.adminCtl("rv", "reviewer")

	t.Log("---- the owner opens the campaign ----")
	var c reviewCampaign
	w.ctlJSON(&c, "review", "start", "--scope", "phi", "--due", time.Now().AddDate(0, 0, 30).Format(time.DateOnly),
		"--reviewer", "rv", "--name", "e2e PHI review")
	lines := map[string]int{}
	for _, l := range c.Lines {
		if l.App != "ehr" {
			t.Errorf("line %d is about %s: only ehr is a PHI app anyone reaches", l.N, l.App)
		}
		lines[l.User] = l.N
		stale, orphaned := slices.Contains(l.Flags, "stale"), slices.Contains(l.Flags, "orphaned")
		switch l.User {
		case "nurse":
			if stale || orphaned || l.Evidence.LastUse.IsZero() {
				t.Errorf("nurse's line %+v: want her last use, not stale or orphaned", l)
			}
		case "clerk":
			if !stale || orphaned {
				t.Errorf("clerk's line %+v: want stale (never used ehr)", l)
			}
		case "locum":
			if !orphaned || l.Evidence.UserState != "disabled" {
				t.Errorf("locum's line %+v: want orphaned (disabled)", l)
			}
		default:
			t.Errorf("unexpected line %+v", l)
		}
	}
	if len(lines) != 3 {
		t.Fatalf("campaign lines for %v, want nurse, clerk and locum", lines)
	}

	t.Log("---- the reviewer decides; the reviewer role does nothing else ----")
	if o, e, rc := rv("", "group", "remove-member", groupName, "clerk"); rc != 5 || !strings.Contains(e, "policy.write") {
		t.Errorf("reviewer editing a group: exit %d, want 5\n%s%s", rc, o, e)
	}
	decide := func(user, decision, comment string) {
		t.Helper()
		if o, e, rc := rv("", "review", "decide", c.ID, strconv.Itoa(lines[user]), decision, "--comment", comment); rc != 0 {
			t.Fatalf("review decide %s %s: exit %d\n%s%s", user, decision, rc, o, e)
		}
	}
	decide("nurse", "keep", "ward nurse, uses the EHR daily")
	decide("clerk", "revoke", "front desk: no clinical need")
	decide("locum", "revoke", "contract ended")
	if o, e, rc := rv("", "review", "close", c.ID); rc != 5 || !strings.Contains(e, "reviews.manage") {
		t.Errorf("reviewer closing: exit %d, want 5\n%s%s", rc, o, e)
	}

	t.Log("---- the clerk connects after the campaign opened; the nurse too ----")
	w.waitReach(w.clerk, ehr, 15*time.Second)
	clerkConn, nurseConn := w.ehrConn(w.clerk), w.ehrConn(w.nurse)

	t.Log("---- the owner closes: the revocations apply in one step ----")
	var closed reviewCampaign
	w.cutWithin(w.clerk, clerkConn, "cordonctl review close", func() { w.ctlJSON(&closed, "review", "close", c.ID) }, time.Second)
	if err := nurseConn.probe(2 * time.Second); err != nil {
		t.Errorf("the nurse's connection (kept) stopped at the close: %v", err)
	}
	w.unreachable(w.clerk, ehr)
	if closed.State != "closed" {
		t.Errorf("campaign after the close: state %q", closed.State)
	}
	if out := w.mustCtl("", "group", "show", groupName); strings.Contains(out, "clerk") || strings.Contains(out, "locum") || !strings.Contains(out, "nurse") {
		t.Errorf("group %s after the close:\n%s", groupName, out)
	}

	t.Log("---- the campaign record is in the verified audit log ----")
	rec := w.waitAudit("admin.review.close", func(e auditEvent) bool {
		return e.Type == "admin.review.close" && e.Subject == c.ID
	})
	var decisions []struct {
		Who, Decision, By string
	}
	if err := json.Unmarshal([]byte(rec.Details["decisions"]), &decisions); err != nil || len(decisions) != 3 {
		t.Fatalf("campaign record decisions %q: %v", rec.Details["decisions"], err)
	}
	for _, d := range decisions {
		if d.By != "admin:rv" {
			t.Errorf("decision %+v not by the reviewer", d)
		}
	}
	if rec.Details["revoked"] != "2" || rec.Details["kept"] != "1" || !strings.HasPrefix(rec.Actor, "admin:") || rec.Actor == "admin:rv" {
		t.Errorf("campaign record %v", rec)
	}
	var found struct {
		Events []auditEvent `json:"events"`
	}
	w.ctlJSON(&found, "audit", "search", "--all", "--type", "admin.review.close")
	if !slices.ContainsFunc(found.Events, func(e auditEvent) bool { return e.Seq == rec.Seq }) {
		t.Errorf("audit search --type admin.review.close did not find record %d", rec.Seq)
	}
	waitFor(t, 30*time.Second, "audit verify to cover the campaign record", func() error {
		out, errOut, rc := w.cordonctl("", "audit", "verify")
		if rc != 0 {
			return fmt.Errorf("audit verify: exit %d\n%s%s", rc, out, errOut)
		}
		if n := verifiedRecords(t, out); n < rec.Seq {
			return fmt.Errorf("verified %d records, the campaign record is %d", n, rec.Seq)
		}
		return nil
	})
}

// ehrConn opens a long-lived connection from c to ehr, checks that it
// echoes, and closes it at the end of the test.
func (w *world) ehrConn(c *client) *echoConn {
	t := w.t
	t.Helper()
	ec, err := openEcho(c.ns, ehrAddr)
	if err != nil {
		t.Fatalf("%s: open a long-lived connection to ehr: %v", c.user, err)
	}
	t.Cleanup(func() { ec.Close() })
	if err := ec.probe(2 * time.Second); err != nil {
		t.Fatalf("%s: echo over the new connection to ehr: %v", c.user, err)
	}
	return ec
}

// cutWithin runs change and checks that client c's open connection ec
// to ehr is cut, and its new connections refused, within bound of the
// change's start.
func (w *world) cutWithin(c *client, ec *echoConn, what string, change func(), bound time.Duration) {
	t := w.t
	t.Helper()
	start := time.Now()
	newConns := make(chan blockResult, 1)
	go func() { newConns <- newConnBlocked(c, start, 3*bound) }()
	change()
	t.Logf("%s returned after %v", what, time.Since(start).Round(time.Millisecond))
	how, cutAt, err := watchCut(ec, start, 3*bound)
	if err != nil {
		t.Errorf("%s's open connection: %v", c.user, err)
	} else {
		t.Logf("%s's open connection cut %v after the start of %s (%s)", c.user, cutAt.Round(time.Millisecond), what, how)
		if cutAt > bound {
			t.Errorf("%s's open connection cut after %v, want within %v", c.user, cutAt.Round(time.Millisecond), bound)
		}
	}
	if nc := <-newConns; nc.err != nil {
		t.Errorf("%s's new connections: %v", c.user, nc.err)
	} else {
		t.Logf("%s's new connections refused %v after the start of %s (%v)", c.user, nc.at.Round(time.Millisecond), what, nc.how)
		if nc.at > bound {
			t.Errorf("%s's new connections refused after %v, want within %v", c.user, nc.at.Round(time.Millisecond), bound)
		}
	}
}

// reviewPolicy is the world's access as a policy file: the nurse and the
// clerk reach ehr (PHI, under a written waiver) through clinicians.
const reviewPolicy = `version: 1
groups:
  clinicians: {members: [nurse, clerk]}
segments:
  clinical: {prefixes: [10.20.0.0/24], gateways: [gw1]}
apps:
  ehr: {segment: clinical, names: [ehr.hosp.internal], addresses: [10.20.0.10], ports: [tcp/80], classification: phi}
  billing: {segment: clinical, names: [billing.hosp.internal], addresses: [10.20.0.11], ports: [tcp/80], classification: internal}
rules:
  - name: clinicians-ehr
    from: [group:clinicians]
    to: [app:ehr]
    waiver: "e2e world: no MFA or posture on the test clients, approved by the test"
`

// TestAccessReviewPolicyFile: with a policy file active, a reviewer's
// revoke with --apply-now is a new policy version whose reason names the
// campaign, adding a deny rule for exactly that user and app: the clerk's
// open connection to ehr is cut within 1 s of the decision, the nurse
// (same group) keeps hers; the close then applies nothing more and
// records the campaign with the version.
func TestAccessReviewPolicyFile(t *testing.T) {
	t.Parallel()
	w := newWorld(t, withPolicyFile(reviewPolicy))
	ehr := w.svcs["ehr"]
	w.waitReach(w.nurse, ehr, 20*time.Second)
	w.waitReach(w.clerk, ehr, 20*time.Second)
	rv := w.adminCtl("rv", "reviewer")
	var c reviewCampaign
	w.ctlJSON(&c, "review", "start", "--scope", "app:ehr", "--due", time.Now().AddDate(0, 0, 7).Format(time.DateOnly), "--reviewer", "rv")
	lines := map[string]int{}
	for _, l := range c.Lines {
		lines[l.User] = l.N
		if !slices.Contains(l.Flags, "waiver") {
			t.Errorf("line %+v: want the waiver flag", l)
		}
	}
	if len(lines) != 2 || lines["nurse"] == 0 || lines["clerk"] == 0 {
		t.Fatalf("campaign lines %+v, want the nurse and the clerk", c.Lines)
	}
	clerkConn, nurseConn := w.ehrConn(w.clerk), w.ehrConn(w.nurse)
	w.cutWithin(w.clerk, clerkConn, "review decide --apply-now", func() {
		if o, e, rc := rv("", "review", "decide", c.ID, strconv.Itoa(lines["clerk"]), "revoke", "--comment", "front desk", "--apply-now"); rc != 0 || !strings.Contains(o, "applied") {
			t.Errorf("review decide --apply-now: exit %d\n%s%s", rc, o, e)
		}
	}, time.Second)
	if err := nurseConn.probe(2 * time.Second); err != nil {
		t.Errorf("the nurse's connection stopped when the clerk's access was revoked: %v", err)
	}
	pv := w.waitAudit("the policy version of the revocation", func(e auditEvent) bool {
		return e.Type == "admin.policy.apply" && e.Details["review"] == c.ID
	})
	if !strings.Contains(pv.Details["reason"], c.ID) || pv.Actor != "admin:rv" {
		t.Errorf("policy version record %v: want the campaign in its reason, by the reviewer", pv)
	}
	if out := w.mustCtl("", "policy", "show", pv.Details["version"]); !strings.Contains(out, "review-"+c.ID+"-"+strconv.Itoa(lines["clerk"])) {
		t.Errorf("policy version %s has no deny rule for the line:\n%s", pv.Details["version"], out)
	}
	if o, e, rc := rv("", "review", "decide", c.ID, strconv.Itoa(lines["nurse"]), "keep", "--comment", "ward nurse"); rc != 0 {
		t.Fatalf("review decide keep: exit %d\n%s%s", rc, o, e)
	}
	w.mustCtl("", "review", "close", c.ID)
	rec := w.waitAudit("admin.review.close", func(e auditEvent) bool { return e.Type == "admin.review.close" && e.Subject == c.ID })
	if rec.Details["revoked"] != "1" || rec.Details["kept"] != "1" || rec.Details["policy_version"] != "" {
		t.Errorf("campaign record %v: the revocation was applied at the decision, the close applies nothing", rec)
	}
	w.unreachable(w.clerk, ehr)
	if _, err := w.nurse.get(ehrAddr); err != nil {
		t.Errorf("the nurse lost ehr: %v", err)
	}
}
