package netmap

import (
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/store"
)

// idpPolicy grants ehr to the Okta group Radiology only.
const idpPolicy = `version: 1
groups:
  radiology: {idp: [{claim: okta-groups, value: Radiology}]}
segments:
  lan: {prefixes: [10.20.0.0/24], gateways: [gw-a]}
apps:
  ehr: {segment: lan, names: [ehr.h.internal], addresses: [10.20.0.10], ports: [tcp/443], classification: internal}
rules:
  - {name: radiology-ehr, from: [group:radiology], to: [app:ehr]}
`

// TestIdPGroupsEntitle: a user's IdP groups (from the OIDC identity in the
// snapshot) reach the policy's IdP references; the same value under
// another provider's claim, or from an identity the provider refused,
// entitles nothing.
func TestIdPGroupsEntitle(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   store.Identity
		want bool
	}{
		{"okta group", store.Identity{IdP: "okta", Subject: "s1", User: "clerk", Claim: "okta-groups", Groups: []string{"Nurses", "Radiology"}}, true},
		{"same value, other provider's claim", store.Identity{IdP: "entra", Subject: "s1", User: "clerk", Claim: "entra-groups", Groups: []string{"Radiology"}}, false},
		{"refused at the last refresh", store.Identity{IdP: "okta", Subject: "s1", User: "clerk", Claim: "okta-groups", Groups: []string{"Radiology"}, InvalidAt: time.Now()}, false},
		{"another user's identity", store.Identity{IdP: "okta", Subject: "s2", User: "nurse", Claim: "okta-groups", Groups: []string{"Radiology"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := policySnapshot(t)
			snap.Policy.Source = []byte(idpPolicy)
			snap.Identities = []store.Identity{tc.id}
			ix := NewIndex(snap)
			if err := ix.PolicyError(); err != nil {
				t.Fatal(err)
			}
			d, _ := ix.Device("dev-c")
			m := ix.ClientMap(d)
			if got := len(m.Gateways) > 0; got != tc.want {
				t.Fatalf("clerk entitled = %v, want %v (map %+v)", got, tc.want, m)
			}
			if tc.want {
				gw, _ := ix.Gateway("gw-a")
				gm := ix.GatewayMap(gw)
				if len(gm.Peers) != 1 || gm.Peers[0].Session == nil || len(gm.Peers[0].Session.Groups) != 1 || gm.Peers[0].Session.Groups[0] != "radiology" {
					t.Fatalf("gateway peers = %+v, want clerk in group radiology", gm.Peers)
				}
			}
		})
	}
}

// TestSessionInfoNoMFA: a session whose sign-in proved no MFA is told
// which apps its IdP group reaches only with MFA ('cordon status'); with
// MFA it is told nothing.
func TestSessionInfoNoMFA(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	snap := policySnapshot(t)
	snap.Policy.Source = []byte(`version: 1
groups:
  radiology: {idp: [{claim: okta-groups, value: Radiology}]}
segments:
  lan: {prefixes: [10.20.0.0/24], gateways: [gw-a]}
apps:
  ehr: {segment: lan, names: [ehr.h.internal], addresses: [10.20.0.10], ports: [tcp/443], classification: internal}
  wiki: {segment: lan, names: [wiki.h.internal], addresses: [10.20.0.11], ports: [tcp/443], classification: internal}
rules:
  - {name: radiology-ehr, from: [group:radiology], to: [app:ehr], when: {mfa: true}}
  - {name: radiology-wiki, from: [group:radiology], to: [app:wiki]}
`)
	snap.Identities = []store.Identity{{IdP: "okta", Subject: "s1", User: "clerk", Claim: "okta-groups", Groups: []string{"Radiology"}}}
	limits := session.Limits{DefaultIdle: 30 * time.Minute, Absolute: 12 * time.Hour}
	for _, mfaAt := range []time.Time{{}, t0} {
		ix := NewIndex(snap)
		if err := ix.PolicyError(); err != nil {
			t.Fatal(err)
		}
		ix.SetSessions(limits, map[string]*session.Session{"dev-c": {ID: "s1", DeviceID: "dev-c", User: "clerk", Started: t0, LastActivity: t0, MFAAt: mfaAt}}, t0.Add(time.Minute))
		d, _ := ix.Device("dev-c")
		info := ix.SessionInfo(d)
		switch {
		case mfaAt.IsZero() && (info.NoMFA == nil || len(info.NoMFA.Apps) != 1 || info.NoMFA.Apps[0] != "ehr" || info.NoMFA.How == ""):
			t.Errorf("session without MFA: no_mfa = %+v, want ehr and how to get MFA", info.NoMFA)
		case !mfaAt.IsZero() && info.NoMFA != nil:
			t.Errorf("session with MFA: no_mfa = %+v, want none", info.NoMFA)
		}
	}
}
