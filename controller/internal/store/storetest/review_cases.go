package storetest

// Cases for access review campaigns (issue 17).

import (
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// A campaign round-trips with its lines (entitlement, evidence, flags);
// a line's decision is stored apart from what was reviewed; IDs are
// unique; a campaign closes once; list is newest first.
func testReviews(t *testing.T, s store.Store) {
	c := ctx(t)
	_, err := s.GetReview(c, "rv-1")
	wantErr(t, "GetReview before any", err, store.ErrNotFound)
	camp := store.ReviewCampaign{
		ID: "rv-1", Name: "Q1 PHI", Scope: "phi", Reviewers: []string{"ann", "bob"}, Due: at(30 * 24 * time.Hour),
		StaleDays: 90, RecentDays: 30, PolicyVersion: 4, CreatedAt: at(0), CreatedBy: "admin:owner",
		Lines: []store.ReviewLine{
			{N: 1, Who: "user:nurse", User: "nurse", Via: "group:clinicians", App: "ehr", Class: "phi", Ports: "tcp/443",
				Rule: "clinicians-ehr", Conditions: "MFA", Waiver: "w", DeniedBy: "d",
				Evidence: store.ReviewEvidence{LastUse: at(-time.Hour), LastSignIn: at(-2 * time.Hour), MFAAt: at(-3 * time.Hour),
					Posture: "dev-1: disk", UserState: "active"}, Flags: []string{"waiver"}},
			{N: 2, Who: "tag:kiosk", Via: "tag:kiosk", App: "ehr", Class: "phi", Ports: "tcp/443", Rule: "kiosk",
				Evidence: store.ReviewEvidence{}, Flags: []string{"stale"}},
		},
	}
	must(t, s.CreateReview(c, camp))
	got, err := s.GetReview(c, "rv-1")
	must(t, err)
	equal(t, "stored campaign", got, camp)
	wantErr(t, "CreateReview with a taken ID", s.CreateReview(c, camp), store.ErrAlreadyExists)

	l := camp.Lines[0]
	l.Decision, l.KeepPorts, l.Comment, l.DecidedBy, l.DecidedAt, l.AppliedAt = store.DecisionNarrow, "tcp/443", "web only", "admin:ann", at(time.Hour), at(2*time.Hour)
	l.Who, l.Evidence = "user:changed", store.ReviewEvidence{} // not stored: what was reviewed stays
	must(t, s.PutReviewLine(c, "rv-1", l))
	wantErr(t, "PutReviewLine of no such line", s.PutReviewLine(c, "rv-1", store.ReviewLine{N: 9}), store.ErrNotFound)
	wantErr(t, "PutReviewLine of no such campaign", s.PutReviewLine(c, "nope", store.ReviewLine{N: 1}), store.ErrNotFound)
	got, err = s.GetReview(c, "rv-1")
	must(t, err)
	want := camp.Lines[0]
	want.Decision, want.KeepPorts, want.Comment, want.DecidedBy, want.DecidedAt, want.AppliedAt = l.Decision, l.KeepPorts, l.Comment, l.DecidedBy, l.DecidedAt, l.AppliedAt
	equal(t, "decided line", got.Lines[0], want)
	equal(t, "undecided line", got.Lines[1], camp.Lines[1])

	must(t, s.CreateReview(c, store.ReviewCampaign{ID: "rv-2", Scope: "app:ehr", Reviewers: []string{"ann"}, Due: at(time.Hour), CreatedAt: at(time.Minute)}))
	list, err := s.ListReviews(c)
	must(t, err)
	if len(list) != 2 || list[0].ID != "rv-2" || list[1].ID != "rv-1" || len(list[1].Lines) != 2 || len(list[0].Lines) != 0 {
		t.Errorf("ListReviews = %+v, want rv-2 then rv-1 with its lines", list)
	}

	if st := got.State(at(0)); st != store.ReviewOpen {
		t.Errorf("state %q, want open", st)
	}
	if st := got.State(at(31 * 24 * time.Hour)); st != store.ReviewOverdue {
		t.Errorf("state past due %q, want overdue", st)
	}
	must(t, s.CloseReview(c, "rv-1", "admin:owner", at(3*time.Hour)))
	wantErr(t, "CloseReview twice", s.CloseReview(c, "rv-1", "admin:owner", at(4*time.Hour)), store.ErrStale)
	wantErr(t, "CloseReview of no such campaign", s.CloseReview(c, "nope", "admin:owner", at(4*time.Hour)), store.ErrNotFound)
	got, err = s.GetReview(c, "rv-1")
	must(t, err)
	if !got.ClosedAt.Equal(at(3*time.Hour)) || got.ClosedBy != "admin:owner" || got.State(at(31*24*time.Hour)) != store.ReviewClosed {
		t.Errorf("closed campaign %+v", got)
	}
}
