package ui

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cordonhq/cordon/client/internal/client"
	"github.com/cordonhq/cordon/client/internal/reach"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// AppRow is one app as the page shows it: the reach classifier's verdict
// (tunnel.Explain) with the app's names.
type AppRow struct {
	Name    string
	DNSName string
	Address string
	Ports   string
	Gateway string
	Reason  string // reach.Reason in words: "ok", "gateway-unreachable", ...
	Detail  string
	Next    string
}

// Reachable says the app can be used now.
func (a AppRow) Reachable() bool { return a.Reason == reach.ReasonOK.String() }

// Session is the session part of the page.
type Session struct {
	Active  bool
	Message string // why it is over, when it is
	// Left is the time to the absolute limit; zero when there is none.
	Left   time.Duration
	EndsAt time.Time
	// IdleLimit is the automatic logoff after this long without
	// activity.
	IdleLimit time.Duration
	// IdleLeft estimates the time left before it from this computer's
	// last app traffic (IdleKnown: there was some since 'cordon up'). The
	// controller decides from what the gateways saw, and learns it up to
	// a fifth of the limit late (see docs/security.md, "The local status
	// page").
	IdleLeft  time.Duration
	IdleKnown bool
}

// PostureRow is one failing posture check.
type PostureRow struct {
	Check string
	Apps  string
	Fix   string
}

// View is everything the page shows, built fresh for each request.
type View struct {
	Now time.Time
	// Up says a tunnel runs ('cordon up'); Down says why not, when not.
	Up               bool
	Down             string
	User             string
	Device           string
	Controller       string
	ControlConnected bool
	Mode             string
	Session          *Session
	NoMFA            string
	StepUp           []string // apps that need a fresh sign-in with a second factor
	Apps             []AppRow
	Posture          []PostureRow
	SignIn           SignInView
	CSRF             string
}

// SignInView is the sign-in part of the page.
type SignInView struct {
	LastUser  string     // prefilled user name
	Providers []Provider // identity providers offered
	// Job is the last sign-in started from the page.
	Job *JobView
}

// buildView fills v from what the tunnel reports; statusErr is its error
// (client.ErrNotUp when no tunnel runs).
func buildView(v *View, s *client.Status, statusErr error) {
	if statusErr != nil {
		v.Down = "Cordon is not connected: " + statusErr.Error() + "."
		if errors.Is(statusErr, client.ErrNotUp) {
			v.Down = "Cordon is not connected: start it with 'cordon up'."
		}
		return
	}
	v.Up = true
	v.User, v.Device, v.Controller = s.User, s.DeviceID, s.Controller
	v.ControlConnected, v.Mode = s.ControlConnected, s.Mode
	for _, g := range s.Gateways {
		for _, a := range g.Apps {
			v.Apps = append(v.Apps, AppRow{Name: a.Name, DNSName: strings.TrimSuffix(a.DNSName, "."), Address: a.Addr.String(),
				Ports: ports(a.App), Gateway: g.ID, Reason: a.State.Reason.String(), Detail: a.State.Detail, Next: a.State.Next})
		}
	}
	slices.SortStableFunc(v.Apps, func(a, b AppRow) int { return strings.Compare(a.Name, b.Name) })
	ss := s.Session
	if ss == nil {
		return
	}
	v.Session = &Session{Active: ss.State == controlproto.SessionActive, Message: ss.Message, IdleLimit: ss.IdleLimit}
	if !v.Session.Active {
		return
	}
	if !ss.ExpiresAt.IsZero() {
		v.Session.EndsAt, v.Session.Left = ss.ExpiresAt, max(ss.ExpiresAt.Sub(v.Now), 0)
	}
	if ss.IdleLimit > 0 && s.LastAppTraffic != nil {
		v.Session.IdleKnown = true
		v.Session.IdleLeft = min(max(ss.IdleLimit-v.Now.Sub(*s.LastAppTraffic), 0), ss.IdleLimit)
	}
	for _, f := range ss.Posture {
		apps := "some apps"
		if len(f.Apps) > 0 {
			apps = strings.Join(f.Apps, ", ")
		}
		v.Posture = append(v.Posture, PostureRow{Check: f.Check, Apps: apps, Fix: f.Fix})
	}
	for _, su := range ss.StepUp {
		v.StepUp = append(v.StepUp, su.App)
	}
	if ss.NoMFA != nil {
		v.NoMFA = "Without a second factor these apps stay closed: " + strings.Join(ss.NoMFA.Apps, ", ") + ". " + ss.NoMFA.How
	}
}

func ports(a controlproto.App) string {
	ps := make([]string, len(a.Ports))
	for i, p := range a.Ports {
		ps[i] = p.String()
	}
	return fmt.Sprintf("%s/%s", a.Proto, strings.Join(ps, ","))
}

// Left prints a duration for people: "3h 05m", "12m", "40s".
func Left(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d >= time.Hour:
		return fmt.Sprintf("%dh %02dm", int(d.Hours()), int(d.Minutes())%60)
	case d >= time.Minute:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	}
	return fmt.Sprintf("%ds", int(d.Seconds()))
}
