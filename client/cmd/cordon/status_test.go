package main

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/client/internal/client"
	"github.com/cordonhq/cordon/client/internal/reach"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
)

// 'cordon status' shows each app's state as the tunnel judged it, what
// each state means and what to do, a warning for an old handshake, and
// who is signed in for how long; all ages from the injected clock.
func TestPrintStatus(t *testing.T) {
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.Local)
	app := func(name string, r reach.Reason) client.AppStatus {
		return client.AppStatus{
			App:   controlproto.App{Name: name, DNSName: name + ".hosp.internal", Addr: netip.MustParsePrefix("10.20.0.5/32"), Proto: policy.ProtoTCP, Ports: []policy.PortRange{{First: 443, Last: 443}}},
			State: reach.For(r),
		}
	}
	fresh, stale := now.Add(-30*time.Second), now.Add(-5*time.Minute)
	s := &client.Status{
		User: "nurse", DeviceID: "dev-1", Mode: "userspace", Controller: "https://c:8443", ControlConnected: true, LastAppTraffic: &stale,
		Session: &controlproto.SessionInfo{State: controlproto.SessionActive, StartedAt: now.Add(-time.Hour), ExpiresAt: now.Add(7*time.Hour + 30*time.Minute), IdleLimit: 15 * time.Minute},
		Gateways: []client.GatewayStatus{
			{ID: "gw-up", LastHandshake: &fresh, Apps: []client.AppStatus{app("ehr", reach.ReasonOK)}},
			{ID: "gw-down", LastHandshake: &stale, Apps: []client.AppStatus{app("pacs", reach.ReasonGatewayUnreachable), app("lab", reach.ReasonGatewayUnreachable)}},
		},
	}
	var b bytes.Buffer
	printStatus(&b, s, now)
	out := b.String()
	lines := strings.Split(out, "\n")
	row := func(app string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, app+" ") {
				return l
			}
		}
		t.Fatalf("no row for %s in\n%s", app, out)
		return ""
	}
	for _, want := range []string{
		"Session:     signed in as nurse since ", ", 7h30m left (ends ",
		"signed out after 15m0s without activity (about 10m of it left)",
		"Warning:     no handshake with gateway gw-down for 5m0s",
		"\ngateway-unreachable: the hospital gateway for this app does not answer; retrying automatically",
		"HANDSHAKE  STATE",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	state := func(app string) string { f := strings.Fields(row(app)); return strings.Join(f[len(f)-3:], " ") }
	if state("ehr") != "30s ago ok" || state("pacs") != "5m0s ago gateway-unreachable" {
		t.Errorf("STATE column:\n%s", out)
	}
	if strings.Count(out, "gateway-unreachable:") != 1 || strings.Contains(out, "gw-up for") {
		t.Errorf("one note per state, a warning only for the stale gateway:\n%s", out)
	}

	// A session the administrator ended: the controller's message, and no
	// app is listed as if reachable.
	s.Session = &controlproto.SessionInfo{State: controlproto.SessionEnded, Reason: "admin", Message: "an administrator ended your session at 08:55: sign in again with 'cordon login'"}
	b.Reset()
	printStatus(&b, s, now)
	if out := b.String(); !strings.Contains(out, "Session:     An administrator ended your session at 08:55: sign in again with 'cordon login'") || strings.Contains(out, "ehr") {
		t.Errorf("ended session:\n%s", out)
	}
	// No map yet, the controller out of reach: the list is unknown, not empty.
	b.Reset()
	printStatus(&b, &client.Status{User: "nurse"}, now)
	if out := b.String(); !strings.Contains(out, "No app list yet: the Cordon controller cannot be reached; retrying automatically") || strings.Contains(out, "not entitled") {
		t.Errorf("no map yet:\n%s", out)
	}
	// Past its absolute limit by the clock, before the controller said so.
	s.Session = &controlproto.SessionInfo{State: controlproto.SessionActive, ExpiresAt: now.Add(-time.Second)}
	b.Reset()
	printStatus(&b, s, now)
	if out := b.String(); !strings.Contains(out, "Session:     Your session expired: run cordon login") {
		t.Errorf("expired session:\n%s", out)
	}
}

func TestMinutes(t *testing.T) {
	for d, want := range map[time.Duration]string{
		7*time.Hour + 30*time.Minute + 59*time.Second: "7h30m",
		45 * time.Minute: "45m",
		time.Hour:        "1h0m",
		59 * time.Second: "less than a minute",
		-time.Hour:       "less than a minute",
	} {
		if got := minutes(d); got != want {
			t.Errorf("minutes(%v) = %q, want %q", d, got, want)
		}
	}
}
