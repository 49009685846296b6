package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// idpPolicy: physicians are whoever the IdP puts in Physicians; drsmith
// is in no local group, so an IdP group is his only access.
const idpPolicy = `version: 1
groups:
  physicians:
    idp: [{claim: groups, value: Physicians}]
  clerks: {members: [clerk]}
segments:
  clinical: {prefixes: [10.20.0.0/24]}
apps:
  ehr: {segment: clinical, addresses: [10.20.0.10], ports: [tcp/443], classification: internal}
  billing: {segment: clinical, addresses: [10.20.0.11], ports: [tcp/443], classification: internal}
rules:
  - {name: physicians-ehr, from: [group:physicians], to: [app:ehr]}
  - {name: clerks-billing, from: [group:clerks], to: [app:billing]}
`

// TestIdPGroupAccessReview: for a user whose only access is an IdP group,
// user show, policy access, who-can and explain use the claims the IdP
// last asserted, and say how old they are (regression: access printed
// an empty table and explain said "default deny" while the user reached
// the app). Claims the IdP refused grant nothing.
func TestIdPGroupAccessReview(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	file := filepath.Join(t.TempDir(), "idp.yaml")
	if err := os.WriteFile(file, []byte(idpPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	h.ok("policy", "apply", file, "--reason", "CHG-10 IdP groups")
	if err := h.srv.LinkIdentity(ctx, "drsmith", "okta", "00u-smith", "groups", []string{"Physicians", "Staff"}, h.srv.Now().Add(-90*time.Minute)); err != nil {
		t.Fatal(err)
	}

	out := h.ok("user", "show", "drsmith")
	for _, want := range []string{"okta", "00u-smith", "groups=Physicians,groups=Staff", "1h30m0s", "valid"} {
		if !strings.Contains(out, want) {
			t.Errorf("user show drsmith lacks %q:\n%s", want, out)
		}
	}

	r := h.run("", "policy", "access", "drsmith")
	if r.code != 0 || !strings.Contains(r.stdout, "ehr") || !strings.Contains(r.stdout, "physicians-ehr") || strings.Contains(r.stdout, "billing") {
		t.Errorf("policy access drsmith: exit %d\n%s%s; want ehr through physicians-ehr, not billing", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "groups=Physicians") || !strings.Contains(r.stderr, "1h30m0s old") {
		t.Errorf("policy access drsmith: stderr %q does not say which claims (and their age) were used", r.stderr)
	}
	// --idp replaces the last-known claims.
	if out := h.ok("policy", "access", "drsmith", "--idp", "groups=Radiology"); strings.Contains(out, "ehr") {
		t.Errorf("policy access --idp groups=Radiology still grants ehr:\n%s", out)
	}

	r = h.run("", "policy", "who-can", "ehr")
	if r.code != 0 || !strings.Contains(r.stdout, "user:drsmith") || !strings.Contains(r.stdout, "IdP okta claims 1h30m0s old") {
		t.Errorf("policy who-can ehr: exit %d\n%s%s; want user:drsmith via the IdP claims", r.code, r.stdout, r.stderr)
	}
	if r := h.run("", "policy", "who-can", "billing"); strings.Contains(r.stdout, "drsmith") {
		t.Errorf("policy who-can billing lists drsmith:\n%s", r.stdout)
	}

	r = h.run("", "policy", "explain", "--user", "drsmith", "--app", "ehr", "--port", "tcp/443")
	if r.code != 0 || !strings.Contains(r.stdout, "physicians-ehr") || strings.Contains(r.stdout, "default deny") {
		t.Errorf("policy explain drsmith ehr: exit %d\n%s%s; want allowed by physicians-ehr", r.code, r.stdout, r.stderr)
	}

	// Refused by the IdP: the claims grant nothing, and show says so.
	if err := h.srv.RefuseIdentity(ctx, "okta", "00u-smith", h.srv.Now()); err != nil {
		t.Fatal(err)
	}
	if out := h.ok("user", "show", "drsmith"); !strings.Contains(out, "refused by the IdP") {
		t.Errorf("user show after refusal:\n%s", out)
	}
	if r := h.run("", "policy", "access", "drsmith"); strings.Contains(r.stdout, "ehr") {
		t.Errorf("policy access after the IdP refused drsmith still lists ehr:\n%s", r.stdout)
	}
	if r := h.run("", "policy", "who-can", "ehr"); strings.Contains(r.stdout, "drsmith") {
		t.Errorf("policy who-can ehr after the IdP refused drsmith:\n%s", r.stdout)
	}
	if r := h.run("", "policy", "explain", "--user", "drsmith", "--app", "ehr", "--port", "tcp/443"); !strings.Contains(r.stdout, "deny") {
		t.Errorf("policy explain after refusal: %s", r.stdout)
	}
}
