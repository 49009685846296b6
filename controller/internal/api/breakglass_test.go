package api_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Break-glass through the API: only users.write creates emergency
// accounts, with a long password; the codes come once; a break-glass
// sign-in needs a justification and one code and raises the alert; an
// emergency account cannot sign in ordinarily nor an ordinary one with
// break-glass; the use lists open until two different admins (two tokens
// of one account are one admin; the account's own name is refused)
// reviewed it; helpdesk may not review.
func TestBreakGlassAPI(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	client := func(account string, role auth.Role) *adminapi.Client {
		if _, err := e.Store.GetAdmin(ctx, account); err != nil {
			if err := e.Store.CreateAdmin(ctx, store.Admin{Name: account, Role: string(role), CreatedAt: e.Now()}); err != nil {
				t.Fatal(err)
			}
		}
		secret, hash := auth.NewAdminToken()
		tok := store.AdminToken{ID: fmt.Sprintf("adt-%x", hash[:5]), Name: account + "-" + string(role), Account: account,
			Role: string(role), Hash: hash, CreatedBy: "test", CreatedAt: e.Now(), ExpiresAt: e.Now().Add(time.Hour)}
		if err := e.Store.CreateAdminToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
		c, err := adminapi.New(e.URL, secret, e.CAPEM)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	helpdesk := client("hd", auth.RoleHelpdesk)
	alice, alice2 := client("alice", auth.RoleNetworkAdmin), client("alice", auth.RoleAuditor)
	bob := client("bob", auth.RoleAuditor)

	const pw = "a sealed passphrase for the ED"
	for _, tc := range []struct {
		name, user, pw, msg string
	}{
		{"short password", "er-1", "only 14 chars", "at least 16"},
		{"no password", "er-1", "", "required"},
		{"bad name", "ER 1", pw, "name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.admin.CreateBreakGlass(ctx, &adminapi.CreateBreakGlassRequest{Name: tc.user, Password: tc.pw})
			wantCode(t, err, 400, adminapi.CodeInvalid, tc.msg)
		})
	}
	_, err := helpdesk.CreateBreakGlass(ctx, &adminapi.CreateBreakGlassRequest{Name: "er-1", Password: pw})
	wantCode(t, err, 403, adminapi.CodeForbidden, "users.write")
	acct := must[*adminapi.CreateBreakGlassResponse](t)(alice.CreateBreakGlass(ctx, &adminapi.CreateBreakGlassRequest{Name: "er-1", Password: pw}))
	if !acct.BreakGlass || len(acct.Codes) != auth.RecoveryCodeCount {
		t.Fatalf("created %+v: want an emergency account and %d codes", acct, auth.RecoveryCodeCount)
	}
	_, err = alice.CreateBreakGlass(ctx, &adminapi.CreateBreakGlassRequest{Name: "er-1", Password: pw})
	wantCode(t, err, 409, adminapi.CodeConflict, "already exists")
	must[*adminapi.CreateUserResponse](t)(e.admin.CreateUser(ctx, &adminapi.CreateUserRequest{Name: "nurse", Password: "a long enough password"}))

	login := func(user, pass, code, why string, bg bool) (*controlproto.EnrollResponse, error) {
		return e.agent.Login(ctx, &controlproto.LoginRequest{Username: user, Password: pass, RecoveryCode: code, BreakGlass: bg, Justification: why,
			DeviceEnroll: controlproto.DeviceEnroll{Hostname: "ed-ws3", PublicKey: wgPub(t), CSR: csr(t, "x")}})
	}
	const why = "ED downtime: Okta down, patient in resus needs labs"
	_, err = login("er-1", pw, acct.Codes[0], "", true)
	wantCode(t, err, 400, adminapi.CodeInvalid, "justification", "required")
	_, err = login("er-1", pw, acct.Codes[0], "line one\nline two", true)
	wantCode(t, err, 400, adminapi.CodeInvalid, "control characters")
	_, err = login("er-1", pw, acct.Codes[0], strings.Repeat("x", controlproto.MaxJustification+1), true)
	wantCode(t, err, 400, adminapi.CodeInvalid, "at most")
	_, err = login("er-1", pw, "", why, true)
	wantCode(t, err, 400, adminapi.CodeInvalid, "recovery_code")
	_, err = login("nurse", "a long enough password", "", why, false)
	wantCode(t, err, 400, adminapi.CodeInvalid, "justification")
	_, err = login("er-1", pw, acct.Codes[0], "", false)
	wantCode(t, err, 401, adminapi.CodeUnauthorized, "emergency (break-glass) account", "--break-glass")
	nurseCodes := must[*adminapi.RecoveryCodesResponse](t)(e.admin.RegenerateRecoveryCodes(ctx, "nurse"))
	_, err = login("nurse", "a long enough password", nurseCodes.Codes[0], why, true)
	wantCode(t, err, 401, adminapi.CodeUnauthorized, "not an emergency account")
	_, err = login("er-1", "the wrong passphrase!!", acct.Codes[0], why, true)
	wantCode(t, err, 401, adminapi.CodeUnauthorized, "login failed")
	if n := len(e.audit("auth.break_glass")); n != 0 {
		t.Fatalf("%d auth.break_glass records before any break-glass sign-in", n)
	}

	resp := must[*controlproto.EnrollResponse](t)(login("er-1", pw, acct.Codes[0], "  "+why+" ", true))
	sess, err := e.Store.ListSessions(ctx, store.SessionFilter{DeviceID: resp.ID})
	if err != nil || len(sess) != 1 || sess[0].Method != "break-glass" || sess[0].BreakGlass == "" ||
		!sess[0].ExpiresAt.Equal(e.Now().Add(time.Hour)) {
		t.Fatalf("break-glass session %+v, %v: want method break-glass, a use, and the default 1 h bound", sess, err)
	}
	if evs := e.audit("auth.break_glass"); len(evs) != 1 || evs[0].Details["justification"] != why || evs[0].Subject != sess[0].BreakGlass {
		t.Fatalf("auth.break_glass records %+v: want one with the trimmed justification", evs)
	}
	_, err = login("er-1", pw, acct.Codes[0], why, true)
	wantCode(t, err, 401, adminapi.CodeUnauthorized, "login failed")

	id := sess[0].BreakGlass
	uses := must[[]adminapi.BreakGlassUse](t)(bob.ListBreakGlassUses(ctx))
	if len(uses) != 1 || uses[0].ID != id || uses[0].State != adminapi.BreakGlassOpen || uses[0].Justification != why {
		t.Fatalf("uses = %+v: want one open use", uses)
	}
	_, err = helpdesk.ListBreakGlassUses(ctx)
	wantCode(t, err, 403, adminapi.CodeForbidden, "audit.read")
	_, err = bob.GetBreakGlassUse(ctx, "bg-nope")
	wantCode(t, err, 404, adminapi.CodeNotFound, "bg-nope")

	_, err = helpdesk.ReviewBreakGlass(ctx, id, "fine")
	wantCode(t, err, 403, adminapi.CodeForbidden, "breakglass.review")
	_, err = alice.ReviewBreakGlass(ctx, id, " ")
	wantCode(t, err, 400, adminapi.CodeInvalid, "comment", "required")
	_, err = alice.ReviewBreakGlass(ctx, id, "ok\x1b[2J")
	wantCode(t, err, 400, adminapi.CodeInvalid, "control characters")
	_, err = alice.ReviewBreakGlass(ctx, "bg-nope", "checked")
	wantCode(t, err, 404, adminapi.CodeNotFound, "bg-nope")
	u := must[*adminapi.BreakGlassUse](t)(alice.ReviewBreakGlass(ctx, id, "matches the ED downtime log"))
	if u.State != adminapi.BreakGlassOpen || len(u.Reviews) != 1 || u.Reviews[0].Reviewer != "account:alice" {
		t.Fatalf("after one review: %+v", u)
	}
	_, err = alice2.ReviewBreakGlass(ctx, id, "me again, other token")
	wantCode(t, err, 409, adminapi.CodeConflict, "reviewed by account:alice already")
	u = must[*adminapi.BreakGlassUse](t)(bob.ReviewBreakGlass(ctx, id, "agreed"))
	if u.State != adminapi.BreakGlassClosed || len(u.Reviews) != 2 {
		t.Fatalf("after two reviews: %+v", u)
	}
	if shown := must[*adminapi.BreakGlassUse](t)(bob.GetBreakGlassUse(ctx, id)); shown.State != adminapi.BreakGlassClosed {
		t.Fatalf("show after two reviews: %+v", shown)
	}
	evs := e.audit("admin.breakglass.review")
	var ok, failed int
	for _, ev := range evs {
		switch ev.Outcome {
		case "success":
			ok++
		case "failure":
			failed++
		}
	}
	if ok != 2 || failed != 2 { // unknown use, alice's second token
		t.Fatalf("review records: %d successes, %d failures; want 2 and 2", ok, failed)
	}

	// The account's own name may not review its use.
	er := client("er-1", auth.RoleAuditor)
	second := must[*controlproto.EnrollResponse](t)(login("er-1", pw, acct.Codes[1], why, true))
	s2, _ := e.Store.ListSessions(ctx, store.SessionFilter{DeviceID: second.ID, ActiveOnly: true})
	if len(s2) != 1 {
		t.Fatalf("second use sessions %+v", s2)
	}
	_, err = er.ReviewBreakGlass(ctx, s2[0].BreakGlass, "all fine, trust me")
	wantCode(t, err, 409, adminapi.CodeConflict, "its own user cannot review it")
}
