package policyfile

import (
	"slices"
	"testing"
)

// TestMFAOnlyApps: an app counts as MFA-only for a user when every rule
// that grants it to them requires MFA; a rule without MFA to the same app
// opens it without one.
func TestMFAOnlyApps(t *testing.T) {
	const src = `version: 1
groups:
  physicians: {idp: [{claim: groups, value: Physicians}]}
  staff: {members: [nurse]}
segments:
  lan: {prefixes: [10.20.0.0/24]}
apps:
  ehr: {segment: lan, addresses: [10.20.0.10], ports: [tcp/443], classification: phi}
  pacs: {segment: lan, addresses: [10.20.0.11], ports: [tcp/443], classification: phi}
  wiki: {segment: lan, addresses: [10.20.0.12], ports: [tcp/443], classification: internal}
posture_checks:
  disk: {disk_encryption: true}
rules:
  - {name: physicians-ehr, from: [group:physicians], to: [app:ehr, app:pacs], when: {mfa: true, posture: [disk]}}
  - {name: physicians-wiki, from: [group:physicians], to: [app:wiki]}
  - {name: staff-pacs, from: [group:staff], to: [app:pacs], when: {mfa_max_age: 2h, posture: [disk]}}
  - {name: staff-wiki, from: [group:staff, user:drsmith], to: [app:wiki, app:pacs], waiver: "CHG-7 approved by the CISO: shared kiosk"}
`
	pol, err := Parse("mfa.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user string
		idp  []IdPRef
		want []string
	}{
		{"drsmith", []IdPRef{{Claim: "groups", Value: "Physicians"}}, []string{"ehr"}}, // pacs also via staff-wiki, without MFA
		{"alice", []IdPRef{{Claim: "groups", Value: "Physicians"}}, []string{"ehr", "pacs"}},
		{"nurse", nil, nil},  // pacs via staff-wiki without MFA
		{"nobody", nil, nil}, // reaches nothing
		{"alice", nil, nil},  // the IdP group is the only way in
	} {
		if got := pol.MFAOnlyApps(tc.user, tc.idp); !slices.Equal(got, tc.want) {
			t.Errorf("MFAOnlyApps(%s, %v) = %v, want %v", tc.user, tc.idp, got, tc.want)
		}
	}
}
