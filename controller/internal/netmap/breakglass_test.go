package netmap

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/policy"
)

// A break-glass session reaches only the emergency apps among those its
// rules grant: at the gateway (its peer entry carries only their rules)
// and in its client map; an ordinary session of the same rules reaches
// all of them; the incremental index agrees; when the bound passes the
// device is no peer at all and is told the session is never extended.
func TestBreakGlassOnlyEmergencyApps(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	limits := session.Limits{DefaultIdle: 30 * time.Minute, Absolute: 12 * time.Hour, BreakGlass: 5 * time.Second}
	snap := snapshot(t)
	snap.Rules = append(snap.Rules, store.Rule{Name: "clin-billing", Group: "clinicians", App: "billing"})
	for i := range snap.Apps {
		snap.Apps[i].Emergency = snap.Apps[i].Name == "ehr"
	}
	ordinary := &session.Session{ID: "s1", DeviceID: "dev-n", User: "nurse", Started: t0, LastActivity: t0, MFAAt: t0}
	breakGlass := &session.Session{ID: "s2", DeviceID: "dev-n", User: "nurse", Started: t0, LastActivity: t0, MFAAt: t0,
		ExpiresAt: t0.Add(5 * time.Second), BreakGlass: "bg-1"}
	gated := func(ix *Index, s *session.Session, now time.Time) *Index {
		ix.SetSessions(limits, map[string]*session.Session{"dev-n": s}, now)
		return ix
	}
	rulesAt := func(ix *Index, gwID string) []policy.RuleID {
		gw, _ := ix.Gateway(gwID)
		for _, p := range ix.GatewayMap(gw).Peers {
			if p.DeviceID == "dev-n" {
				return p.Rules
			}
		}
		return nil
	}
	apps := func(ix *Index) (names []string) {
		d, _ := ix.Device("dev-n")
		for _, sg := range ix.ClientMap(d).Segments {
			for _, a := range sg.Apps {
				names = append(names, a.Name)
			}
		}
		slices.Sort(names)
		return names
	}

	plain := gated(NewIndex(snap), ordinary, t0.Add(time.Second))
	if got := rulesAt(plain, "gw-a"); !slices.Equal(got, []policy.RuleID{"clin-billing", "clin-ehr"}) {
		t.Fatalf("ordinary session's rules at gw-a = %v: the fixture must grant billing and ehr", got)
	}
	if got := apps(plain); !slices.Equal(got, []string{"billing", "ehr"}) {
		t.Fatalf("ordinary session's apps = %v, want billing and ehr", got)
	}

	for name, ix := range map[string]*Index{
		"from scratch": gated(NewIndex(snap), breakGlass, t0.Add(time.Second)),
		"incremental":  gated(NewIndexFrom(plain, snap, store.Change{Devices: []string{"dev-n"}}, nil), breakGlass, t0.Add(time.Second)),
	} {
		t.Run(name, func(t *testing.T) {
			if got := rulesAt(ix, "gw-a"); !slices.Equal(got, []policy.RuleID{"clin-ehr"}) {
				t.Errorf("break-glass session's rules at gw-a = %v, want only the emergency app's [clin-ehr]", got)
			}
			if got := rulesAt(ix, "gw-lab"); len(got) != 0 {
				t.Errorf("break-glass session is a peer of gw-lab with %v: lis is no emergency app", got)
			}
			if got := apps(ix); !slices.Equal(got, []string{"ehr"}) {
				t.Errorf("break-glass session's apps = %v, want only ehr", got)
			}
		})
	}

	// The bound passed: nothing, and the user is told why.
	expired := gated(NewIndex(snap), breakGlass, t0.Add(5*time.Second))
	if got := rulesAt(expired, "gw-a"); len(got) != 0 {
		t.Errorf("expired break-glass session still has rules %v at gw-a", got)
	}
	d, _ := expired.Device("dev-n")
	if info := expired.SessionInfo(d); info.Reason != string(session.EndExpired) || !strings.Contains(info.Message, "never extended") {
		t.Errorf("expired break-glass session info = %+v", info)
	}
}
