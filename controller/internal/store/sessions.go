package store

import (
	"context"
	"time"
)

// Session end reasons, as stored and audited.
const (
	EndIdle          = "idle"           // automatic logoff: no traffic for the idle limit
	EndAbsolute      = "absolute"       // the absolute lifetime was reached
	EndAdmin         = "admin"          // cordonctl session end
	EndDeviceRevoked = "device-revoked" // cordonctl device revoke
	EndUserDisabled  = "user-disabled"  // cordonctl user disable, or the IdP no longer knows the user
	EndReplaced      = "replaced"       // the device signed in again
	EndLogout        = "logout"         // the user signed out
	// The identity provider refused the user's refresh token (deactivated,
	// deleted or revoked at the IdP).
	EndIdPRefused = "idp-refused"
	// The identity provider stayed unreachable past the OIDC
	// unreachable_limit since it last confirmed the user.
	EndIdPUnreachable = "idp-unreachable"
	// The session's own time bound passed (a break-glass session).
	EndExpired = "expired"
)

// Session is one device's signed-in session: it starts at a sign-in with
// every required factor and ends for one of the End* reasons. A device has
// at most one active session; only a device with an active session is a
// peer of any gateway.
type Session struct {
	ID       string `json:"id"`
	DeviceID string `json:"device_id"`
	User     string `json:"user"`
	// Method is how the user signed in: "password+totp", "recovery-code",
	// or "oidc:<idp name>".
	Method       string    `json:"method"`
	Source       string    `json:"source"` // IP address the sign-in came from
	StartedAt    time.Time `json:"started_at"`
	LastActivity time.Time `json:"last_activity"` // last app traffic seen at a gateway (StartedAt until then)
	MFAAt        time.Time `json:"mfa_at,omitzero"`
	EndedAt      time.Time `json:"ended_at,omitzero"` // zero while active
	EndReason    string    `json:"end_reason,omitempty"`
	// ExpiresAt is the session's own time bound (zero: only the
	// controller's absolute limit); a break-glass session has one.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// BreakGlass is the ID of the break-glass use that started the
	// session ("" for every other session): it reaches only emergency
	// apps.
	BreakGlass string `json:"break_glass,omitempty"`
}

// Active reports whether the session has not ended.
func (s Session) Active() bool { return s.EndedAt.IsZero() }

// SessionFilter selects sessions; zero fields match everything.
type SessionFilter struct {
	ID         string
	User       string
	DeviceID   string
	ActiveOnly bool
	Limit      int // ListSessions: 0 means 1000
}

// SessionStore keeps sessions. Part of [Store].
type SessionStore interface {
	// StartSession stores s (ID, DeviceID, User, StartedAt required) as the
	// device's active session and ends the device's previous active
	// session, if any, with EndReplaced, in one transaction. LastActivity
	// defaults to StartedAt. ErrNotFound if the device does not exist, is
	// revoked, or belongs to another user; ErrDisabled if the user is
	// disabled (checked in the same transaction, so a sign-in racing
	// SetUserDisabled cannot leave a session behind).
	StartSession(ctx context.Context, s Session) (replaced []Session, err error)
	GetSession(ctx context.Context, id string) (Session, error)
	// ListSessions returns matching sessions, newest first.
	ListSessions(ctx context.Context, f SessionFilter) ([]Session, error)
	// ListSessionsDue returns the active sessions that may have reached a
	// limit: last activity (as stored) before activityBefore, started
	// before startedBefore, or with an ExpiresAt not after expiresBy.
	ListSessionsDue(ctx context.Context, activityBefore, startedBefore, expiresBy time.Time) ([]Session, error)
	// TouchSessions moves LastActivity of active sessions forward to the
	// given times (session ID → time); it never moves one back, and skips
	// unknown or ended sessions.
	TouchSessions(ctx context.Context, last map[string]time.Time) error
	// EndSessions ends every active session f selects (f must set ID, User
	// or DeviceID) at `at` for reason, and returns them as ended.
	EndSessions(ctx context.Context, f SessionFilter, at time.Time, reason string) ([]Session, error)
	// RevokeDevice marks a device revoked (it stays listed, for the access
	// review, but never becomes a peer or signs in again) and ends its
	// active session with EndDeviceRevoked, in one transaction.
	RevokeDevice(ctx context.Context, id string, at time.Time) ([]Session, error)
}
