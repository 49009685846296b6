package api_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/audit"
)

// Access reviews through the API, in the one-by-one directory: a
// campaign over PHI lists the nurse (used ehr, nothing flagged) and the
// disabled locum who never used it (orphaned, stale); the clock is the
// test server's; bad input is
// refused with a clear error and records nothing; the reviewer reads
// and decides reviews and nothing else, and only campaigns naming them;
// a network admin closes it, which removes the locum from the group.
func TestReviewAPI(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	a := e.admin
	must[*adminapi.Segment](t)(a.CreateSegment(ctx, &adminapi.CreateSegmentRequest{Name: "clinical", CIDRs: []string{"10.20.0.0/24"}}))
	must[*adminapi.App](t)(a.CreateApp(ctx, &adminapi.CreateAppRequest{Name: "ehr", Segment: "clinical", DNSName: "ehr.hosp.internal",
		Address: "10.20.0.10", Proto: "tcp", Ports: []string{"443"}, Classification: "phi"}))
	must[*adminapi.App](t)(a.CreateApp(ctx, &adminapi.CreateAppRequest{Name: "wiki", Segment: "clinical", DNSName: "wiki.hosp.internal",
		Address: "10.20.0.11", Proto: "tcp", Ports: []string{"443"}, Classification: "internal"}))
	must[*adminapi.Group](t)(a.CreateGroup(ctx, &adminapi.CreateGroupRequest{Name: "clinicians"}))
	for _, u := range []string{"nurse", "locum"} {
		must[*adminapi.CreateUserResponse](t)(a.CreateUser(ctx, &adminapi.CreateUserRequest{Name: u, Password: "a long enough password"}))
		must[*adminapi.Group](t)(a.AddMember(ctx, "clinicians", u))
	}
	must[*adminapi.Rule](t)(a.CreateRule(ctx, &adminapi.CreateRuleRequest{Name: "clinicians-ehr", Group: "clinicians", App: "ehr"}))
	must[*adminapi.Rule](t)(a.CreateRule(ctx, &adminapi.CreateRuleRequest{Name: "clinicians-wiki", Group: "clinicians", App: "wiki"}))
	must[*adminapi.User](t)(a.SetUserDisabled(ctx, "locum", true))
	if err := e.Record(ctx, audit.FlowAllow, "gateway:gw-1", "allow", "ehr", map[string]string{"proto": "tcp",
		"src": "100.64.0.9:4000", "dst": "10.20.0.10:443", "gateway": "gw-1", "user": "nurse"}); err != nil {
		t.Fatal(err)
	}
	usedAt := e.Now()
	e.Advance(60 * 24 * time.Hour) // nothing is new any more; the nurse's use is not stale yet

	// An admin account and its token, acting as "admin:NAME".
	account := func(name string, role auth.Role) *adminapi.Client {
		if err := e.Store.CreateAdmin(ctx, store.Admin{Name: name, Role: string(role), CreatedAt: e.Now()}); err != nil {
			t.Fatal(err)
		}
		secret, hash := auth.NewAdminToken()
		if err := e.Store.CreateAdminToken(ctx, store.AdminToken{ID: fmt.Sprintf("adt-%x", hash[:5]), Name: name, Admin: name, Account: name,
			Role: string(role), Hash: hash, CreatedBy: "test", CreatedAt: e.Now(), ExpiresAt: e.Now().Add(365 * 24 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		c, err := adminapi.New(e.URL, secret, e.CAPEM)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	netadmin := account("netadmin", auth.RoleNetworkAdmin)
	hd := account("hd", auth.RoleHelpdesk)
	due := e.Now().Add(30 * 24 * time.Hour)

	// Bad input.
	_, err := netadmin.StartReview(ctx, adminapi.ReviewStartRequest{Scope: "phi", Due: due})
	wantCode(t, err, 400, adminapi.CodeInvalid, "no enabled admin has the reviewer role")
	rv := account("rv", auth.RoleReviewer)
	for _, tc := range []struct {
		name string
		req  adminapi.ReviewStartRequest
		msg  string
	}{
		{"no scope", adminapi.ReviewStartRequest{Due: due}, "scope"},
		{"bad scope", adminapi.ReviewStartRequest{Scope: "user:nurse", Due: due}, "phi, app:NAME"},
		{"unknown app", adminapi.ReviewStartRequest{Scope: "app:pacs", Due: due}, `app "pacs" is not in the policy`},
		{"no due", adminapi.ReviewStartRequest{Scope: "phi"}, "due"},
		{"past due", adminapi.ReviewStartRequest{Scope: "phi", Due: e.Now().Add(-time.Hour)}, "not in the future"},
		{"unknown reviewer", adminapi.ReviewStartRequest{Scope: "phi", Due: due, Reviewers: []string{"nobody"}}, "not an admin account"},
		{"helpdesk reviewer", adminapi.ReviewStartRequest{Scope: "phi", Due: due, Reviewers: []string{"hd"}}, "reviewer role"},
		{"negative days", adminapi.ReviewStartRequest{Scope: "phi", Due: due, StaleDays: -1}, "stale_days"},
		{"name with escapes", adminapi.ReviewStartRequest{Scope: "phi", Due: due, Name: "Q1\x1b[2J"}, "control characters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := netadmin.StartReview(ctx, tc.req)
			wantCode(t, err, 400, adminapi.CodeInvalid, tc.msg)
		})
	}
	_, err = rv.StartReview(ctx, adminapi.ReviewStartRequest{Scope: "phi", Due: due})
	wantCode(t, err, 403, adminapi.CodeForbidden, "reviews.manage")
	if n := len(e.audit(string(audit.AdminReviewStart))); n != 0 {
		t.Fatalf("%d start records after refusals only", n)
	}

	c, err := netadmin.StartReview(ctx, adminapi.ReviewStartRequest{Scope: "phi", Due: due, Name: "Q1 PHI"}) // default reviewers: rv
	if err != nil {
		t.Fatal(err)
	}
	if c.State != adminapi.ReviewOpen || !slices.Equal(c.Reviewers, []string{"rv"}) || len(c.Lines) != 2 || c.Undecided != 2 || c.StaleDays != 90 {
		t.Fatalf("campaign %+v", c)
	}
	lineOf := func(c *adminapi.ReviewCampaign, user string) adminapi.ReviewLine {
		for _, l := range c.Lines {
			if l.User == user {
				return l
			}
		}
		t.Fatalf("no line for %s in %+v", user, c.Lines)
		return adminapi.ReviewLine{}
	}
	nurse, locum := lineOf(c, "nurse"), lineOf(c, "locum")
	if nurse.App != "ehr" || nurse.Via != "group:clinicians" || len(nurse.Flags) != 0 || !nurse.Evidence.LastUse.Equal(usedAt) || nurse.Evidence.UserState != "active" {
		t.Errorf("nurse's line %+v: want ehr through clinicians, used now, no flag", nurse)
	}
	if !slices.Equal(locum.Flags, []string{"orphaned", "stale"}) || locum.Evidence.UserState != "disabled" || !locum.Evidence.LastUse.IsZero() {
		t.Errorf("locum's line %+v: want orphaned and stale", locum)
	}

	// The reviewer reads reviews and nothing else.
	if _, err := rv.GetReview(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	_, err = rv.ListUsers(ctx)
	wantCode(t, err, 403, adminapi.CodeForbidden, "read")
	_, err = rv.GetReview(ctx, "rv-nope")
	wantCode(t, err, 404, adminapi.CodeNotFound, "rv-nope")

	// Decisions: bad input, a non-reviewer, then the reviewer's.
	for _, tc := range []struct {
		name string
		line int
		req  adminapi.ReviewDecideRequest
		code int
		msg  string
	}{
		{"unknown decision", nurse.N, adminapi.ReviewDecideRequest{Decision: "maybe", Comment: "x"}, 400, "keep, revoke or narrow"},
		{"no comment", nurse.N, adminapi.ReviewDecideRequest{Decision: "keep"}, 400, "comment"},
		{"narrow without ports", nurse.N, adminapi.ReviewDecideRequest{Decision: "narrow", Comment: "x"}, 400, "ports"},
		{"ports on a keep", nurse.N, adminapi.ReviewDecideRequest{Decision: "keep", Ports: "tcp/443", Comment: "x"}, 400, "only a narrow"},
		{"narrow in the directory", nurse.N, adminapi.ReviewDecideRequest{Decision: "narrow", Ports: "tcp/443", Comment: "x"}, 409, "policy file"},
		{"no such line", 99, adminapi.ReviewDecideRequest{Decision: "keep", Comment: "x"}, 404, "no line 99"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rv.DecideReview(ctx, c.ID, tc.line, tc.req)
			code := map[int]string{400: adminapi.CodeInvalid, 404: adminapi.CodeNotFound, 409: adminapi.CodeConflict}[tc.code]
			wantCode(t, err, tc.code, code, tc.msg)
		})
	}
	_, err = netadmin.DecideReview(ctx, c.ID, locum.N, adminapi.ReviewDecideRequest{Decision: "revoke", Comment: "x"})
	wantCode(t, err, 403, adminapi.CodeForbidden, "not a reviewer of campaign")
	_, err = hd.DecideReview(ctx, c.ID, locum.N, adminapi.ReviewDecideRequest{Decision: "revoke", Comment: "x"})
	wantCode(t, err, 403, adminapi.CodeForbidden, "reviews.decide")
	if n := len(e.audit(string(audit.AdminReviewDecide))); n != 0 {
		t.Fatalf("%d decide records after refusals only", n)
	}
	if _, err := rv.DecideReview(ctx, c.ID, nurse.N, adminapi.ReviewDecideRequest{Decision: "keep", Comment: "ward nurse"}); err != nil {
		t.Fatal(err)
	}
	l, err := rv.DecideReview(ctx, c.ID, locum.N, adminapi.ReviewDecideRequest{Decision: "revoke", Comment: "contract ended"})
	if err != nil || l.DecidedBy != "admin:rv" || !l.AppliedAt.IsZero() {
		t.Fatalf("decide = %+v, %v", l, err)
	}

	_, err = rv.CloseReview(ctx, c.ID)
	wantCode(t, err, 403, adminapi.CodeForbidden, "reviews.manage")
	e.Advance(31 * 24 * time.Hour)
	list, err := rv.ListReviews(ctx)
	if err != nil || len(list) != 1 || list[0].State != adminapi.ReviewOverdue {
		t.Fatalf("list = %+v, %v: want the campaign overdue", list, err)
	}
	closed, err := netadmin.CloseReview(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if closed.State != adminapi.ReviewClosed || closed.ClosedBy != "admin:netadmin" || lineOf(closed, "locum").AppliedAt.IsZero() {
		t.Errorf("closed campaign %+v", closed)
	}
	g, err := a.GetGroup(ctx, "clinicians")
	if err != nil || !slices.Equal(g.Members, []string{"nurse"}) {
		t.Errorf("clinicians = %+v, %v: want the locum removed", g, err)
	}
	rec := e.audit(string(audit.AdminReviewClose))
	if len(rec) != 1 || rec[0].Actor != "admin:netadmin" || rec[0].Details["overdue"] != "true" ||
		!strings.Contains(rec[0].Details["decisions"], `"by":"admin:rv"`) || rec[0].Details["removed_members"] != "clinicians:locum" {
		t.Errorf("campaign record %+v", rec)
	}
	_, err = netadmin.CloseReview(ctx, c.ID)
	wantCode(t, err, 409, adminapi.CodeConflict, "closed")
}
