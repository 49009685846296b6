package api_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// polIdP defines a segment, an app and a group (with an IdP group) that
// exist only in the policy file.
const polIdP = `version: 1
groups:
  physicians:
    members: [alice]
    idp: [{claim: groups, value: Physicians}]
segments:
  clinical: {prefixes: [10.30.0.0/24], gateways: [gw-east]}
apps:
  ehr: {segment: clinical, names: [ehr.hosp.internal], addresses: [10.30.0.10], ports: [tcp/443, tcp/80], classification: internal}
rules:
  - {name: physicians-ehr, from: [group:physicians], to: [app:ehr]}
`

// TestNamesResolveAgainstPolicyFile: with a policy file applied, a
// gateway enrolls for one of its segments (regression: the token check
// read only the directory and refused every policy-file segment), and
// segment, app and group reads answer from the file.
func TestNamesResolveAgainstPolicyFile(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	must[*adminapi.AppliedPolicy](t)(e.admin.ApplyPolicy(ctx, &adminapi.ApplyPolicyRequest{File: "hospital.yaml", Source: polIdP, Reason: "CHG-10"}))

	tok := must[*adminapi.CreateGatewayTokenResponse](t)(e.admin.CreateGatewayToken(ctx, &adminapi.CreateGatewayTokenRequest{Segment: "clinical", Name: "gw-east"}))
	if tok.Segment != "clinical" {
		t.Fatalf("token %+v", tok)
	}
	resp := must[*controlproto.EnrollResponse](t)(e.agent.EnrollGateway(ctx, &controlproto.EnrollGatewayRequest{
		Token: tok.Token, Name: "gw-east", PublicKey: wgPub(t), CSR: csr(t, "gw"), Endpoint: "gw.hospital.example:51820"}))
	gws := must[[]adminapi.Gateway](t)(e.admin.ListGateways(ctx))
	if len(gws) != 1 || gws[0].ID != resp.ID || gws[0].Segment != "clinical" {
		t.Fatalf("gateways %+v, want the one enrolled for clinical", gws)
	}
	// A second token for the same segment (the name is recorded once).
	must[*adminapi.CreateGatewayTokenResponse](t)(e.admin.CreateGatewayToken(ctx, &adminapi.CreateGatewayTokenRequest{Segment: "clinical"}))

	// A segment the file does not define: refused, naming the file and
	// what it does define.
	_, err := e.admin.CreateGatewayToken(ctx, &adminapi.CreateGatewayTokenRequest{Segment: "radiology"})
	wantCode(t, err, http.StatusNotFound, adminapi.CodeNotFound, `"radiology" is not in the active policy version 1 (hospital.yaml), whose segments are: clinical`)

	seg := must[*adminapi.Segment](t)(e.admin.GetSegment(ctx, "clinical"))
	if seg.Source != "policy version 1 (hospital.yaml)" || len(seg.CIDRs) != 1 || seg.CIDRs[0].String() != "10.30.0.0/24" || !slices.Equal(seg.Gateways, []string{"gw-east"}) {
		t.Errorf("segment show clinical = %+v", seg)
	}
	if segs := must[[]adminapi.Segment](t)(e.admin.ListSegments(ctx)); len(segs) != 1 || segs[0].Name != "clinical" {
		t.Errorf("segment list = %+v", segs)
	}
	app := must[*adminapi.App](t)(e.admin.GetApp(ctx, "ehr"))
	if app.Segment != "clinical" || app.DNSName != "ehr.hosp.internal" || app.Classification != "internal" || !slices.Equal(app.Services, []string{"tcp/443", "tcp/80"}) {
		t.Errorf("app show ehr = %+v", app)
	}
	_, err = e.admin.GetApp(ctx, "billing")
	wantCode(t, err, http.StatusNotFound, adminapi.CodeNotFound, "whose apps are: ehr")
	g := must[*adminapi.Group](t)(e.admin.GetGroup(ctx, "physicians"))
	if !slices.Equal(g.Members, []string{"alice"}) || !slices.Equal(g.IdP, []string{"groups=Physicians"}) {
		t.Errorf("group show physicians = %+v", g)
	}
	if gs := must[[]adminapi.Group](t)(e.admin.ListGroups(ctx)); len(gs) != 1 || gs[0].Name != "physicians" {
		t.Errorf("group list = %+v", gs)
	}
	_, err = e.admin.GetGroup(ctx, "nurses")
	wantCode(t, err, http.StatusNotFound, adminapi.CodeNotFound, "whose groups are: physicians")
	var rule adminapi.Rule
	if err := e.admin.Do(ctx, http.MethodGet, "/v1/rules/physicians-ehr", nil, &rule); err != nil ||
		rule.Group != "physicians" || rule.App != "ehr" || !slices.Equal(rule.To, []string{"app:ehr"}) || rule.Source == "" {
		t.Errorf("rule show physicians-ehr = %+v, %v", rule, err)
	}
	err = e.admin.Do(ctx, http.MethodGet, "/v1/rules/nurses-ehr", nil, &rule)
	wantCode(t, err, http.StatusNotFound, adminapi.CodeNotFound, "whose rules are: physicians-ehr")
}

// TestTokenSegmentBeforePolicy: before any policy file, token segments
// are directory segments, and an unknown one says how to create it.
func TestTokenSegmentBeforePolicy(t *testing.T) {
	e := newEnv(t)
	_, err := e.admin.CreateGatewayToken(t.Context(), &adminapi.CreateGatewayTokenRequest{Segment: "clinical"})
	wantCode(t, err, http.StatusNotFound, adminapi.CodeNotFound, "cordonctl segment create")
	if err != nil && !strings.Contains(err.Error(), "policy file") {
		t.Errorf("error %v does not mention the policy-file way", err)
	}
}
