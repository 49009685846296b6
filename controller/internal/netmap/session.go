package netmap

import (
	"fmt"
	"slices"
	"time"

	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// sessionGate is the session state maps are gated on: only a device with
// an active session within the idle limit of an app's classification gets
// that app.
type sessionGate struct {
	limits session.Limits
	view   map[string]*session.Session // device ID → its newest session
	now    time.Time
}

// SetSessions gates the maps on sessions: a device reaches an app only
// while its session is active and not idle past the limit of the app's
// classification; a device without one is no gateway's peer. view holds
// each device's newest session (session.Manager.View); it is read, and
// sessions in it may be ended by the check. Without SetSessions (offline
// tools asking what the policy entitles) maps are not gated on sessions.
func (ix *Index) SetSessions(limits session.Limits, view map[string]*session.Session, now time.Time) {
	ix.sess = &sessionGate{limits: limits, view: view, now: now}
}

// allows reports whether device d may reach apps of classification class
// now. A revoked or quarantined device never may.
func (ix *Index) allows(d store.Device, class string) bool {
	if !d.RevokedAt.IsZero() || d.Quarantine.Active() {
		return false
	}
	g := ix.sess
	if g == nil {
		return true
	}
	s := g.view[d.ID]
	return s != nil && g.limits.Allows(s, session.Classification(class), g.now)
}

// emergencyOnly reports whether device d's session is a break-glass one
// (emergency access): it reaches only the apps marked emergency among
// those its rules grant. Without session gating no session restricts.
func (ix *Index) emergencyOnly(d store.Device) bool {
	if g := ix.sess; g != nil {
		if s := g.view[d.ID]; s != nil {
			return s.BreakGlass != ""
		}
	}
	return false
}

// allowsCached is allows for one device, remembering the answer per
// classification (maps ask once per app; sessions decide per class).
func (ix *Index) allowsCached(d store.Device) func(class string) bool {
	var classes []string
	var answers []bool
	return func(class string) bool {
		if i := slices.Index(classes, class); i >= 0 {
			return answers[i]
		}
		ok := ix.allows(d, class)
		classes, answers = append(classes, class), append(answers, ok)
		return ok
	}
}

// sessionMFAAt is when the user last proved a second factor in device d's
// session (zero without one); without session gating, the device's last
// MFA sign-in.
func (ix *Index) sessionMFAAt(d store.Device) time.Time {
	if ix.sess == nil {
		return d.MFAAt
	}
	if s := ix.sess.view[d.ID]; s != nil && s.EndReason == session.EndNone {
		return s.MFAAt
	}
	return time.Time{}
}

// SessionInfo is what device d is told about its session; nil without
// session gating.
func (ix *Index) SessionInfo(d store.Device) *controlproto.SessionInfo {
	g := ix.sess
	if g == nil {
		return nil
	}
	s := g.view[d.ID]
	if q := d.Quarantine; q.Active() {
		// Whatever the session's state: signing in again does not help.
		info := &controlproto.SessionInfo{State: controlproto.SessionEnded, Reason: controlproto.ReasonQuarantined,
			Message: controlproto.QuarantineMessage(q.Reason)}
		if s != nil {
			info.ID, info.StartedAt, info.MFAAt = s.ID, s.Started, s.MFAAt
		}
		return info
	}
	if s == nil {
		return &controlproto.SessionInfo{State: controlproto.SessionNone,
			Message: "not signed in: sign in with 'cordon login' to reach your apps"}
	}
	info := &controlproto.SessionInfo{ID: s.ID, StartedAt: s.Started, MFAAt: s.MFAAt}
	if why := g.limits.Check(s, g.now); why != session.EndNone {
		info.State, info.Reason = controlproto.SessionEnded, string(why)
		info.Message = endMessage(why, s, g.limits)
		return info
	}
	info.State = controlproto.SessionActive
	info.ExpiresAt = g.limits.EndsAt(s)
	info.IdleLimit = g.limits.ShortestIdle()
	info.Posture = ix.postureFindings(d.ID)
	info.NoMFA = ix.noMFA(d, s)
	return info
}

// endMessage tells the user why the session ended and what to do.
func endMessage(why session.EndReason, s *session.Session, l session.Limits) string {
	const again = "sign in again with 'cordon login'"
	at := s.Ended.Local().Format("15:04")
	switch why {
	case session.EndIdle:
		return fmt.Sprintf("signed out at %s after %s without activity (automatic logoff): %s", at, s.Ended.Sub(s.LastActivity).Round(time.Second), again)
	case session.EndAbsolute:
		return fmt.Sprintf("your session reached its %s limit at %s: %s", l.Absolute, at, again)
	case session.EndExpired:
		if s.BreakGlass != "" {
			return "your break-glass (emergency access) session reached its time limit at " + at +
				": it is never extended; if the emergency goes on, sign in with break-glass again (a new use, with its own justification and review)"
		}
		return "your session reached its time limit at " + at + ": " + again
	case session.EndAdmin:
		return "an administrator ended your session at " + at + ": " + again
	case session.EndDisabled:
		return "your account was disabled at " + at + ": contact your administrator"
	case session.EndDeviceRevoked:
		return "this device was revoked by an administrator at " + at + ": contact your administrator"
	case session.EndLogout:
		return "you signed out at " + at + ": " + again
	case session.EndIdPRefused:
		return "your identity provider no longer accepts your account (checked at " + at + "): sign in again with 'cordon login --idp'; if that fails, contact your administrator"
	case session.EndIdPUnreachable:
		return "your identity provider could not be reached to confirm your account, so your session ended at " + at + ": sign in again with 'cordon login --idp' once it is back"
	}
	return fmt.Sprintf("your session ended at %s (%s): %s", at, why, again)
}

// noMFA lists the apps device d's user reaches only with MFA while its
// session s proved none (nil otherwise, or without a policy file). The
// session does not record which IdP signed it in, so the advice is
// generic; the sign-in itself names the IdP.
func (ix *Index) noMFA(d store.Device, s *session.Session) *controlproto.NoMFA {
	if !s.MFAAt.IsZero() || ix.pol == nil || ix.pol.pol == nil {
		return nil
	}
	apps := ix.pol.pol.MFAOnlyApps(d.User, ix.pol.idp[d.User])
	if len(apps) == 0 {
		return nil
	}
	return &controlproto.NoMFA{Apps: apps, How: session.NoMFAHow("", "")}
}
