package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cordonhq/cordon/client/internal/client"
	"github.com/cordonhq/cordon/client/internal/reach"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// printStatus prints 'cordon status' as a table: who is signed in and for
// how long, then each app with its state (reach.Classify's reason, as the
// running tunnel judged it) and, below, what each state means and what to
// do. now is the clock the ages and time left are taken from.
func printStatus(w io.Writer, s *client.Status, now time.Time) {
	conn := "connected"
	if !s.ControlConnected {
		conn = "reconnecting (keeping the last map)"
	}
	fmt.Fprintf(w, "User:        %s\nDevice:      %s (%s)\nMode:        %s\nController:  %s, %s\n",
		s.User, s.DeviceID, s.OverlayAddr, s.Mode, s.Controller, conn)
	if s.SOCKS5 != "" || s.HTTPProxy != "" {
		fmt.Fprintf(w, "Proxies:     socks5://%s  http://%s\n", s.SOCKS5, s.HTTPProxy)
	}
	if printSession(w, s.User, s.Session, s.LastAppTraffic, now) {
		return
	}
	if len(s.Gateways) == 0 && s.Session == nil && !s.ControlConnected {
		// No map yet: the app list is not known, not empty.
		v := reach.For(reach.ReasonControlDown)
		fmt.Fprintf(w, "\nNo app list yet: %s; %s\n", strings.TrimSuffix(v.Detail, "; your app list may be out of date"), v.Next)
		return
	}
	if len(s.Gateways) == 0 {
		fmt.Fprintln(w, "\nNo apps: you are not entitled to any app yet. Ask your administrator.")
		return
	}
	for _, g := range s.Gateways {
		if len(g.Apps) > 0 && g.LastHandshake != nil && now.Sub(*g.LastHandshake) > reach.StaleHandshake {
			fmt.Fprintf(w, "Warning:     no handshake with gateway %s for %s (the tunnel renews it every 2 minutes): its apps are unreachable until it answers\n",
				g.ID, age(now, *g.LastHandshake))
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nAPP\tNAME\tADDRESS\tPORTS\tGATEWAY\tPATH\tHANDSHAKE\tSTATE")
	var notes []reach.Verdict // one per state other than ok, in order of appearance
	for _, g := range s.Gateways {
		hs := "never"
		if g.LastHandshake != nil {
			hs = age(now, *g.LastHandshake) + " ago"
		}
		for _, a := range g.Apps {
			ports := make([]string, len(a.Ports))
			for i, p := range a.Ports {
				ports[i] = p.String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s/%s\t%s\t%s\t%s\t%s\n", a.Name, a.DNSName, a.Addr, a.Proto, strings.Join(ports, ","), g.ID, g.Path, hs, a.State.Reason)
			if a.State.Reason != reach.ReasonOK && !slices.ContainsFunc(notes, func(v reach.Verdict) bool { return v.Reason == a.State.Reason }) {
				notes = append(notes, a.State)
			}
		}
	}
	tw.Flush()
	if len(notes) > 0 {
		fmt.Fprintln(w)
	}
	for _, v := range notes {
		fmt.Fprintf(w, "%s: %s", v.Reason, v.Detail)
		if v.Next != "" {
			fmt.Fprintf(w, "; %s", v.Next)
		}
		fmt.Fprintln(w)
	}
}

// age is how long ago t was, to the second; never negative.
func age(now, t time.Time) string {
	return max(now.Sub(t), 0).Round(time.Second).String()
}

// minutes is d to the minute, as "7h30m" or "45m".
func minutes(d time.Duration) string {
	if d < time.Minute {
		return "less than a minute"
	}
	return strings.TrimSuffix(d.Truncate(time.Minute).String(), "0s")
}

// printSession prints the session lines of 'cordon status'; it reports
// whether the session is over (then no app is reachable and none is
// listed). Whether it is over, and why, is reach.Classify's verdict, the
// one the proxy answers with.
func printSession(w io.Writer, user string, ss *controlproto.SessionInfo, lastApp *time.Time, now time.Time) bool {
	if ss == nil {
		return false
	}
	if v := reach.Classify(reach.Snapshot{Session: ss, Entitled: true, ControlUp: true}, now); v.Reason == reach.ReasonSignedOut || v.Reason == reach.ReasonSessionEnded {
		// The controller's message is the more precise (when, and what
		// to do for a disabled account or a revoked device).
		line := v.Detail + ": " + v.Next
		if ss.Message != "" {
			line = ss.Message
		}
		fmt.Fprintf(w, "Session:     %s\n", capitalize(line))
		return true
	}
	line := "signed in as " + user
	if !ss.StartedAt.IsZero() {
		line += " since " + ss.StartedAt.Local().Format("15:04")
	}
	if !ss.ExpiresAt.IsZero() {
		line += fmt.Sprintf(", %s left (ends %s)", minutes(ss.ExpiresAt.Sub(now)), ss.ExpiresAt.Local().Format("Mon 15:04"))
	}
	if ss.IdleLimit > 0 {
		line += "; signed out after " + ss.IdleLimit.String() + " without activity"
		if lastApp != nil {
			// An estimate: the controller decides from what the
			// gateways saw.
			line += fmt.Sprintf(" (about %s of it left)", minutes(min(max(ss.IdleLimit-now.Sub(*lastApp), 0), ss.IdleLimit)))
		}
	}
	fmt.Fprintf(w, "Session:     %s\n", line)
	if n := ss.NoMFA; n != nil {
		fmt.Fprintf(w, "MFA:         none in this session; closed until you have one: %s\n", strings.Join(n.Apps, ", "))
		fmt.Fprintf(w, "             %s\n", n.How)
	}
	for _, su := range ss.StepUp {
		fmt.Fprintf(w, "Verify:      %s needs a fresh sign-in with your second factor: run 'cordon login' (the tunnel stays up)\n", su.App)
	}
	printPosture(w, ss.Posture)
	return false
}
