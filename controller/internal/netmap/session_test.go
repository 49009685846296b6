package netmap

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Session gating: a device without an active session is nobody's peer; a
// session idle past the PHI limit loses the PHI app but keeps the internal
// one; a revoked device gets nothing; the device is told why.
func TestSessionGating(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	snap := snapshot(t)
	for i, a := range snap.Apps {
		if a.Name == "ehr" {
			snap.Apps[i].Classification = store.ClassPHI
		}
		if a.Name == "billing" {
			snap.Apps[i].Classification = store.ClassInternal
		}
	}
	snap.Rules = append(snap.Rules, store.Rule{Name: "clin-billing", Group: "clinicians", App: "billing"})
	limits := session.Limits{Idle: map[session.Classification]time.Duration{"phi": 5 * time.Minute}, DefaultIdle: 30 * time.Minute, Absolute: 12 * time.Hour}
	view := func() map[string]*session.Session {
		return map[string]*session.Session{
			"dev-n": {ID: "s1", DeviceID: "dev-n", User: "nurse", Started: t0, LastActivity: t0, MFAAt: t0},
		}
	}
	peerRules := func(ix *Index) []string {
		gw, _ := ix.Gateway("gw-a")
		var out []string
		for _, p := range ix.GatewayMap(gw).Peers {
			for _, r := range p.Rules {
				out = append(out, p.DeviceID+":"+string(r))
			}
		}
		return out
	}
	routes := func(ix *Index, id string) []netip.Prefix {
		d, _ := ix.Device(id)
		var out []netip.Prefix
		for _, g := range ix.ClientMap(d).Legacy().Gateways {
			out = append(out, g.AllowedIPs...)
		}
		return out
	}

	// Active, fresh: both apps.
	ix := NewIndex(snap)
	ix.SetSessions(limits, view(), t0.Add(time.Minute))
	if got, want := peerRules(ix), []string{"dev-n:clin-billing", "dev-n:clin-ehr"}; !slices.Equal(got, want) {
		t.Fatalf("fresh session: peer rules %v, want %v", got, want)
	}
	d, _ := ix.Device("dev-n")
	if info := ix.SessionInfo(d); info.State != controlproto.SessionActive || info.IdleLimit != 5*time.Minute || !info.ExpiresAt.Equal(t0.Add(12*time.Hour)) {
		t.Fatalf("session info %+v", info)
	}

	// Idle past the PHI limit: ehr (phi) drops, billing (internal) stays,
	// in both the gateway's and the device's map.
	ix = NewIndex(snap)
	ix.SetSessions(limits, view(), t0.Add(6*time.Minute))
	if got, want := peerRules(ix), []string{"dev-n:clin-billing"}; !slices.Equal(got, want) {
		t.Fatalf("phi-idle session: peer rules %v, want %v", got, want)
	}
	if r := routes(ix, "dev-n"); slices.Contains(r, netip.MustParsePrefix("10.20.0.10/32")) || !slices.Contains(r, netip.MustParsePrefix("10.20.0.11/32")) {
		t.Fatalf("phi-idle session routes %v: want billing, not ehr", r)
	}

	// Idle past every limit: nothing, and the device is told.
	ix = NewIndex(snap)
	ix.SetSessions(limits, view(), t0.Add(31*time.Minute))
	if got := peerRules(ix); len(got) != 0 {
		t.Fatalf("ended session: peer rules %v, want none", got)
	}
	if r := routes(ix, "dev-n"); len(r) != 0 {
		t.Fatalf("ended session routes %v", r)
	}
	info := ix.SessionInfo(d)
	if info.State != controlproto.SessionEnded || info.Reason != "idle" || !strings.Contains(info.Message, "cordon login") {
		t.Fatalf("ended session info %+v", info)
	}

	// No session at all.
	ix = NewIndex(snap)
	ix.SetSessions(limits, map[string]*session.Session{}, t0)
	if got := peerRules(ix); len(got) != 0 {
		t.Fatalf("no session: peer rules %v", got)
	}
	if info := ix.SessionInfo(d); info.State != controlproto.SessionNone {
		t.Fatalf("no session info %+v", info)
	}

	// Revoked: nothing, even with an active session.
	for i := range snap.Devices {
		if snap.Devices[i].ID == "dev-n" {
			snap.Devices[i].RevokedAt = t0
		}
	}
	ix = NewIndex(snap)
	ix.SetSessions(limits, view(), t0.Add(time.Minute))
	if got := peerRules(ix); len(got) != 0 {
		t.Fatalf("revoked device: peer rules %v", got)
	}
}
