package storetest

import (
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// testBreakGlass: emergency accounts and apps keep their mark; a session's
// own time bound and break-glass use round-trip, and ListSessionsDue finds
// a session whose bound passed however active and young it is; uses list
// newest first with their reviews, and one admin reviews a use once.
func testBreakGlass(t *testing.T, s store.Store) {
	c := ctx(t)
	bg := user("er-1")
	bg.BreakGlass = true
	must(t, s.CreateUser(c, bg))
	got, err := s.GetUser(c, "er-1")
	must(t, err)
	equal(t, "emergency account", got.BreakGlass, true)
	must(t, s.CreateSegment(c, seg("clinical")))
	ehr := app("ehr", "clinical")
	ehr.Emergency = true
	must(t, s.CreateApp(c, ehr))
	a, err := s.GetApp(c, "ehr")
	must(t, err)
	equal(t, "emergency app", a.Emergency, true)

	d := device(t, s, "er-1", 1)
	ses := sess("s-bg", d, at(0))
	ses.ExpiresAt, ses.BreakGlass = at(5*time.Second), "bg-1"
	_, err = s.StartSession(c, ses)
	must(t, err)
	gs, err := s.GetSession(c, "s-bg")
	must(t, err)
	equal(t, "session time bound", gs.ExpiresAt, at(5*time.Second))
	equal(t, "session break-glass use", gs.BreakGlass, "bg-1")
	due, err := s.ListSessionsDue(c, at(0), at(0), at(4*time.Second))
	must(t, err)
	equal(t, "due before its bound", len(due), 0)
	due, err = s.ListSessionsDue(c, at(0), at(0), at(5*time.Second))
	must(t, err)
	wantNames(t, "due at its bound", names(due, func(x store.Session) string { return x.ID }), []string{"s-bg"})

	u1 := store.BreakGlassUse{ID: "bg-1", User: "er-1", DeviceID: d.ID, SessionID: "s-bg", Source: "192.0.2.7",
		Justification: "ED downtime, IdP unreachable", StartedAt: at(0), ExpiresAt: at(5 * time.Second)}
	must(t, s.CreateBreakGlassUse(c, u1))
	wantErr(t, "use ID taken", s.CreateBreakGlassUse(c, u1), store.ErrAlreadyExists)
	u2 := u1
	u2.ID, u2.StartedAt = "bg-2", at(time.Hour)
	must(t, s.CreateBreakGlassUse(c, u2))

	r1 := store.BreakGlassReview{Reviewer: "account:alice", At: at(2 * time.Hour), Comment: "checked"}
	must(t, s.AddBreakGlassReview(c, "bg-1", r1))
	wantErr(t, "same admin twice", s.AddBreakGlassReview(c, "bg-1", store.BreakGlassReview{Reviewer: "account:alice", At: at(3 * time.Hour), Comment: "again"}), store.ErrAlreadyExists)
	wantErr(t, "review of an unknown use", s.AddBreakGlassReview(c, "bg-x", r1), store.ErrNotFound)
	r2 := store.BreakGlassReview{Reviewer: "account:bob", At: at(3 * time.Hour), Comment: "agreed"}
	must(t, s.AddBreakGlassReview(c, "bg-1", r2))

	g, err := s.GetBreakGlassUse(c, "bg-1")
	must(t, err)
	want := u1
	want.Reviews = []store.BreakGlassReview{r1, r2}
	equal(t, "use with its reviews", g, want)
	_, err = s.GetBreakGlassUse(c, "bg-x")
	wantErr(t, "unknown use", err, store.ErrNotFound)
	all, err := s.ListBreakGlassUses(c)
	must(t, err)
	wantNames(t, "uses newest first", names(all, func(x store.BreakGlassUse) string { return x.ID }), []string{"bg-2", "bg-1"})
	equal(t, "listed reviews", len(all[1].Reviews), 2)
	equal(t, "unreviewed use", len(all[0].Reviews), 0)
}
