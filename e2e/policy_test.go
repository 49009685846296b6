package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// policyCutBound is how fast 'cordonctl policy apply' of a narrower policy
// must cut an open connection the new policy denies, measured from the
// start of the cordonctl command.
const policyCutBound = time.Second

// worldPolicy replaces the world's skeleton rule. ehr's app covers the
// port range tcp/80-8080 (ehr on 80, ehr-admin on 8080); clinicians reach
// only its 8000-8099 part (ehr-admin) and billing; the deny rule keeps the
// clerk, a contractor, away from ehr whatever else grants it; lab needs
// MFA and a posture check, which no device reports yet (issue 5), so it
// fails closed.
const worldPolicy = `version: 1
posture_checks:
  disk-encrypted: the root filesystem is encrypted
groups:
  clinicians: {members: [nurse, clerk]}
  contractors: {members: [clerk]}
segments:
  clinical: {prefixes: [10.20.0.0/24], gateways: [gw1]}
apps:
  ehr:
    segment: clinical
    names: [ehr.hosp.internal]
    addresses: [10.20.0.10]
    ports: [tcp/80-8080]
    classification: internal
  billing: {segment: clinical, names: [billing.hosp.internal], addresses: [10.20.0.11], ports: [tcp/80], classification: internal}
  lab: {segment: clinical, addresses: [10.20.0.12], ports: [tcp/80], classification: internal}
rules:
  - {name: clinicians-ehr-admin, from: [group:clinicians], to: [app:ehr], ports: [tcp/EHRPORTS]}
  - {name: clinicians-billing, from: [group:clinicians], to: [app:billing]}
  - {name: clinicians-lab, from: [group:clinicians], to: [app:lab], when: {mfa: true, posture: [disk-encrypted]}}
deny:
  - {name: contractors-never-ehr, from: [group:contractors], to: [app:ehr]}
tests:
  - {name: clerk never reaches ehr admin, user: clerk, app: ehr, port: tcp/8080, expect: deny, reason: deny-rule}
  - {name: nurse never reaches ehr on 80, user: nurse, app: ehr, port: tcp/80, expect: deny}
  - {name: nurse reaches billing, user: nurse, app: billing, port: tcp/80, expect: BILLING}
`

func (w *world) writePolicy(name, ehrPorts, billing string) string {
	w.t.Helper()
	src := strings.NewReplacer("EHRPORTS", ehrPorts, "BILLING", billing).Replace(worldPolicy)
	p := filepath.Join(w.dir, name)
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		w.t.Fatal(err)
	}
	return p
}

// activeVersion is the version 'cordonctl policy history' marks active.
func (w *world) activeVersion() string {
	w.t.Helper()
	for _, line := range strings.Split(w.mustCtl("", "policy", "history"), "\n") {
		if v, _, ok := strings.Cut(line, " (active)"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Applying a policy file replaces the skeleton's rules: a deny rule and a
// port range decide reachability; a narrower policy cuts an open
// connection within 1 s; a policy with a failing test or a syntax error is
// refused, with its position, and nothing changes.
func TestPolicyApply(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ehr, admin, billing, lab := w.svcs["ehr"], w.svcs["ehr-admin"], w.svcs["billing"], w.svcs["lab"]
	w.waitReach(w.nurse, ehr, 15*time.Second) // the skeleton's rule

	v1 := w.writePolicy("v1.yaml", "8000-8099", "allow")
	out := w.mustCtl("", "policy", "plan", v1)
	if !strings.Contains(out, "valid, 3/3 tests passed") || !strings.Contains(out, "user:clerk") {
		t.Fatalf("policy plan:\n%s", out)
	}
	w.mustCtl("", "policy", "apply", v1, "--reason", "e2e: policy as code")

	t.Log("---- v1: port range and deny rule ----")
	w.waitReach(w.nurse, admin, 10*time.Second)
	w.waitReach(w.nurse, billing, 10*time.Second)
	w.waitReach(w.clerk, billing, 10*time.Second)
	w.unreachable(w.nurse, ehr, lab)        // outside the rule's port range; posture fails closed
	w.unreachable(w.clerk, ehr, admin, lab) // the deny rule wins
	w.waitAudit("admin.policy.apply of v1", func(e auditEvent) bool {
		return e.Type == "admin.policy.apply" && e.Outcome == "success" && e.Details["reason"] == "e2e: policy as code" &&
			e.Details["new_sha256"] != "" && e.Details["old_sha256"] == ""
	})

	t.Log("---- v2: narrower, cuts the open connection ----")
	ec, err := openEcho(w.cl1, ehrAdminAddr)
	if err != nil {
		t.Fatalf("open a long-lived connection to ehr-admin: %v", err)
	}
	defer ec.Close()
	if err := ec.probe(2 * time.Second); err != nil {
		t.Fatalf("echo before the change: %v", err)
	}
	v2 := w.writePolicy("v2.yaml", "8000-8079", "allow")
	start := time.Now()
	cut := make(chan string, 1)
	go func() {
		how, at, err := watchCut(ec, start, 5*time.Second)
		if err != nil {
			cut <- err.Error()
			return
		}
		cut <- fmt.Sprintf("%v|%s", at, how)
	}()
	w.mustCtl("", "policy", "apply", v2, "--reason", "e2e: ehr-admin off limits")
	t.Logf("cordonctl policy apply returned after %v", time.Since(start).Round(time.Millisecond))
	res := <-cut
	atS, how, ok := strings.Cut(res, "|")
	if !ok {
		t.Fatalf("open connection to ehr-admin: %s", res)
	}
	at, _ := time.ParseDuration(atS)
	t.Logf("open connection cut %v after the apply started (%s)", at.Round(time.Millisecond), how)
	if at > policyCutBound {
		t.Errorf("open connection cut after %v, want within %v", at.Round(time.Millisecond), policyCutBound)
	}
	w.unreachable(w.nurse, admin)
	w.waitReach(w.nurse, billing, 5*time.Second)
	if v := w.activeVersion(); v != "2" {
		t.Fatalf("active version %q after two applies, want 2", v)
	}

	t.Log("---- refused: a failing test, a syntax error ----")
	failing := w.writePolicy("failing.yaml", "8000-8099", "deny") // the nurse does reach billing
	o, e, rc := w.cordonctl("", "policy", "apply", failing, "--reason", "e2e: must be refused")
	if rc != 2 || !strings.Contains(e, "test(s) failed") || !strings.Contains(e, `failing.yaml:`) || !strings.Contains(e, "nurse reaches billing") {
		t.Fatalf("apply of a policy with a failing test: exit %d, want 2\n%s%s", rc, o, e)
	}
	// The unclosed list of pkg/policy/policyfile/testdata/errors/syntax.yaml:
	// the line of the unclosed "[", 4:5 (see its .golden).
	syntax := filepath.Join(w.dir, "syntax.yaml")
	if err := os.WriteFile(syntax, []byte("version: 1\ngroups:\n  nurses:\n    members: [alice\napps: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o, e, rc = w.cordonctl("", "policy", "apply", syntax, "--reason", "e2e: must be refused")
	if rc != 2 || !strings.Contains(e, "syntax.yaml:4:5: YAML syntax error") {
		t.Fatalf("apply of a policy with a syntax error: exit %d, want 2 with syntax.yaml:4:5\n%s%s", rc, o, e)
	}
	t.Logf("refused with: %s", strings.TrimSpace(e))
	if v := w.activeVersion(); v != "2" {
		t.Fatalf("active version %q after refused applies, want still 2", v)
	}
	w.waitReach(w.nurse, billing, 5*time.Second)
	w.unreachable(w.nurse, admin, ehr, lab)
	w.unreachable(w.clerk, ehr, admin, lab)
	w.checkAlive()
}

// conditionsPolicy puts every rule under a session condition the gateway
// evaluates: ehr (tcp/80) and billing each in a time window (EHRHOURS,
// BILLINGHOURS), ehr-admin (tcp/8080) for an MFA no older than an hour,
// lab only from the nurse's public address.
const conditionsPolicy = `version: 1
groups:
  clinicians: {members: [nurse, clerk]}
segments:
  clinical: {prefixes: [10.20.0.0/24], gateways: [gw1]}
apps:
  ehr: {segment: clinical, names: [ehr.hosp.internal], addresses: [10.20.0.10], ports: [tcp/80, tcp/8080], classification: internal}
  billing: {segment: clinical, names: [billing.hosp.internal], addresses: [10.20.0.11], ports: [tcp/80], classification: internal}
  lab: {segment: clinical, addresses: [10.20.0.12], ports: [tcp/80], classification: internal}
rules:
  - {name: on-shift-ehr, from: [group:clinicians], to: [app:ehr], ports: [tcp/80], when: {hours: ["EHRHOURS"]}}
  - {name: on-shift-billing, from: [group:clinicians], to: [app:billing], when: {hours: ["BILLINGHOURS"]}}
  - {name: fresh-mfa-ehr-admin, from: [group:clinicians], to: [app:ehr], ports: [tcp/8080], when: {mfa_max_age: 1h}}
  - {name: nurse-station-lab, from: [group:clinicians], to: [app:lab], when: {source: [` + cl1Addr + `/32]}}
`

// hoursAround is a daily UTC window from now+from to now+to (minutes
// rounded down), as the policy file writes it.
func hoursAround(now time.Time, from, to time.Duration) string {
	hm := func(t time.Time) string { return fmt.Sprintf("%02d:%02d", t.Hour(), t.Minute()) }
	end := hm(now.Add(to).UTC())
	if end == "00:00" {
		end = "24:00"
	}
	return fmt.Sprintf("daily %s-%s UTC", hm(now.Add(from).UTC()), end)
}

// Conditions are evaluated at the gateway from each device's session: a
// time window containing now admits, one excluding now blocks, and
// swapping them swaps reachability; a fresh MFA (both users just logged
// in with TOTP) admits a rule with a maximum MFA age; a source network
// admits only the device connecting from it.
func TestPolicyConditionsAtGateway(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ehr, admin, billing, lab := w.svcs["ehr"], w.svcs["ehr-admin"], w.svcs["billing"], w.svcs["lab"]
	w.waitReach(w.nurse, ehr, 15*time.Second) // the skeleton's rule

	apply := func(name, ehrHours, billingHours string) {
		t.Helper()
		src := strings.NewReplacer("EHRHOURS", ehrHours, "BILLINGHOURS", billingHours).Replace(conditionsPolicy)
		p := filepath.Join(w.dir, name)
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		w.mustCtl("", "policy", "apply", p, "--reason", "e2e: conditions at the gateway")
	}
	now := time.Now()
	inside := hoursAround(now, -time.Hour, time.Hour)
	outside := hoursAround(now, 2*time.Hour, 3*time.Hour)
	t.Logf("window containing now: %q; excluding now: %q", inside, outside)

	t.Log("---- ehr in its window, billing outside its window ----")
	apply("c1.yaml", inside, outside)
	w.waitReach(w.nurse, admin, 10*time.Second) // MFA an instant old
	w.waitReach(w.clerk, admin, 10*time.Second)
	w.waitReach(w.nurse, ehr, 10*time.Second)
	w.waitReach(w.clerk, ehr, 10*time.Second)
	w.waitReach(w.nurse, lab, 10*time.Second) // from the nurse station's address
	w.unreachable(w.nurse, billing)           // outside its window
	w.unreachable(w.clerk, billing, lab)      // outside its window; not from the nurse station

	t.Log("---- windows swapped ----")
	apply("c2.yaml", outside, inside)
	w.waitReach(w.nurse, billing, 10*time.Second)
	w.waitReach(w.clerk, billing, 10*time.Second)
	w.unreachable(w.nurse, ehr)
	w.unreachable(w.clerk, ehr, lab)
	w.waitReach(w.nurse, admin, 5*time.Second)
	w.waitReach(w.nurse, lab, 5*time.Second)
	w.checkAlive()
}
