package api_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/pkg/adminapi"
)

// polMFA: ehr needs MFA, wiki does not; both through the IdP group
// Physicians.
const polMFA = `version: 1
groups:
  physicians: {idp: [{claim: groups, value: Physicians}]}
segments:
  lan: {prefixes: [10.20.0.0/24]}
apps:
  ehr: {segment: lan, addresses: [10.20.0.10], ports: [tcp/443], classification: internal}
  wiki: {segment: lan, addresses: [10.20.0.12], ports: [tcp/443], classification: internal}
rules:
  - {name: physicians-ehr, from: [group:physicians], to: [app:ehr], when: {mfa: true}}
  - {name: physicians-wiki, from: [group:physicians], to: [app:wiki]}
`

// TestSignInSaysWhatNeedsMFA: a sign-in whose IdP reported no MFA is told
// which apps stay closed and how to get MFA, naming the IdP; one with MFA,
// or with nothing MFA-only, is told nothing.
func TestSignInSaysWhatNeedsMFA(t *testing.T) {
	e, idp := newOIDCEnv(t)
	ctx := t.Context()
	must[*adminapi.AppliedPolicy](t)(e.admin.ApplyPolicy(ctx, &adminapi.ApplyPolicyRequest{File: "mfa.yaml", Source: polMFA, Reason: "CHG-11"}))

	resp, err := e.oidcCode(idp, "alice", nil) // Physicians, no MFA
	if err != nil {
		t.Fatal(err)
	}
	if resp.NoMFA == nil || !slices.Equal(resp.NoMFA.Apps, []string{"ehr"}) ||
		!strings.Contains(resp.NoMFA.How, "cordon login --idp test") || !strings.Contains(resp.NoMFA.How, "amr or acr") {
		t.Errorf("alice without MFA: no_mfa = %+v; want ehr, and how to get MFA at the IdP", resp.NoMFA)
	}

	idp.SetGroups("bob", "Physicians")
	if resp, err := e.oidcCode(idp, "bob", nil); err != nil || resp.NoMFA != nil { // MFA at the IdP
		t.Errorf("bob with MFA: %+v, %v; want no notice", resp.NoMFA, err)
	}
	if resp, err := e.oidcCode(idp, "carol", nil); err != nil || resp.NoMFA != nil { // no group, nothing MFA-only
		t.Errorf("carol (no groups): %+v, %v; want no notice", resp.NoMFA, err)
	}
}
