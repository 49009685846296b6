package netmap

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// benchWorld is the load harness's scenario (controller/internal/loadtest)
// as a snapshot: one segment behind one gateway, 500 apps (16 for group
// "all", 10 departments of 48, 4 spare), n users with one device and an
// active session each, every user in "all" and one department.
func benchWorld(b testing.TB, n int) (*store.Snapshot, map[string]*session.Session) {
	key := func() wgkey.Public {
		k, err := wgkey.NewPrivate()
		if err != nil {
			b.Fatal(err)
		}
		return k.Public()
	}
	snap := &store.Snapshot{
		Segments: []store.Segment{{Name: "lan", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")}}},
		Gateways: []store.Gateway{{ID: "gw-1", Name: "gw-1", Segment: "lan", PublicKey: key(),
			OverlayAddr: netip.MustParseAddr("100.64.0.1"), Endpoint: "192.0.2.1:51820"}},
	}
	app := func(i int) string { return fmt.Sprintf("app-%03d", i) }
	for i := range 500 {
		snap.Apps = append(snap.Apps, store.App{Name: app(i), Segment: "lan", DNSName: app(i) + ".h.internal",
			Addr:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 20, byte(i / 250), byte(i%250 + 1)}), 32),
			Proto: policy.ProtoTCP, Ports: []policy.PortRange{{First: 443, Last: 443}}, Classification: store.ClassPHI})
	}
	groups := []store.Group{{Name: "all"}}
	for i := range 16 {
		snap.Rules = append(snap.Rules, store.Rule{Name: "all-" + app(i), Group: "all", App: app(i)})
	}
	for d := range 10 {
		g := fmt.Sprintf("dept-%d", d)
		groups = append(groups, store.Group{Name: g})
		for i := range 48 {
			a := app(16 + d*48 + i)
			snap.Rules = append(snap.Rules, store.Rule{Name: g + "-" + a, Group: g, App: a})
		}
	}
	now := time.Now()
	sessions := map[string]*session.Session{}
	for i := range n {
		u := fmt.Sprintf("user-%05d", i)
		id := fmt.Sprintf("dev-%05d", i)
		snap.Users = append(snap.Users, store.User{Name: u})
		groups[0].Members = append(groups[0].Members, u)
		groups[1+i%10].Members = append(groups[1+i%10].Members, u)
		snap.Devices = append(snap.Devices, store.Device{ID: id, User: u, PublicKey: key(),
			OverlayAddr: netip.AddrFrom4([4]byte{100, 65, byte(i >> 8), byte(i)})})
		sessions[id] = &session.Session{ID: "s-" + id, DeviceID: id, User: u, Started: now.Add(-time.Hour), LastActivity: now, MFAAt: now.Add(-time.Hour)}
	}
	snap.Groups = groups
	return snap, sessions
}

// benchIndex indexes snap with sessions gated, as the control server does.
func benchIndex(snap *store.Snapshot, sessions map[string]*session.Session) *Index {
	ix := NewIndex(snap)
	ix.SetSessions(session.DefaultLimits(), sessions, time.Now())
	ix.SetPublicAddrs(map[string]netip.Addr{})
	return ix
}

// pushMaps computes and encodes (as offerFrame does, to compare it with
// what the agent has) the maps of the agents aff names; it returns how
// many it computed.
func pushMaps(b *testing.B, ix *Index, snap *store.Snapshot, aff Affected) int {
	zones := ix.DNSZones(DNSConfig{})
	n := 0
	enc := func(v any) {
		if _, err := json.Marshal(v); err != nil {
			b.Fatal(err)
		}
		n++
	}
	for _, g := range snap.Gateways {
		if aff.Gateway(g.ID) {
			m := ix.GatewayMap(g)
			m.DNSZones = zones
			enc(&controlproto.Frame{Type: controlproto.TypeGatewayMap, GatewayMap: m})
		}
	}
	for _, d := range snap.Devices {
		if aff.Device(d.ID) {
			m := ix.ClientMap(d)
			m.DNSZones, m.Session = zones, ix.SessionInfo(d)
			enc(&controlproto.Frame{Type: controlproto.TypeClientMap, ClientMap: m})
		}
	}
	return n
}

// BenchmarkMembershipChange is what one user joining a second department
// costs the controller at 10,000 devices, after the store read: index the
// new snapshot, find the affected agents, compute and encode their maps.
// full is the same change recomputing every map, as before issue 11.
func BenchmarkMembershipChange(b *testing.B) {
	const n = 10000
	before, sessions := benchWorld(b, n)
	after := *before
	after.Groups = slices.Clone(before.Groups)
	g := &after.Groups[2] // dept-1; user-00000 is in dept-0
	g.Members = append(slices.Clone(g.Members), "user-00000")
	old := benchIndex(before, sessions)
	change := store.Change{Users: []string{"user-00000"}, Groups: []string{"dept-1"}}

	b.Run("incremental", func(b *testing.B) {
		var maps int
		for b.Loop() {
			cur := benchIndex(&after, sessions)
			aff := Affects(old, cur, change, DNSConfig{})
			maps = pushMaps(b, cur, &after, aff)
		}
		b.ReportMetric(float64(maps), "maps/op")
	})
	b.Run("full", func(b *testing.B) {
		var maps int
		for b.Loop() {
			cur := benchIndex(&after, sessions)
			maps = pushMaps(b, cur, &after, Affected{All: true})
		}
		b.ReportMetric(float64(maps), "maps/op")
	})
	b.Run("index-only", func(b *testing.B) {
		for b.Loop() {
			benchIndex(&after, sessions)
		}
	})
}

// The control server computes client maps of one index on several
// goroutines once it has checked every session at the index's time (which
// may end them: the only write). Run with -race.
func TestClientMapsConcurrentAfterSessionsSettled(t *testing.T) {
	snap, sessions := benchWorld(t, 300)
	now := time.Now()
	limits := session.Limits{DefaultIdle: time.Hour, Idle: map[session.Classification]time.Duration{"phi": time.Minute}, Absolute: 12 * time.Hour}
	for i, s := range sessions {
		switch i[len(i)-1] % 3 {
		case 0:
			s.LastActivity = now.Add(-2 * time.Hour) // ended by the check
		case 1:
			s.LastActivity = now.Add(-2 * time.Minute) // phi idles out
		}
	}
	ix := NewIndex(snap)
	ix.SetSessions(limits, sessions, now)
	for _, s := range sessions {
		limits.Check(s, now)
	}
	want := make([]string, len(snap.Devices))
	for i, d := range snap.Devices {
		b, _ := json.Marshal(ix.ClientMap(d))
		want[i] = string(b)
	}
	done := make(chan struct{})
	for range 4 {
		go func() { // each goroutine every device: the same sessions
			defer func() { done <- struct{}{} }()
			for i := range snap.Devices {
				d := snap.Devices[i]
				b, _ := json.Marshal(ix.ClientMap(d))
				if string(b) != want[i] {
					t.Errorf("device %s: concurrent map differs", d.ID)
				}
				ix.SessionInfo(d)
			}
		}()
	}
	for range 4 {
		<-done
	}
}

// BenchmarkMembershipChangePatched is the path a member change takes in
// the control server since partial reads: the change's entities patched
// into the last snapshot, the index built incrementally from the last
// one, sessions gated, the affected agents found, the device's map
// computed and the gateway's last map patched. The store read itself
// (SnapshotPart) is left out.
func BenchmarkMembershipChangePatched(b *testing.B) {
	const n = 10000
	before, sessions := benchWorld(b, n)
	old := benchIndex(before, sessions)
	gw := before.Gateways[0]
	oldGM := old.GatewayMap(gw)
	change := store.Change{Users: []string{"user-00000"}, Groups: []string{"dept-1"}}
	cover := before.Cover(change)
	part := &store.Snapshot{Users: []store.User{{Name: "user-00000"}}, Devices: []store.Device{before.Devices[0]}, Rules: before.Rules}
	for _, g := range before.Groups {
		if slices.Contains(cover.Groups, g.Name) {
			if g.Name == "dept-1" {
				g.Members = append(slices.Clone(g.Members), "user-00000")
			}
			part.Groups = append(part.Groups, g)
		}
	}
	limits := session.DefaultLimits()
	if !sameDirectory(before, before.Patch(part, cover)) {
		b.Fatal("the patched snapshot does not share the directory: NewIndexFrom would index everything")
	}
	for b.Loop() {
		snap := before.Patch(part, cover)
		cur := NewIndexFrom(old, snap, change, nil)
		now := time.Now()
		cur.SetSessions(limits, sessions, now)
		for _, s := range sessions {
			limits.Check(s, now)
		}
		cur.SetPublicAddrs(map[string]netip.Addr{})
		aff := Affects(old, cur, change, DNSConfig{})
		for id := range aff.Devices {
			if d, ok := cur.Device(id); ok {
				if _, err := json.Marshal(cur.ClientMap(d)); err != nil {
					b.Fatal(err)
				}
			}
		}
		if !aff.Gateway(gw.ID) {
			b.Fatal("the gateway is not affected")
		}
		cur.PatchGatewayMap(oldGM, gw, aff.Devices)
	}
}

// BenchmarkClientMaps10k computes and encodes every client map of the
// 10,000-device world from one index, with the segment behind one gateway
// and behind three (each device then ranks the three: RankGateways), and
// in the shape old clients get (Legacy).
func BenchmarkClientMaps10k(b *testing.B) {
	snap, sessions := benchWorld(b, 10000)
	three := *snap
	three.Gateways = slices.Clone(snap.Gateways)
	for i := 2; i <= 3; i++ {
		g := snap.Gateways[0]
		g.ID, g.Name = fmt.Sprintf("gw-%d", i), fmt.Sprintf("gw-%d", i)
		g.OverlayAddr = netip.AddrFrom4([4]byte{100, 64, 0, byte(i)})
		three.Gateways = append(three.Gateways, g)
	}
	for _, c := range []struct {
		name   string
		snap   *store.Snapshot
		legacy bool
	}{{"gateways=1", snap, false}, {"gateways=3", &three, false}, {"gateways=3/legacy", &three, true}} {
		b.Run(c.name, func(b *testing.B) {
			ix := benchIndex(c.snap, sessions)
			var bytes int
			for b.Loop() {
				bytes = 0
				for _, d := range c.snap.Devices {
					m := ix.ClientMap(d)
					if c.legacy {
						m = m.Legacy()
					}
					out, err := json.Marshal(m)
					if err != nil {
						b.Fatal(err)
					}
					bytes += len(out)
				}
			}
			b.ReportMetric(float64(bytes)/float64(len(c.snap.Devices)), "bytes/map")
		})
	}
}
