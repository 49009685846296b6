package api_test

import (
	"strings"
	"testing"

	"github.com/cordonhq/cordon/pkg/adminapi"
)

// TestAdminTokenDiesWithIssuer: a standalone token acts for the account
// that issued it, directly or through a token of its own, and is refused
// while that account is disabled and once it is deleted (a departing owner
// cannot keep access through a 90-day token). Tokens issued by the
// first-start token have no account and are unaffected.
func TestAdminTokenDiesWithIssuer(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	a := newAdmin(t, e, "dana", "owner")
	login := a.login(t, e)
	c := must[*adminapi.Client](t)(adminapi.New(e.URL, login.Token, e.CAPEM))
	defer c.Close()
	own := must[*adminapi.CreateAdminTokenResponse](t)(c.CreateAdminToken(ctx, &adminapi.CreateAdminTokenRequest{Name: "ci-owner", Role: "owner", TTL: "90d"}))
	if own.Account != "dana" || own.Admin != "" {
		t.Fatalf("token issued by dana: %+v", own.AdminToken)
	}
	c2 := must[*adminapi.Client](t)(adminapi.New(e.URL, own.Token, e.CAPEM))
	defer c2.Close()
	child := must[*adminapi.CreateAdminTokenResponse](t)(c2.CreateAdminToken(ctx, &adminapi.CreateAdminTokenRequest{Name: "ci-child", Role: "auditor", TTL: "30d"}))
	if child.Account != "dana" {
		t.Fatalf("token issued by dana's token acts for %q, want dana", child.Account)
	}
	root := must[*adminapi.CreateAdminTokenResponse](t)(e.admin.CreateAdminToken(ctx, &adminapi.CreateAdminTokenRequest{Name: "ci-root", Role: "auditor", TTL: "1d"}))
	if root.Account != "" {
		t.Fatalf("token issued by the first-start token acts for %q", root.Account)
	}
	want := func(what, tok string, status int, body string) {
		t.Helper()
		st, b := e.raw("GET", "/v1/segments", tok, "")
		if st != status || !strings.Contains(b, body) {
			t.Fatalf("%s: %d %s, want %d containing %q", what, st, b, status, body)
		}
	}
	want("dana's token", own.Token, 200, "")
	want("token of dana's token", child.Token, 200, "")

	must[*adminapi.Admin](t)(e.admin.SetAdminDisabled(ctx, "dana", true))
	want("dana's token, dana disabled", own.Token, 401, "disabled")
	want("token of dana's token, dana disabled", child.Token, 401, "disabled")
	want("first-start token's token", root.Token, 200, "")
	reasons := map[string]string{}
	for _, ev := range e.audit("admin.auth") {
		reasons[ev.Details["token"]] = ev.Details["reason"]
	}
	if reasons[own.ID] != "issuing admin disabled" || reasons[child.ID] != "issuing admin disabled" {
		t.Errorf("admin.auth reasons %v", reasons)
	}
	must[*adminapi.Admin](t)(e.admin.SetAdminDisabled(ctx, "dana", false))
	want("dana's token, dana re-enabled", own.Token, 200, "")

	// Deleting the account revokes its tokens; they stay listed, and a
	// new account of the same name does not revive them.
	if err := e.admin.DeleteAdmin(ctx, "dana"); err != nil {
		t.Fatal(err)
	}
	want("dana's token, dana deleted", own.Token, 401, "revoked")
	want("token of dana's token, dana deleted", child.Token, 401, "revoked")
	want("first-start token's token", root.Token, 200, "")
	revoked := map[string]bool{}
	for _, x := range must[[]adminapi.AdminToken](t)(e.admin.ListAdminTokens(ctx)) {
		revoked[x.ID] = !x.RevokedAt.IsZero()
	}
	if !revoked[own.ID] || !revoked[child.ID] || revoked[root.ID] {
		t.Fatalf("revoked after deleting dana: %v", revoked)
	}
	newAdmin(t, e, "dana", "owner")
	want("dana's token, dana re-created", own.Token, 401, "revoked")
}
