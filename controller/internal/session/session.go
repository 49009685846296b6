// Package session decides whether a device's session is still valid: the
// idle limit (automatic logoff, 164.312(a)(2)(iii)), settable per data
// classification, the absolute limit, and MFA freshness for step-up rules.
// It is pure logic over times the caller supplies (activity comes from
// traffic the gateways see), so every controller replica reaches the same
// verdict.
//
// A session's life:
//
//	      login (password+TOTP, OIDC, or break-glass)
//	            │
//	            ▼
//	┌──────── active ◀──── traffic seen at a gateway (Touch)
//	│           │  │
//	│           │  └── idle > limit of a classification: apps of that
//	│           │      classification drop out; others stay
//	│           ▼
//	│  idle > every limit, or absolute limit reached, or its
//	│  own time bound (break-glass, never renewed), or ended
//	│  by an admin, or the user disabled
//	│           │
//	│           ▼
//	└──────▶  ended  (terminal: the device must sign in again)
package session

import (
	"fmt"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// Classification is an app's data classification (phi, internal, public).
type Classification string

// EndReason says why a session ended.
type EndReason string

// End reasons: the store's, which the audit trail records.
const (
	EndNone          EndReason = ""
	EndIdle          EndReason = store.EndIdle     // automatic logoff
	EndAbsolute      EndReason = store.EndAbsolute // absolute lifetime reached
	EndAdmin         EndReason = store.EndAdmin    // cordonctl session end
	EndDeviceRevoked EndReason = store.EndDeviceRevoked
	EndDisabled      EndReason = store.EndUserDisabled
	EndReplaced      EndReason = store.EndReplaced
	EndLogout        EndReason = store.EndLogout
	// The identity provider refused the user, or could not be reached for
	// longer than the OIDC unreachable_limit.
	EndIdPRefused     EndReason = store.EndIdPRefused
	EndIdPUnreachable EndReason = store.EndIdPUnreachable
	// The session's own time bound passed (a break-glass session).
	EndExpired EndReason = store.EndExpired
)

// Limits are the session rules in force.
type Limits struct {
	// Idle is the idle limit per classification; a classification not
	// listed uses DefaultIdle.
	Idle        map[Classification]time.Duration
	DefaultIdle time.Duration
	Absolute    time.Duration
	// BreakGlass is the time bound of a break-glass session (emergency
	// access): it ends this long after its sign-in, however active, and
	// is never renewed (a second use is a second sign-in). Each session
	// stores its bound (Session.ExpiresAt), so changing this changes
	// only later sessions. Zero: DefaultBreakGlass.
	BreakGlass time.Duration
}

// BreakGlassBound is the time bound of a break-glass session.
func (l Limits) BreakGlassBound() time.Duration {
	if l.BreakGlass > 0 {
		return l.BreakGlass
	}
	return DefaultBreakGlass
}

// DefaultBreakGlass is the default time bound of a break-glass session.
const DefaultBreakGlass = time.Hour

// DefaultLimits: 15 minutes idle for everything, 12 hours absolute, 1
// hour for a break-glass session.
func DefaultLimits() Limits {
	return Limits{DefaultIdle: 15 * time.Minute, Absolute: 12 * time.Hour, BreakGlass: DefaultBreakGlass}
}

// IsZero reports limits nobody set (the caller then uses DefaultLimits).
func (l Limits) IsZero() bool { return l.DefaultIdle == 0 && l.Absolute == 0 && len(l.Idle) == 0 }

// Validate rejects limits that would never log anyone off.
func (l Limits) Validate() error {
	if l.DefaultIdle <= 0 {
		return fmt.Errorf("session idle limit %v: must be positive", l.DefaultIdle)
	}
	if l.Absolute <= 0 {
		return fmt.Errorf("session absolute limit %v: must be positive", l.Absolute)
	}
	if l.BreakGlass < 0 {
		return fmt.Errorf("break-glass session limit %v: must be positive", l.BreakGlass)
	}
	for c, d := range l.Idle {
		if d <= 0 {
			return fmt.Errorf("session idle limit for %s apps %v: must be positive", c, d)
		}
	}
	return nil
}

func (l Limits) idle(c Classification) time.Duration {
	if d, ok := l.Idle[c]; ok {
		return d
	}
	return l.DefaultIdle
}

func (l Limits) maxIdle() time.Duration {
	m := l.DefaultIdle
	for _, d := range l.Idle {
		m = max(m, d)
	}
	return m
}

// Session is one device's signed-in session.
type Session struct {
	ID           string
	DeviceID     string
	User         string
	Started      time.Time
	LastActivity time.Time // last traffic seen at any gateway, or Started
	MFAAt        time.Time // last time the user proved a second factor
	Ended        time.Time
	EndReason    EndReason
	// ExpiresAt is the session's own time bound (zero: none but the
	// absolute limit); BreakGlass the break-glass use that started it
	// ("": an ordinary session).
	ExpiresAt  time.Time
	BreakGlass string
}

// EndsAt is when s ends however active it is: its absolute limit, or its
// own time bound if that comes first.
func (l Limits) EndsAt(s *Session) time.Time {
	end := s.Started.Add(l.Absolute)
	if !s.ExpiresAt.IsZero() && s.ExpiresAt.Before(end) {
		return s.ExpiresAt
	}
	return end
}

// Touch records activity; it never moves time backwards (gateways report
// out of order).
func (s *Session) Touch(at time.Time) {
	if at.After(s.LastActivity) {
		s.LastActivity = at
	}
}

// End ends the session for a reason; ending an ended session keeps the
// first reason.
func (s *Session) End(at time.Time, why EndReason) {
	if s.EndReason == EndNone {
		s.Ended, s.EndReason = at, why
	}
}

// Check ends the session if a limit has passed and reports its state.
func (l Limits) Check(s *Session, now time.Time) EndReason {
	if s.EndReason != EndNone {
		return s.EndReason
	}
	switch end := l.EndsAt(s); {
	case !now.Before(end) && end.Equal(s.ExpiresAt):
		s.End(end, EndExpired)
	case !now.Before(end):
		s.End(end, EndAbsolute)
	case !now.Before(s.LastActivity.Add(l.maxIdle())):
		s.End(s.LastActivity.Add(l.maxIdle()), EndIdle)
	}
	return s.EndReason
}

// Allows reports whether the session may reach an app of classification
// c now: not ended, and not idle past that classification's limit. A PHI
// app can thus drop out after 15 idle minutes while an internal one stays.
func (l Limits) Allows(s *Session, c Classification, now time.Time) bool {
	if l.Check(s, now) != EndNone {
		return false
	}
	return now.Before(s.LastActivity.Add(l.idle(c)))
}

// MFAFresh reports whether the user proved a second factor within maxAge
// (step-up rules); maxAge ≤ 0 means any MFA at sign-in suffices.
func (s *Session) MFAFresh(maxAge time.Duration, now time.Time) bool {
	if s.MFAAt.IsZero() {
		return false
	}
	if maxAge <= 0 {
		return true
	}
	return now.Sub(s.MFAAt) <= maxAge
}

// NextDeadline is when the session's state can next change without new
// activity: the earliest classification idle limit still ahead, or the
// absolute limit. The controller schedules its next check for then.
func (l Limits) NextDeadline(s *Session, now time.Time) time.Time {
	next := l.EndsAt(s)
	consider := func(d time.Duration) {
		if t := s.LastActivity.Add(d); t.After(now) && t.Before(next) {
			next = t
		}
	}
	consider(l.DefaultIdle)
	for _, d := range l.Idle {
		consider(d)
	}
	return next
}

// NoMFAHow tells a user whose sign-in proved no second factor how to get
// one: sign in again with MFA at the identity provider idp (its name for
// 'cordon login --idp', display its display name), or, for idp "", in any
// way that proves one.
func NoMFAHow(idp, display string) string {
	if idp == "" {
		return "your sign-in proved no second factor: sign in again with 'cordon login' and your authenticator code, " +
			"or with 'cordon login --idp NAME' completing MFA at your identity provider; if it never asks for one, " +
			"ask your IT department to require MFA for Cordon there"
	}
	return fmt.Sprintf("%s reported no second factor for this sign-in: sign in again with 'cordon login --idp %s' and complete MFA there; "+
		"if it never asks for one, ask your IT department to require MFA for Cordon at %s "+
		"(the ID token must show it in its amr or acr claim)", display, idp, display)
}
