package session

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)

func limits() Limits {
	return Limits{
		Idle:        map[Classification]time.Duration{"phi": 15 * time.Minute, "internal": time.Hour},
		DefaultIdle: 30 * time.Minute,
		Absolute:    12 * time.Hour,
	}
}

func newSession() *Session {
	return &Session{ID: "s1", DeviceID: "dev-1", User: "nurse", Started: t0, LastActivity: t0, MFAAt: t0}
}

// The automatic logoff: PHI drops after 15 idle minutes, internal apps
// stay until an hour, then the whole session ends.
func TestIdleLimitsPerClassification(t *testing.T) {
	l, s := limits(), newSession()
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for _, tc := range []struct {
		at            time.Duration
		phi, internal bool
		ended         EndReason
	}{
		{14 * time.Minute, true, true, EndNone},
		{15 * time.Minute, false, true, EndNone},
		{59 * time.Minute, false, true, EndNone},
		{60 * time.Minute, false, false, EndIdle},
	} {
		if got := l.Allows(s, "phi", at(tc.at)); got != tc.phi {
			t.Errorf("at +%v: phi allowed = %v, want %v", tc.at, got, tc.phi)
		}
		if got := l.Allows(s, "internal", at(tc.at)); got != tc.internal {
			t.Errorf("at +%v: internal allowed = %v, want %v", tc.at, got, tc.internal)
		}
		if got := l.Check(s, at(tc.at)); got != tc.ended {
			t.Errorf("at +%v: state %q, want %q", tc.at, got, tc.ended)
		}
	}
	// Ended is terminal: late activity does not revive it.
	s.Touch(at(61 * time.Minute))
	if l.Allows(s, "internal", at(61*time.Minute)) || s.EndReason != EndIdle || !s.Ended.Equal(at(time.Hour)) {
		t.Fatalf("ended session revived or end time wrong: %+v", s)
	}
}

func TestActivityKeepsSessionAliveUntilAbsolute(t *testing.T) {
	l, s := limits(), newSession()
	for d := time.Duration(0); d < 12*time.Hour; d += 10 * time.Minute {
		s.Touch(t0.Add(d))
		if !l.Allows(s, "phi", t0.Add(d+time.Minute)) {
			t.Fatalf("active session refused at +%v", d)
		}
	}
	if l.Check(s, t0.Add(12*time.Hour)) != EndAbsolute {
		t.Fatalf("absolute limit not enforced: %+v", s)
	}
}

func TestTouchNeverGoesBack(t *testing.T) {
	s := newSession()
	s.Touch(t0.Add(10 * time.Minute))
	s.Touch(t0.Add(5 * time.Minute)) // a late report from another gateway
	if !s.LastActivity.Equal(t0.Add(10 * time.Minute)) {
		t.Fatalf("last activity moved back to %v", s.LastActivity)
	}
}

func TestEndKeepsFirstReason(t *testing.T) {
	l, s := limits(), newSession()
	s.End(t0.Add(time.Minute), EndAdmin)
	s.End(t0.Add(2*time.Minute), EndDisabled)
	if l.Check(s, t0.Add(3*time.Minute)) != EndAdmin || !s.Ended.Equal(t0.Add(time.Minute)) {
		t.Fatalf("%+v", s)
	}
	if l.Allows(s, "public", t0.Add(3*time.Minute)) {
		t.Fatal("ended session allowed")
	}
}

func TestMFAFresh(t *testing.T) {
	s := newSession()
	now := t0.Add(20 * time.Minute)
	if !s.MFAFresh(30*time.Minute, now) || s.MFAFresh(10*time.Minute, now) || !s.MFAFresh(0, now) {
		t.Fatal("MFA freshness wrong")
	}
	s.MFAAt = time.Time{}
	if s.MFAFresh(0, now) {
		t.Fatal("no MFA counted as fresh")
	}
}

func TestNextDeadline(t *testing.T) {
	l, s := limits(), newSession()
	for _, tc := range []struct{ now, want time.Duration }{
		{0, 15 * time.Minute},
		{16 * time.Minute, 30 * time.Minute},
		{31 * time.Minute, time.Hour},
		{61 * time.Minute, 12 * time.Hour},
	} {
		if got := l.NextDeadline(s, t0.Add(tc.now)); !got.Equal(t0.Add(tc.want)) {
			t.Errorf("at +%v: next deadline +%v, want +%v", tc.now, got.Sub(t0), tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultLimits().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, l := range []Limits{
		{DefaultIdle: 0, Absolute: time.Hour},
		{DefaultIdle: time.Minute},
		{DefaultIdle: time.Minute, Absolute: time.Hour, Idle: map[Classification]time.Duration{"phi": -1}},
	} {
		if l.Validate() == nil {
			t.Errorf("%+v accepted", l)
		}
	}
}
