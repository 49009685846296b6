// Package reach says why an app is or is not reachable now, as one Reason
// with a message and next step a clinician understands. Classify is a pure
// function of a Snapshot, so the proxy, cordon status and the status page
// all give the same answer, and tests inject the clock.
package reach

import (
	"fmt"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Reason is why an app is or is not reachable now. The zero value is
// ReasonUnknown; callers never treat it as reachable.
type Reason int

// Reasons, most fundamental first: Classify reports the first that holds.
const (
	ReasonUnknown            Reason = iota
	ReasonOK                        // entitled, signed in, gateway answering
	ReasonSignedOut                 // no session: never signed in, or logged out
	ReasonSessionEnded              // the controller ended the session (admin, expiry, idle)
	ReasonNotEntitled               // the map does not give this app to the user
	ReasonControlDown               // controller unreachable: the map may be stale
	ReasonGatewayUnreachable        // no recent handshake or probes failing; retrying
	ReasonNoAnswer                  // gateway reachable, the app does not answer
)

func (r Reason) String() string {
	switch r {
	case ReasonOK:
		return "ok"
	case ReasonSignedOut:
		return "signed-out"
	case ReasonSessionEnded:
		return "session-ended"
	case ReasonNotEntitled:
		return "not-entitled"
	case ReasonControlDown:
		return "control-down"
	case ReasonGatewayUnreachable:
		return "gateway-unreachable"
	case ReasonNoAnswer:
		return "no-answer"
	default:
		return "unknown"
	}
}

// MarshalText writes r as its String, so JSON (cordon status -o json, the
// status page) carries "gateway-unreachable", not a number.
func (r Reason) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads a String; a name it does not know is
// ReasonUnknown (a newer client's reason read by an older one), never an
// error and never ReasonOK.
func (r *Reason) UnmarshalText(b []byte) error {
	*r = ReasonUnknown
	for c := ReasonOK; c <= ReasonNoAnswer; c++ {
		if c.String() == string(b) {
			*r = c
		}
	}
	return nil
}

// StaleHandshake is how old a WireGuard handshake may be before the tunnel
// to that gateway counts as down: WireGuard rekeys every 2 minutes while
// traffic flows, and gives up on a handshake after 3 minutes.
const StaleHandshake = 3 * time.Minute

// Snapshot is what the client knows at one moment, gathered by the
// caller so that Classify is a pure function (and testable with any clock).
type Snapshot struct {
	Session *controlproto.SessionInfo // nil: never signed in
	// Entitled reports whether the map gives the user the app.
	Entitled bool
	// ControlUp is false while the control channel to the controller is
	// down (the map is then possibly stale).
	ControlUp bool
	// GatewayDead is the failover prober's verdict for the app's gateway.
	GatewayDead bool
	// LastHandshake is the last WireGuard handshake with the app's gateway;
	// zero if none yet.
	LastHandshake time.Time
	// AppFailed is set when the last attempt to reach the app through a
	// live gateway got no answer or a refusal.
	AppFailed bool
}

// Verdict is a Reason with what to tell the user.
type Verdict struct {
	Reason Reason `json:"reason"`
	// Detail says what is wrong, for a clinician; Next says what to do.
	Detail string `json:"detail"`
	Next   string `json:"next,omitempty"`
}

// Classify says why the app described by s is or is not reachable at now.
func Classify(s Snapshot, now time.Time) Verdict {
	switch {
	case s.Session == nil || s.Session.State == controlproto.SessionNone:
		return For(ReasonSignedOut)
	case s.Session.State == controlproto.SessionEnded:
		v := For(ReasonSessionEnded)
		v.Detail = sessionEndedDetail(s.Session)
		if s.Session.Reason == controlproto.ReasonQuarantined {
			v.Next = "contact your IT service desk" // signing in again does not help
		}
		return v
	case !s.Session.ExpiresAt.IsZero() && !now.Before(s.Session.ExpiresAt):
		v := For(ReasonSessionEnded)
		v.Detail = "your session expired"
		return v
	case !s.Entitled:
		return For(ReasonNotEntitled)
	case s.GatewayDead, !s.LastHandshake.IsZero() && now.Sub(s.LastHandshake) > StaleHandshake:
		return For(ReasonGatewayUnreachable)
	case !s.ControlUp:
		return For(ReasonControlDown)
	case s.AppFailed:
		return For(ReasonNoAnswer)
	default:
		return For(ReasonOK)
	}
}

// For is r's standard message and next step.
func For(r Reason) Verdict {
	v := Verdict{Reason: r}
	const later = "retrying automatically; if this lasts, call your IT service desk"
	switch r {
	case ReasonOK:
		v.Detail = "reachable"
	case ReasonSignedOut:
		v.Detail, v.Next = "you are not signed in", "run cordon login"
	case ReasonSessionEnded:
		v.Detail, v.Next = "your session ended", "run cordon login"
	case ReasonNotEntitled:
		// No app name: the user may not know the app exists.
		v.Detail, v.Next = "not an app you are entitled to", "ask your IT service desk"
	case ReasonGatewayUnreachable:
		v.Detail, v.Next = "the hospital gateway for this app does not answer", later
	case ReasonControlDown:
		v.Detail, v.Next = "the Cordon controller cannot be reached; your app list may be out of date", later
	case ReasonNoAnswer:
		v.Detail, v.Next = "the app itself does not answer (the network path to it works)", "try again later, or tell the app's owners"
	default:
		v.Detail, v.Next = "cordon cannot tell why", "run cordon status"
	}
	return v
}

func sessionEndedDetail(si *controlproto.SessionInfo) string {
	switch si.Reason {
	case "admin":
		return "an administrator ended your session"
	case "idle":
		return "your session ended after inactivity"
	case "absolute":
		return "your session expired"
	case controlproto.ReasonQuarantined:
		return "your IT security team quarantined this device"
	case "":
		return "your session ended"
	default:
		return fmt.Sprintf("your session ended (%s)", si.Reason)
	}
}
