package session_test

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/controller/internal/store/storetest"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

var t0 = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(d time.Duration) {
	c.mu.Lock()
	c.now = t0.Add(d)
	c.mu.Unlock()
}

type env struct {
	st      store.Store
	m       *session.Manager
	clk     *clock
	changed atomic.Int32
}

func newEnv(t *testing.T, l session.Limits) *env {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{st: st, clk: &clock{now: t0}}
	checked := storetest.CheckAudit(t, st)
	// Session ends reach the maps through the state owner, idle-class
	// crossings through Changed: both count as a recompute.
	owner := state.New(state.Config{Store: checked, Now: e.clk.Now, Publish: func(store.Change) { e.changed.Add(1) }})
	e.m, err = session.NewManager(session.ManagerConfig{Store: checked, State: owner, Limits: l, Now: e.clk.Now, Changed: func(store.Change) { e.changed.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := st.CreateUser(ctx, store.User{Name: "nurse", CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	k, _ := wgkey.NewPrivate()
	if _, err := st.CreateDevice(ctx, store.Device{ID: "dev-1", User: "nurse", Hostname: "pc", PublicKey: k.Public(), CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.StartSession(ctx, store.Session{ID: "s1", DeviceID: "dev-1", User: "nurse", Method: "password+totp", StartedAt: t0, MFAAt: t0}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) check(t *testing.T, at time.Duration) store.Session {
	t.Helper()
	e.clk.Set(at)
	if err := e.m.Check(t.Context()); err != nil {
		t.Fatal(err)
	}
	s, err := e.st.GetSession(t.Context(), "s1")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Activity reported by gateways keeps a session alive; without it the
// session ends at the idle limit, is stored as ended and audited, and the
// maps are recomputed.
func TestManagerIdleLogoff(t *testing.T) {
	e := newEnv(t, session.Limits{DefaultIdle: 10 * time.Minute, Absolute: 12 * time.Hour})
	e.m.Touch("dev-1", t0.Add(8*time.Minute))
	e.m.Touch("dev-1", t0.Add(3*time.Minute)) // out of order: ignored
	if s := e.check(t, 15*time.Minute); !s.Active() {
		t.Fatalf("session ended at 15m though active at 8m: %+v", s)
	}
	if s := e.check(t, 17*time.Minute); !s.Active() {
		t.Fatalf("session ended 9m after activity with a 10m limit: %+v", s)
	}
	if n := e.changed.Load(); n != 0 {
		t.Fatalf("maps recomputed %d times while nothing changed", n)
	}
	s := e.check(t, 18*time.Minute+time.Second)
	if s.Active() || s.EndReason != store.EndIdle {
		t.Fatalf("session after 10m idle: %+v, want ended (idle)", s)
	}
	if want := t0.Add(18 * time.Minute); !s.EndedAt.Equal(want) {
		t.Fatalf("ended at %v, want the moment the limit passed (%v)", s.EndedAt, want)
	}
	if n := e.changed.Load(); n != 1 {
		t.Fatalf("maps recomputed %d times after the logoff, want 1", n)
	}
	ev, err := e.st.ListAudit(t.Context(), store.AuditFilter{Type: "session.end"})
	if err != nil || len(ev) != 1 || ev[0].Details["reason"] != store.EndIdle || ev[0].Subject != "s1" {
		t.Fatalf("audit of the logoff: %+v, %v", ev, err)
	}
	// Activity after the end does not revive it.
	e.m.Touch("dev-1", t0.Add(19*time.Minute))
	if s := e.check(t, 19*time.Minute); s.Active() {
		t.Fatal("an ended session came back")
	}
}

// The absolute limit ends even a busy session.
func TestManagerAbsoluteLimit(t *testing.T) {
	e := newEnv(t, session.Limits{DefaultIdle: 10 * time.Minute, Absolute: time.Hour})
	for m := 5; m <= 60; m += 5 {
		e.m.Touch("dev-1", t0.Add(time.Duration(m)*time.Minute))
		s := e.check(t, time.Duration(m)*time.Minute)
		if m < 60 && !s.Active() {
			t.Fatalf("busy session ended at %dm", m)
		}
		if m == 60 && (s.Active() || s.EndReason != store.EndAbsolute) {
			t.Fatalf("session at the absolute limit: %+v", s)
		}
	}
}

// A classification with a shorter idle limit drops out before the session
// ends: the manager asks for new maps at that moment, without ending it.
func TestManagerClassificationCrossing(t *testing.T) {
	e := newEnv(t, session.Limits{Idle: map[session.Classification]time.Duration{"phi": 2 * time.Minute}, DefaultIdle: 10 * time.Minute, Absolute: 12 * time.Hour})
	e.check(t, time.Minute)
	if n := e.changed.Load(); n != 0 {
		t.Fatalf("recomputed %d times before any limit", n)
	}
	if s := e.check(t, 3*time.Minute); !s.Active() {
		t.Fatal("session ended at the phi limit")
	}
	if n := e.changed.Load(); n != 1 {
		t.Fatalf("recomputed %d times when phi dropped out, want 1", n)
	}
	e.check(t, 4*time.Minute)
	if n := e.changed.Load(); n != 1 {
		t.Fatalf("recomputed again with nothing new: %d", n)
	}
	// Activity brings phi back: another recompute.
	e.m.Touch("dev-1", t0.Add(5*time.Minute))
	e.check(t, 5*time.Minute+time.Second)
	if n := e.changed.Load(); n != 2 {
		t.Fatalf("recomputed %d times after activity restored phi, want 2", n)
	}
	view := e.m.View([]store.Session{{ID: "s1", DeviceID: "dev-1", User: "nurse", StartedAt: t0, LastActivity: t0}})
	if got := view["dev-1"].LastActivity; !got.Equal(t0.Add(5 * time.Minute)) {
		t.Fatalf("view's activity %v, want the touched time", got)
	}
}

// Run flushes activity to the store when it stops.
func TestManagerFlushesActivity(t *testing.T) {
	e := newEnv(t, session.DefaultLimits())
	e.m.View([]store.Session{{ID: "s1", DeviceID: "dev-1", User: "nurse", StartedAt: t0, LastActivity: t0}})
	e.m.Touch("dev-1", t0.Add(time.Minute))
	e.m.View([]store.Session{{ID: "s1", DeviceID: "dev-1", User: "nurse", StartedAt: t0, LastActivity: t0}})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { e.m.Run(ctx); close(done) }()
	cancel()
	<-done
	s, err := e.st.GetSession(t.Context(), "s1")
	if err != nil {
		t.Fatal(err)
	}
	if !s.LastActivity.Equal(t0.Add(time.Minute)) {
		t.Fatalf("stored activity %v after Run stopped, want %v", s.LastActivity, t0.Add(time.Minute))
	}
}

func TestLimitIntervals(t *testing.T) {
	l := session.Limits{DefaultIdle: 15 * time.Minute, Absolute: 12 * time.Hour, Idle: map[session.Classification]time.Duration{"phi": 3 * time.Second}}
	if got := l.CheckEvery(); got != 150*time.Millisecond {
		t.Errorf("CheckEvery = %v, want 150ms", got)
	}
	if got := l.ActivityInterval(); got != 600*time.Millisecond {
		t.Errorf("ActivityInterval = %v, want 600ms", got)
	}
	if got := session.DefaultLimits().CheckEvery(); got != 5*time.Second {
		t.Errorf("default CheckEvery = %v, want 5s", got)
	}
	if got := session.DefaultLimits().ActivityInterval(); got != time.Minute {
		t.Errorf("default ActivityInterval = %v, want 1m", got)
	}
}

// BenchmarkManagerCheck: one pass of the limits over n active sessions,
// the store read included, as Run does every CheckEvery: "busy" when every
// session saw traffic lately (none is read), "idle" when every one is past
// the PHI idle limit but not the session's (all are read and judged).
func BenchmarkManagerCheck(b *testing.B) {
	const n = 2000
	st, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "c.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := b.Context()
	if err := st.CreateUser(ctx, store.User{Name: "nurse", CreatedAt: t0}); err != nil {
		b.Fatal(err)
	}
	for range n {
		k, _ := wgkey.NewPrivate()
		d, err := st.CreateDevice(ctx, store.Device{User: "nurse", Hostname: "pc", PublicKey: k.Public(), CreatedAt: t0})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.StartSession(ctx, store.Session{ID: "s" + d.ID, DeviceID: d.ID, User: "nurse", StartedAt: t0}); err != nil {
			b.Fatal(err)
		}
	}
	limits := session.Limits{Idle: map[session.Classification]time.Duration{"phi": 10 * time.Minute}, DefaultIdle: 15 * time.Minute, Absolute: 12 * time.Hour}
	for _, bc := range []struct {
		name string
		at   time.Duration
	}{{"busy", time.Minute}, {"idle", 12 * time.Minute}} {
		b.Run(bc.name, func(b *testing.B) {
			m, err := session.NewManager(session.ManagerConfig{Store: st, Limits: limits, Now: func() time.Time { return t0.Add(bc.at) }})
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := m.Check(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/session")
		})
	}
}
