package session_test

import (
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/store"
)

// A session with its own time bound (break-glass) ends at that bound,
// however active, with reason expired; the manager finds it though it is
// neither idle nor old, and checks often enough for the bound.
func TestBreakGlassTimeBound(t *testing.T) {
	l := session.Limits{DefaultIdle: 15 * time.Minute, Absolute: 12 * time.Hour, BreakGlass: 5 * time.Second}
	s := &session.Session{ID: "s1", Started: t0, LastActivity: t0, ExpiresAt: t0.Add(5 * time.Second), BreakGlass: "bg-1"}
	if got := l.EndsAt(s); !got.Equal(t0.Add(5 * time.Second)) {
		t.Fatalf("EndsAt = %s, want the bound", got)
	}
	if got := l.NextDeadline(s, t0); !got.Equal(t0.Add(5 * time.Second)) {
		t.Fatalf("NextDeadline = %s, want the bound", got)
	}
	s.Touch(t0.Add(4 * time.Second)) // activity does not extend it
	if why := l.Check(s, t0.Add(4*time.Second)); why != session.EndNone {
		t.Fatalf("ended before its bound: %s", why)
	}
	if why := l.Check(s, t0.Add(5*time.Second)); why != session.EndExpired || !s.Ended.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("at its bound: %s at %s, want expired at the bound", why, s.Ended)
	}
	// A bound past the absolute limit does not extend the session.
	long := &session.Session{Started: t0, LastActivity: t0, ExpiresAt: t0.Add(24 * time.Hour)}
	if why := l.Check(long, t0.Add(12*time.Hour)); why != session.EndAbsolute {
		t.Fatalf("bound past the absolute limit: %s, want absolute", why)
	}
	// Checks come at a twentieth of the bound, not of the 15 min idle limit.
	if got, without := l.CheckEvery(), (session.Limits{DefaultIdle: 15 * time.Minute, Absolute: 12 * time.Hour}).CheckEvery(); got >= without {
		t.Fatalf("CheckEvery with a 5 s bound %s, without %s: want shorter", got, without)
	}

	e := newEnv(t, l) // its session s1 is replaced by the break-glass one
	ctx := t.Context()
	if _, err := e.st.StartSession(ctx, store.Session{ID: "s-bg", DeviceID: "dev-1", User: "nurse", Method: "break-glass",
		StartedAt: t0, MFAAt: t0, ExpiresAt: t0.Add(5 * time.Second), BreakGlass: "bg-1"}); err != nil {
		t.Fatal(err)
	}
	check := func(at time.Duration) store.Session {
		t.Helper()
		e.clk.Set(at)
		if err := e.m.Check(ctx); err != nil {
			t.Fatal(err)
		}
		s, err := e.st.GetSession(ctx, "s-bg")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	e.m.Touch("dev-1", t0.Add(4*time.Second))
	if s := check(4 * time.Second); !s.Active() {
		t.Fatalf("ended before its bound: %+v", s)
	}
	s2 := check(5 * time.Second)
	if s2.Active() || s2.EndReason != store.EndExpired || !s2.EndedAt.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("after its bound: %+v, want ended (expired) at the bound", s2)
	}
}
