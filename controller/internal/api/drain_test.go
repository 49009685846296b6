package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Drain and undrain by name or ID: the answer shows the gateway drained;
// the segment's last gateway not draining is drained only with force.
func TestGatewayDrainAPI(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	setupSegment(t, e)
	ids := map[string]string{}
	for _, name := range []string{"gw-east", "gw-west"} {
		tok := must[*adminapi.CreateGatewayTokenResponse](t)(e.admin.CreateGatewayToken(ctx, &adminapi.CreateGatewayTokenRequest{Segment: "clinical", Name: name}))
		resp := must[*controlproto.EnrollResponse](t)(e.agent.EnrollGateway(ctx, &controlproto.EnrollGatewayRequest{
			Token: tok.Token, PublicKey: wgPub(t), CSR: csr(t, name), Endpoint: name + ":51820"}))
		ids[name] = resp.ID
	}
	call := func(path, body string) (int, adminapi.Gateway, string) {
		t.Helper()
		st, out := e.raw("POST", path, e.AdminToken, body)
		var g adminapi.Gateway
		if st == 200 {
			if err := json.Unmarshal([]byte(out), &g); err != nil {
				t.Fatal(err)
			}
		}
		return st, g, out
	}
	if st, g, out := call("/v1/gateways/gw-east/drain", ""); st != 200 || g.ID != ids["gw-east"] || g.DrainedAt.IsZero() {
		t.Fatalf("drain gw-east by name = %d %s", st, out)
	}
	st, _, out := call("/v1/gateways/"+ids["gw-west"]+"/drain", `{}`)
	if st != 409 || !strings.Contains(out, "last live gateway of segment clinical") || !strings.Contains(out, "--force") {
		t.Fatalf("drain of the last gateway not draining = %d %s, want 409 naming --force", st, out)
	}
	if st, g, out := call("/v1/gateways/"+ids["gw-west"]+"/drain", `{"force":true}`); st != 200 || g.DrainedAt.IsZero() {
		t.Fatalf("forced drain = %d %s", st, out)
	}
	if st, g, out := call("/v1/gateways/gw-east/undrain", ""); st != 200 || !g.DrainedAt.IsZero() {
		t.Fatalf("undrain = %d %s", st, out)
	}
	if st, _, out := call("/v1/gateways/nope/drain", ""); st != 404 || !strings.Contains(out, "gateway list") {
		t.Fatalf("drain of an unknown gateway = %d %s", st, out)
	}
	gws := must[[]adminapi.Gateway](t)(e.admin.ListGateways(ctx))
	for _, g := range gws {
		if (g.Name == "gw-west") == g.DrainedAt.IsZero() {
			t.Fatalf("gateway list %+v: want only gw-west drained", gws)
		}
	}
	evs := e.audit(string(audit.AdminGatewayDrain))
	if len(evs) != 2 {
		t.Fatalf("drain records %+v, want 2", evs)
	}
}
