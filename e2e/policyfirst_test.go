package e2e

import (
	"strings"
	"testing"
	"time"
)

// policyFirst is the whole world's access as a policy file: nurse (in
// clinicians) reaches ehr; nobody reaches billing; clerk reaches nothing.
const policyFirst = `version: 1
groups:
  clinicians: {members: [nurse]}
segments:
  clinical: {prefixes: [10.20.0.0/24], gateways: [gw1]}
apps:
  ehr: {segment: clinical, names: [ehr.hosp.internal], addresses: [10.20.0.10], ports: [tcp/80], classification: internal}
  billing: {segment: clinical, names: [billing.hosp.internal], addresses: [10.20.0.11], ports: [tcp/80], classification: internal}
rules:
  - {name: clinicians-ehr, from: [group:clinicians], to: [app:ehr]}
`

// TestGatewayEnrollsUnderPolicyFile: a fresh controller gets a policy file
// first; then 'cordonctl gateway token create --segment clinical' (a
// segment only the file defines) issues a token, the gateway enrolls with
// it and serves the clients as the file says (issue 10: the token check
// read only the one-by-one directory, so no gateway could ever enroll once
// a policy file was active).
//
//	[ctl ns] cordon-controller; cordonctl policy apply; gateway token create --segment clinical
//	[gw ns]  cordon-gateway --token-file (enrolls for clinical)
//	[cl1 ns] nurse → ehr allowed, billing denied; [cl2 ns] clerk → nothing
func TestGatewayEnrollsUnderPolicyFile(t *testing.T) {
	t.Parallel()
	w := newWorld(t, withPolicyFile(policyFirst))

	gws := w.gateways()
	if len(gws) != 1 || gws[0].Name != gwName || gws[0].Segment != segmentName {
		t.Fatalf("gateways %+v, want %s enrolled for %s", gws, gwName, segmentName)
	}
	d := w.waitReach(w.nurse, w.svcs["ehr"], 20*time.Second)
	t.Logf("nurse reaches ehr through the gateway enrolled under the policy file (after %v)", d.Round(time.Millisecond))
	w.unreachable(w.nurse, w.svcs["billing"])
	w.unreachable(w.clerk, w.svcs["ehr"])

	// Names resolve against the file: show answers from it, and a
	// segment it does not define is refused saying which it does.
	out := w.mustCtl("", "segment", "show", segmentName, "-o", "json")
	if !strings.Contains(out, `"source": "policy version 1`) && !strings.Contains(out, `"source":"policy version 1`) {
		t.Errorf("cordonctl segment show %s: %s, want it from policy version 1", segmentName, out)
	}
	_, errOut, rc := w.cordonctl("", "gateway", "token", "create", "--segment", "radiology")
	if rc == 0 || !strings.Contains(errOut, "whose segments are: clinical") {
		t.Errorf("gateway token create --segment radiology: exit %d, %s; want a refusal naming the file's segments", rc, errOut)
	}
}
