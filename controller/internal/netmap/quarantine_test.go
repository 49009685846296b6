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

// A quarantined device is no peer of any gateway and its map routes no
// app, while its active session stays and it is told why (never to sign
// in again); other devices keep their access; the incremental index (the
// path a quarantine takes: a change naming the device) agrees; a release
// gives the access back.
func TestQuarantineGating(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	limits := session.Limits{DefaultIdle: 30 * time.Minute, Absolute: 12 * time.Hour}
	view := map[string]*session.Session{
		"dev-n":  {ID: "s1", DeviceID: "dev-n", User: "nurse", Started: t0, LastActivity: t0, MFAAt: t0},
		"dev-n2": {ID: "s2", DeviceID: "dev-n2", User: "nurse", Started: t0, LastActivity: t0, MFAAt: t0},
	}
	peersOf := func(ix *Index) map[string][]string { // device → gateways it peers with
		out := map[string][]string{}
		for _, gw := range ix.snap.Gateways {
			for _, p := range ix.GatewayMap(gw).Peers {
				out[p.DeviceID] = append(out[p.DeviceID], gw.ID)
			}
		}
		return out
	}
	apps := func(ix *Index, id string) (names []string) {
		d, _ := ix.Device(id)
		cm := ix.ClientMap(d)
		for _, sg := range cm.Segments {
			for _, a := range sg.Apps {
				names = append(names, a.Name)
			}
		}
		for _, g := range cm.Legacy().Gateways {
			for _, a := range g.Apps {
				names = append(names, a.Name)
			}
		}
		return names
	}
	index := func(prev *Index, snap *store.Snapshot) *Index {
		var ix *Index
		if prev == nil {
			ix = NewIndex(snap)
		} else {
			ix = NewIndexFrom(prev, snap, store.Change{Devices: []string{"dev-n"}}, nil)
		}
		ix.SetSessions(limits, view, t0.Add(time.Minute))
		return ix
	}
	withQuarantine := func(q store.Quarantine) *store.Snapshot {
		snap := snapshot(t)
		// The nurse's second device, not quarantined.
		snap.Devices = append(snap.Devices, store.Device{ID: "dev-n2", User: "nurse", PublicKey: key(t), OverlayAddr: netip.MustParseAddr("100.64.0.20")})
		slices.SortFunc(snap.Devices, func(a, b store.Device) int { return strings.Compare(a.ID, b.ID) })
		for i := range snap.Devices {
			if snap.Devices[i].ID == "dev-n" {
				snap.Devices[i].Quarantine = q
			}
		}
		return snap
	}

	free := index(nil, withQuarantine(store.Quarantine{}))
	before := peersOf(free)
	if len(before["dev-n"]) == 0 || len(apps(free, "dev-n")) == 0 || len(before["dev-n2"]) == 0 {
		t.Fatalf("before the quarantine: peers %v, nurse's apps %v: the fixture must give both devices access", before, apps(free, "dev-n"))
	}

	q := store.Quarantine{At: t0, By: "admin:hd", Reason: "EDR alert, ticket 4411"}
	for name, ix := range map[string]*Index{
		"from scratch": index(nil, withQuarantine(q)),
		"incremental":  index(free, withQuarantine(q)),
	} {
		t.Run(name, func(t *testing.T) {
			peers := peersOf(ix)
			if gws := peers["dev-n"]; len(gws) != 0 {
				t.Errorf("quarantined device is a peer of %v, want none", gws)
			}
			if got := apps(ix, "dev-n"); len(got) != 0 {
				t.Errorf("quarantined device's map has apps %v, want none", got)
			}
			if !slices.Equal(peers["dev-n2"], before["dev-n2"]) {
				t.Errorf("the nurse's other device peers with %v, want %v as before (only the quarantined device loses access)", peers["dev-n2"], before["dev-n2"])
			}
			d, _ := ix.Device("dev-n")
			info := ix.SessionInfo(d)
			if info.State != controlproto.SessionEnded || info.Reason != controlproto.ReasonQuarantined || info.ID != "s1" ||
				!strings.Contains(info.Message, "quarantined by your IT security team: EDR alert, ticket 4411") ||
				!strings.Contains(info.Message, "contact") || strings.Contains(info.Message, "cordon login") {
				t.Errorf("session info %+v: want ended (quarantined), the session's ID, the reason and whom to contact, no advice to sign in", info)
			}
			if _, ok := view["dev-n"]; !ok || view["dev-n"].EndReason != session.EndNone {
				t.Errorf("the quarantine ended the session (%+v): the device keeps it", view["dev-n"])
			}
		})
	}

	// Without session gating (offline tools): still nothing.
	offline := NewIndex(withQuarantine(q))
	if gws := peersOf(offline)["dev-n"]; len(gws) != 0 {
		t.Errorf("offline index: quarantined device peers with %v", gws)
	}

	released := index(index(nil, withQuarantine(q)), withQuarantine(store.Quarantine{}))
	if got := peersOf(released); !slices.Equal(got["dev-n"], before["dev-n"]) {
		t.Errorf("after the release the device peers with %v, want %v", got["dev-n"], before["dev-n"])
	}
}
