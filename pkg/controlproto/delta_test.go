package controlproto

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// gen makes random maps whose keyed lists draw from small key pools, so
// two maps share, lose and gain elements.
type gen struct{ r *rand.Rand }

func newGen(seed uint64) gen { return gen{rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))} }

func (g gen) pick(opts ...string) string { return opts[g.r.IntN(len(opts))] }

func (g gen) time() time.Time {
	if g.r.IntN(3) == 0 {
		return time.Time{}
	}
	return time.Unix(1_780_000_000+g.r.Int64N(1000), 0).UTC()
}

func (g gen) strs(pool ...string) []string {
	var out []string
	for _, s := range pool {
		if g.r.IntN(2) == 0 {
			out = append(out, s)
		}
	}
	return out
}

func (g gen) addr() netip.Addr {
	return netip.AddrFrom4([4]byte{100, 64, byte(g.r.IntN(2)), byte(1 + g.r.IntN(3))})
}

func (g gen) prefix() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(g.r.IntN(3)), 0, 0}), 16+g.r.IntN(2)*8)
}

func (g gen) prefixes() []netip.Prefix {
	var out []netip.Prefix
	for range g.r.IntN(3) {
		out = append(out, g.prefix())
	}
	return out
}

// allowedIPs is a client gateway's AllowedIPs: sorted and free of
// duplicates as the controller builds them (so they go as a PrefixDelta),
// and now and then not (so they go whole).
func (g gen) allowedIPs() []netip.Prefix {
	l := g.prefixes()
	if g.r.IntN(5) != 0 {
		slices.SortFunc(l, ComparePrefix)
		l = slices.Compact(l)
	}
	return l
}

func (g gen) ports() []policy.PortRange {
	var out []policy.PortRange
	for range g.r.IntN(3) {
		p := uint16(g.r.IntN(3) * 100)
		out = append(out, policy.PortRange{First: p, Last: p + uint16(g.r.IntN(2))})
	}
	return out
}

func (g gen) key(i int) wgkey.Public {
	var b [32]byte
	b[0], b[1] = byte(i), byte(g.r.IntN(2))
	return wgkey.PublicFromWGTypes(b)
}

// keyed keeps one element per key, in key order; nil when none.
func keyed[T any](g gen, n int, mk func(i int) T, key func(*T) string) []T {
	var out []T
	for i := range n {
		if g.r.IntN(3) != 0 {
			out = append(out, mk(i))
		}
	}
	slices.SortFunc(out, func(a, b T) int { return strings.Compare(key(&a), key(&b)) })
	return out
}

func (g gen) apps() []App {
	return keyed(g, 5, func(i int) App {
		return App{Name: fmt.Sprintf("app%d", i), DNSName: g.pick("", "ehr.hosp.internal", "pacs.hosp.internal"),
			Addr: g.prefix(), Proto: policy.Proto(g.pick("\x06", "\x11")[0]), Ports: g.ports(),
			Segment: g.pick("lab", "icu"), DNSAliases: g.strs("a.hosp.internal", "b.hosp.internal"), Classification: g.pick("phi", "public")}
	}, appKey)
}

func (g gen) zones() []DNSZone {
	var out []DNSZone
	for _, n := range g.strs("hosp.internal.", "10.in-addr.arpa.") {
		out = append(out, DNSZone{Name: n, TTL: uint32(g.r.IntN(2) * 30)})
	}
	return out
}

func (g gen) gatewayMap(rev uint64) *GatewayMap {
	m := &GatewayMap{Revision: rev, GatewayID: g.pick("gw-a", "gw-b"), OverlayAddr: g.addr(),
		DNSZones:         g.zones(),
		ActivityInterval: time.Duration(g.r.IntN(2)) * time.Second,
		GrantLifetime:    time.Duration(g.r.IntN(2)) * time.Hour,
		PolicyVersion:    int64(g.r.IntN(3)),
		Draining:         g.r.IntN(4) == 0,
	}
	if g.r.IntN(3) > 0 {
		m.Cluster = &GatewayCluster{Name: g.pick("icu", "lab")}
		for e := range uint64(g.r.IntN(3)) {
			m.Cluster.Keys = append(m.Cluster.Keys, ClusterKey{Epoch: 100 + e, Key: []byte(g.pick("k1", "k2"))})
		}
		for _, id := range g.strs("gw-a", "gw-b") {
			m.Cluster.Members = append(m.Cluster.Members, ClusterMember{GatewayID: id,
				Addr: netip.AddrPortFrom(g.addr(), 7946), CertKey: []byte(g.pick("c1", "c2"))})
		}
	}
	m.Segments = keyed(g, 4, func(i int) Segment { return Segment{Name: fmt.Sprintf("seg%d", i), CIDRs: g.prefixes()} }, segmentKey)
	m.Peers = keyed(g, 8, func(i int) GatewayPeer {
		p := GatewayPeer{Peer: policy.Peer{DeviceID: fmt.Sprintf("dev%02d", i), User: g.pick("ann", "bob"), Addr: g.addr(),
			Rules: []policy.RuleID{policy.RuleID(g.pick("r1", "r2"))}}, PublicKey: g.key(i), ExpiresAt: g.time(), SessionID: g.pick("s1", "s2")}
		if g.r.IntN(2) == 0 {
			p.Session = &policy.Session{MFAAt: g.time(), Posture: g.strs("disk", "fw"), PublicAddr: g.addr(),
				Groups: g.strs("icu", "lab"), Tags: g.strs("kiosk")}
		}
		return p
	}, peerKey)
	m.Rules = keyed(g, 5, func(i int) policy.Rule {
		r := policy.Rule{ID: policy.RuleID(fmt.Sprintf("r%d", i)), App: g.pick("app1", "app2"), Dst: g.prefixes(),
			Proto: policy.ProtoTCP, Ports: g.ports(), Name: g.pick("", "icu-ehr"), Deny: g.r.IntN(4) == 0}
		if g.r.IntN(2) == 0 {
			r.When = &policy.Conditions{MFA: g.r.IntN(2) == 0, MFAMaxAge: time.Duration(g.r.IntN(2)) * time.Hour,
				Posture: g.strs("disk"), SourceNets: g.prefixes(), CEL: g.pick("", "true")}
		}
		return r
	}, func(r *policy.Rule) string { return string(r.ID) })
	m.Apps = g.apps()
	return m
}

func (g gen) clientMap(rev uint64) *ClientMap {
	m := &ClientMap{Revision: rev, DeviceID: g.pick("dev1", "dev2"), User: g.pick("ann", "bob"), OverlayAddr: g.addr(),
		DNSZones: g.zones(), PostureInterval: time.Duration(g.r.IntN(2)) * time.Minute}
	if g.r.IntN(3) != 0 {
		m.Session = &SessionInfo{ID: g.pick("s1", "s2"), State: g.pick(SessionActive, SessionEnded), StartedAt: g.time(),
			IdleLimit: time.Duration(g.r.IntN(2)) * time.Minute, StepUp: nil}
		if g.r.IntN(2) == 0 {
			m.Session.StepUp = []StepUp{{App: "app1", At: g.time()}}
		}
	}
	m.Gateways = keyed(g, 4, func(i int) ClientGateway {
		return ClientGateway{GatewayID: fmt.Sprintf("gw%d", i), PublicKey: g.key(i), Endpoint: g.pick("gw:51820", "gw2:51820"),
			OverlayAddr: g.addr(), AllowedIPs: g.allowedIPs(), Apps: g.apps(), Instance: InstanceID(g.pick("", "i1")),
			Down: g.r.IntN(4) == 0, TCPEndpoint: g.pick("", "gw:443"), Draining: g.r.IntN(4) == 0}
	}, clientGatewayKey)
	if g.r.IntN(3) != 0 {
		m.Segments = keyed(g, 3, func(i int) ClientSegment {
			return ClientSegment{Name: fmt.Sprintf("seg%d", i), Gateways: g.strs("gw0", "gw1", "gw2"),
				AllowedIPs: g.prefixes(), Apps: g.apps()}
		}, clientSegmentKey)
	}
	return m
}

// roundTrip sends v through JSON, as the wire does.
func roundTrip[T any](t testing.TB, v *T) *T {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func checkGatewayDelta(t *testing.T, a, b *GatewayMap) {
	t.Helper()
	d, err := DiffGatewayMap(a, b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ApplyGatewayDelta(a, d)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if !reflect.DeepEqual(got, b) {
		t.Fatalf("Apply(a, Diff(a, b)) != b\n got %+v\nwant %+v\ndelta %+v", got, b, d)
	}
	// And over the wire: a delta frame decoded and applied to the map the
	// agent decoded gives the map the agent would have decoded.
	enc, err := EncodeFrame(&Frame{Type: TypeGatewayDelta, GatewayDelta: d})
	if err != nil {
		t.Fatal(err)
	}
	f, err := DecodeFrame(enc[4:])
	if err != nil {
		t.Fatal(err)
	}
	got, err = ApplyGatewayDelta(roundTrip(t, a), f.GatewayDelta)
	if err != nil {
		t.Fatalf("apply decoded: %v", err)
	}
	if want := roundTrip(t, b); !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded delta: got %+v\nwant %+v", got, want)
	}
}

func checkClientDelta(t *testing.T, a, b *ClientMap) {
	t.Helper()
	d, err := DiffClientMap(a, b, CapabilityVersion)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ApplyClientDelta(a, d)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if !reflect.DeepEqual(got, b) {
		t.Fatalf("Apply(a, Diff(a, b)) != b\n got %+v\nwant %+v\ndelta %+v", got, b, d)
	}
	enc, err := EncodeFrame(&Frame{Type: TypeClientDelta, ClientDelta: d})
	if err != nil {
		t.Fatal(err)
	}
	f, err := DecodeFrame(enc[4:])
	if err != nil {
		t.Fatal(err)
	}
	got, err = ApplyClientDelta(roundTrip(t, a), f.ClientDelta)
	if err != nil {
		t.Fatalf("apply decoded: %v", err)
	}
	if want := roundTrip(t, b); !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded delta: got %+v\nwant %+v", got, want)
	}
}

func TestDeltaRoundTripRandom(t *testing.T) {
	for seed := range uint64(2000) {
		g := newGen(seed)
		checkGatewayDelta(t, g.gatewayMap(seed+1), g.gatewayMap(seed+2))
		checkClientDelta(t, g.clientMap(seed+1), g.clientMap(seed+2))
	}
}

// FuzzDeltaRoundTrip is the property test with the fuzzer choosing the
// maps' seeds.
func FuzzDeltaRoundTrip(f *testing.F) {
	f.Add(uint64(1), uint64(2))
	f.Fuzz(func(t *testing.T, s1, s2 uint64) {
		a, b := newGen(s1), newGen(s2)
		checkGatewayDelta(t, a.gatewayMap(1), b.gatewayMap(2))
		checkClientDelta(t, a.clientMap(1), b.clientMap(2))
	})
}

// Every field of a map travels in its delta: a field added to a map must
// be added to the delta too (and to Diff and Apply, which the random
// round trip then checks once gen fills it).
func TestDeltaCoversEveryField(t *testing.T) {
	for _, c := range []struct{ m, d any }{{GatewayMap{}, GatewayMapDelta{}}, {ClientMap{}, ClientMapDelta{}}, {ClientGateway{}, ClientGatewayPatch{}}} {
		mt, dt := reflect.TypeOf(c.m), reflect.TypeOf(c.d)
		for i := range mt.NumField() {
			f := mt.Field(i)
			if f.Name == "Revision" {
				continue
			}
			df, ok := dt.FieldByName(f.Name)
			if !ok {
				t.Errorf("%s.%s has no counterpart in %s", mt.Name(), f.Name, dt.Name())
				continue
			}
			if name := func(tag string) string { return strings.Split(tag, ",")[0] }; name(f.Tag.Get("json")) == "" || name(df.Tag.Get("json")) != name(f.Tag.Get("json")) {
				t.Errorf("%s.%s: delta field tag %q does not match the map's %q", mt.Name(), f.Name, df.Tag.Get("json"), f.Tag.Get("json"))
			}
		}
	}
	// And the generator sets every field somewhere in a few maps.
	g := newGen(7)
	for _, mk := range []func() any{func() any { return *g.gatewayMap(1) }, func() any { return *g.clientMap(1) }} {
		seen := map[string]bool{}
		var typ reflect.Type
		for range 50 {
			v := reflect.ValueOf(mk())
			typ = v.Type()
			for i := range v.NumField() {
				if !v.Field(i).IsZero() {
					seen[typ.Field(i).Name] = true
				}
			}
		}
		for i := range typ.NumField() {
			if !seen[typ.Field(i).Name] {
				t.Errorf("gen never sets %s.%s: the round trip does not cover it", typ.Name(), typ.Field(i).Name)
			}
		}
	}
}

func TestApplyDeltaRejects(t *testing.T) {
	peer := func(id string) GatewayPeer { return GatewayPeer{Peer: policy.Peer{DeviceID: id}} }
	base := &GatewayMap{Revision: 4, Peers: []GatewayPeer{peer("a"), peer("c")}}
	for name, c := range map[string]struct {
		d    GatewayMapDelta
		want error
	}{
		"gap":             {GatewayMapDelta{From: 3, To: 5}, ErrRevisionGap},
		"backwards":       {GatewayMapDelta{From: 4, To: 4}, ErrBadDelta},
		"add existing":    {GatewayMapDelta{From: 4, To: 5, Peers: ListDelta[GatewayPeer, string]{Add: []GatewayPeer{peer("c")}}}, ErrBadDelta},
		"remove missing":  {GatewayMapDelta{From: 4, To: 5, Peers: ListDelta[GatewayPeer, string]{Remove: []string{"b"}}}, ErrBadDelta},
		"remove past end": {GatewayMapDelta{From: 4, To: 5, Peers: ListDelta[GatewayPeer, string]{Remove: []string{"z"}}}, ErrBadDelta},
		"change missing":  {GatewayMapDelta{From: 4, To: 5, Peers: ListDelta[GatewayPeer, string]{Change: []GatewayPeer{peer("b")}}}, ErrBadDelta},
		"add twice":       {GatewayMapDelta{From: 4, To: 5, Peers: ListDelta[GatewayPeer, string]{Add: []GatewayPeer{peer("b"), peer("b")}}}, ErrBadDelta},
		"remove and add":  {GatewayMapDelta{From: 4, To: 5, Peers: ListDelta[GatewayPeer, string]{Add: []GatewayPeer{peer("a")}, Remove: []string{"a"}}}, ErrBadDelta},
		"remove twice":    {GatewayMapDelta{From: 4, To: 5, Peers: ListDelta[GatewayPeer, string]{Remove: []string{"a", "a"}}}, ErrBadDelta},
	} {
		t.Run(name, func(t *testing.T) {
			before := roundTrip(t, base)
			if _, err := ApplyGatewayDelta(base, &c.d); !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
			if !reflect.DeepEqual(roundTrip(t, base), before) {
				t.Fatal("a rejected delta changed the map it was applied to")
			}
		})
	}
	// A base holding a key twice (a controller that sent such a full map)
	// takes no delta.
	dup := &GatewayMap{Revision: 1, Peers: []GatewayPeer{peer("a"), peer("a")}}
	if _, err := ApplyGatewayDelta(dup, &GatewayMapDelta{From: 1, To: 2, Peers: ListDelta[GatewayPeer, string]{Remove: []string{"a"}}}); !errors.Is(err, ErrBadDelta) {
		t.Fatalf("duplicate base: %v", err)
	}
	if _, err := DiffGatewayMap(dup, base); err == nil {
		t.Fatal("Diff of a map with a duplicate key: want an error (send it whole)")
	}
}

func TestDeltaFrameValidation(t *testing.T) {
	for name, body := range map[string]string{
		"missing payload":   `{"type":"gateway_map_delta"}`,
		"wrong payload":     `{"type":"gateway_map_delta","client_map_delta":{"from":1,"to":2}}`,
		"two payloads":      `{"type":"client_map_delta","client_map_delta":{"from":1,"to":2},"ack":{"revision":1}}`,
		"backwards":         `{"type":"client_map_delta","client_map_delta":{"from":2,"to":2}}`,
		"bad list":          `{"type":"gateway_map_delta","gateway_map_delta":{"from":1,"to":2,"peers":{"add":7}}}`,
		"unknown map field": `{"type":"gateway_map_delta","gateway_map_delta":{"from":1,"to":2,"overlay_addr":{"v":"nope"}}}`,
	} {
		if _, err := DecodeFrame([]byte(body)); err == nil {
			t.Errorf("%s: accepted %s", name, body)
		}
	}
	if _, err := DecodeFrame([]byte(`{"type":"gateway_map_delta","gateway_map_delta":{"from":1,"to":3}}`)); err != nil {
		t.Errorf("valid empty delta: %v", err)
	}
}

// FuzzDecodeDeltaFrame feeds untrusted bytes to what an agent does with a
// frame: decode it and, if it is a delta, apply it to the map it holds.
// Bad input must give an error, never a panic, and never change the map.
func FuzzDecodeDeltaFrame(f *testing.F) {
	g := newGen(1)
	gm, cm := g.gatewayMap(3), g.clientMap(3)
	for seed := range uint64(8) {
		g := newGen(seed + 100)
		gd, _ := DiffGatewayMap(gm, g.gatewayMap(4))
		cd, _ := DiffClientMap(cm, g.clientMap(4), CapabilityVersion)
		for _, fr := range []*Frame{{Type: TypeGatewayDelta, GatewayDelta: gd}, {Type: TypeClientDelta, ClientDelta: cd}} {
			b, err := EncodeFrame(fr)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b[4:])
		}
	}
	f.Add([]byte(`{"type":"gateway_map_delta","gateway_map_delta":{"from":3,"to":4,"peers":{"remove":["zz"]}}}`))
	f.Add([]byte(`{"type":"client_map_delta","client_map_delta":{"from":3,"to":4,"session":{"v":null}}}`))
	gmWant, cmWant := roundTrip(f, gm), roundTrip(f, cm)
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeFrame(b)
		if err != nil {
			return
		}
		switch {
		case fr.GatewayDelta != nil:
			if m, err := ApplyGatewayDelta(gm, fr.GatewayDelta); err == nil {
				if _, err := json.Marshal(m); err != nil {
					t.Fatalf("applied map does not encode: %v", err)
				}
			}
		case fr.ClientDelta != nil:
			if m, err := ApplyClientDelta(cm, fr.ClientDelta); err == nil {
				if _, err := json.Marshal(m); err != nil {
					t.Fatalf("applied map does not encode: %v", err)
				}
			}
		}
		if !reflect.DeepEqual(roundTrip(t, gm), gmWant) || !reflect.DeepEqual(roundTrip(t, cm), cmWant) {
			t.Fatal("applying a delta changed the map it was applied to")
		}
	})
}

// A new app for everyone: each client gets the app, not its gateway's
// whole list of apps.
func TestClientDeltaPatchesGateway(t *testing.T) {
	g := newGen(3)
	old := g.clientMap(1)
	for len(old.Gateways) == 0 {
		old = g.clientMap(1)
	}
	var apps []App
	for i := range 64 {
		apps = append(apps, App{Name: fmt.Sprintf("app%03d", i), DNSName: fmt.Sprintf("app%03d.hosp.internal", i),
			Addr: netip.MustParsePrefix(fmt.Sprintf("10.30.0.%d/32", i+1)), Proto: policy.ProtoTCP, Segment: "icu"})
	}
	old.Gateways[0].Apps = apps
	next := *old
	next.Revision = 2
	next.Gateways = slices.Clone(old.Gateways)
	next.Gateways[0].Apps = append(slices.Clone(apps), App{Name: "app999", DNSName: "new.hosp.internal",
		Addr: netip.MustParsePrefix("10.30.1.1/32"), Proto: policy.ProtoTCP, Segment: "icu"})
	next.Gateways[0].AllowedIPs = append(slices.Clone(next.Gateways[0].AllowedIPs), netip.MustParsePrefix("10.30.1.1/32"))
	d, err := DiffClientMap(old, &next, CapabilityVersion)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.GatewayPatches) != 1 || len(d.GatewayPatches[0].Apps.Add) != 1 || len(d.Gateways.Change) != 0 {
		t.Fatalf("delta %+v: want one patch adding one app", d)
	}
	if !d.SmallerThan(&next) {
		t.Error("one app of 65 added: the delta should be smaller")
	}
	if p := d.GatewayPatches[0]; p.AllowedIPs != nil || p.AllowedIPsDelta == nil || len(p.AllowedIPsDelta.Add) != 1 || len(p.AllowedIPsDelta.Remove) != 0 {
		t.Errorf("patch %+v: want the one new prefix in AllowedIPsDelta", p)
	}
	// A client before capability 9 gets the whole list.
	if d8, err := DiffClientMap(old, &next, MinPrefixDeltaCapability-1); err != nil {
		t.Fatal(err)
	} else if p := d8.GatewayPatches[0]; p.AllowedIPsDelta != nil || p.AllowedIPs == nil || !slices.Equal(p.AllowedIPs.V, next.Gateways[0].AllowedIPs) {
		t.Errorf("capability 8: patch %+v, want AllowedIPs whole", p)
	}
	checkClientDelta(t, old, &next)
	dl, _ := EncodeFrame(&Frame{Type: TypeClientDelta, ClientDelta: d})
	full, _ := EncodeFrame(&Frame{Type: TypeClientMap, ClientMap: &next})
	t.Logf("new app for everyone, per client: delta %d bytes, whole map %d bytes", len(dl), len(full))
	// A patch may not name a gateway the delta also adds or removes, nor
	// one the map lacks.
	for _, bad := range []ClientMapDelta{
		{From: 1, To: 2, GatewayPatches: []ClientGatewayPatch{{GatewayID: "nope"}}},
		{From: 1, To: 2, Gateways: ListDelta[ClientGateway, string]{Remove: []string{old.Gateways[0].GatewayID}},
			GatewayPatches: []ClientGatewayPatch{{GatewayID: old.Gateways[0].GatewayID}}},
		{From: 1, To: 2, GatewayPatches: []ClientGatewayPatch{{GatewayID: old.Gateways[0].GatewayID}, {GatewayID: old.Gateways[0].GatewayID}}},
	} {
		if _, err := ApplyClientDelta(old, &bad); !errors.Is(err, ErrBadDelta) {
			t.Errorf("delta %+v: err %v, want ErrBadDelta", bad, err)
		}
	}
}

func TestSmallerThan(t *testing.T) {
	full := bigGatewayMap(100)
	next := bigGatewayMap(100)
	next.Revision = 2
	next.Peers[5].User = "changed"
	d, err := DiffGatewayMap(full, next)
	if err != nil {
		t.Fatal(err)
	}
	if !d.SmallerThan(next) {
		t.Error("one changed peer of 100: the delta should be smaller")
	}
	for i := range next.Peers {
		next.Peers[i].User = "all changed"
	}
	if d, _ = DiffGatewayMap(full, next); !d.SmallerThan(next) {
		t.Error("every peer changed, rules and apps not: the delta should be smaller")
	}
	for i := range next.Rules {
		next.Rules[i].Name = "all changed"
		next.Apps[i].DNSName = "all.changed"
	}
	next.Segments = []Segment{{Name: "icu"}}
	if d, _ = DiffGatewayMap(full, next); d.SmallerThan(next) {
		t.Error("every element changed: the whole map is no larger")
	}
	empty := &GatewayMap{Revision: 3}
	if d, _ = DiffGatewayMap(full, empty); d.SmallerThan(empty) {
		t.Error("everything removed: the (empty) whole map is smaller")
	}
}

// bigGatewayMap is a gateway map with n peers the way the controller makes
// them: a session each, a few rules, sorted by device ID.
func bigGatewayMap(n int) *GatewayMap {
	m := &GatewayMap{Revision: 1, GatewayID: "gw-1", OverlayAddr: netip.MustParseAddr("100.64.0.1"),
		DNSZones:      []DNSZone{{Name: "hosp.internal.", TTL: 30}},
		GrantLifetime: DefaultGrantLifetime, ActivityInterval: 10 * time.Second,
		Segments: []Segment{{Name: "icu", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/24")}}},
	}
	for i := range 20 {
		m.Apps = append(m.Apps, App{Name: fmt.Sprintf("app%03d", i), DNSName: fmt.Sprintf("app%03d.hosp.internal", i),
			Addr: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 20, 0, byte(i + 1)}), 32), Proto: policy.ProtoTCP,
			Ports: []policy.PortRange{{First: 443, Last: 443}}, Segment: "icu"})
		m.Rules = append(m.Rules, policy.Rule{ID: policy.RuleID(fmt.Sprintf("r%03d", i)), App: m.Apps[i].Name,
			Dst: []netip.Prefix{m.Apps[i].Addr}, Proto: policy.ProtoTCP, Ports: m.Apps[i].Ports, Name: "rule"})
	}
	mfa := time.Unix(1_780_000_000, 0).UTC()
	for i := range n {
		var k [32]byte
		k[0], k[1], k[2] = byte(i), byte(i>>8), byte(i>>16)
		pk := wgkey.PublicFromWGTypes(k)
		m.Peers = append(m.Peers, GatewayPeer{
			Peer: policy.Peer{DeviceID: fmt.Sprintf("dev-%06d", i), User: fmt.Sprintf("user%d", i),
				Addr:  netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)}),
				Rules: []policy.RuleID{"r000", "r001", policy.RuleID(fmt.Sprintf("r%03d", 2+i%18))},
				Session: &policy.Session{MFAAt: mfa, Posture: []string{"disk-encryption", "firewall"},
					PublicAddr: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), Groups: []string{"all", "icu"}}},
			PublicKey: pk, ExpiresAt: mfa.Add(12 * time.Hour),
		})
	}
	return m
}

// BenchmarkGatewayDelta10k: a gateway map with 10,000 peers where one
// peer changes, sent as a delta and as the whole map: time to build and
// encode (what the controller does per send), and bytes on the wire.
func BenchmarkGatewayDelta10k(b *testing.B) {
	old := bigGatewayMap(10000)
	next := bigGatewayMap(10000)
	next.Revision = 2
	next.Peers[5000].Rules = []policy.RuleID{"r000"}
	b.Run("full", func(b *testing.B) {
		var n int
		for b.Loop() {
			enc, err := EncodeFrame(&Frame{Type: TypeGatewayMap, GatewayMap: next})
			if err != nil {
				b.Fatal(err)
			}
			n = len(enc)
		}
		b.ReportMetric(float64(n), "bytes/frame")
	})
	b.Run("delta", func(b *testing.B) {
		var n int
		for b.Loop() {
			d, err := DiffGatewayMap(old, next)
			if err != nil {
				b.Fatal(err)
			}
			enc, err := EncodeFrame(&Frame{Type: TypeGatewayDelta, GatewayDelta: d})
			if err != nil {
				b.Fatal(err)
			}
			n = len(enc)
		}
		b.ReportMetric(float64(n), "bytes/frame")
	})
	b.Run("equal", func(b *testing.B) { // the controller's "did it change?" before it queues a map
		for b.Loop() {
			if EqualGatewayMaps(old, next) {
				b.Fatal("equal")
			}
		}
	})
	// The agent's side: decode and apply, against decoding the whole map.
	fullEnc, _ := EncodeFrame(&Frame{Type: TypeGatewayMap, GatewayMap: next})
	d, _ := DiffGatewayMap(old, next)
	deltaEnc, _ := EncodeFrame(&Frame{Type: TypeGatewayDelta, GatewayDelta: d})
	b.Run("agent-full", func(b *testing.B) {
		for b.Loop() {
			if _, err := DecodeFrame(fullEnc[4:]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("agent-delta", func(b *testing.B) {
		for b.Loop() {
			f, err := DecodeFrame(deltaEnc[4:])
			if err != nil {
				b.Fatal(err)
			}
			if _, err := ApplyGatewayDelta(old, f.GatewayDelta); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The typed equality functions (equal.go) compare every field: when a
// type gains one, this fails until its function compares it too and the
// count here is raised.
func TestEqualCoversEveryField(t *testing.T) {
	for _, c := range []struct {
		v      any
		fields int
		where  string
	}{
		{GatewayMap{}, 13, "EqualGatewayMaps"},
		{GatewayCluster{}, 3, "clusterEq"},
		{ClusterKey{}, 2, "clusterEq"},
		{ClusterMember{}, 3, "clusterEq"},
		{ClientMap{}, 9, "EqualClientMaps"},
		{ClientSegment{}, 4, "clientSegmentEq"},
		{GatewayPeer{}, 4, "peerEq"},
		{policy.Peer{}, 5, "peerEq"},
		{policy.Session{}, 6, "sessionEq"},
		{policy.Rule{}, 8, "ruleEq"},
		{policy.Conditions{}, 6, "conditionsEq"},
		{policy.TimeWindow{}, 4, "conditionsEq (compared with ==)"},
		{App{}, 8, "appEq"},
		{Segment{}, 2, "segmentEq"},
		{ClientGateway{}, 10, "clientGatewayEq"},
		{DNSZone{}, 2, "sliceEq (compared with ==)"},
	} {
		typ := reflect.TypeOf(c.v)
		if typ.NumField() != c.fields {
			t.Errorf("%s has %d fields, not %d: compare the new one in %s, then update this test", typ, typ.NumField(), c.fields, c.where)
		}
	}
}

// The typed equality agrees with reflect.DeepEqual, revisions aside.
func TestEqualMapsMatchesDeepEqual(t *testing.T) {
	for seed := range uint64(500) {
		a, b := newGen(seed), newGen(seed/2*2) // every other pair is the same map
		ga, gb := a.gatewayMap(1), b.gatewayMap(2)
		gbr := *gb
		gbr.Revision = ga.Revision
		if got, want := EqualGatewayMaps(ga, gb), reflect.DeepEqual(ga, &gbr); got != want {
			t.Fatalf("seed %d: EqualGatewayMaps %v, DeepEqual %v", seed, got, want)
		}
		ca, cb := a.clientMap(1), b.clientMap(2)
		cbr := *cb
		cbr.Revision = ca.Revision
		if got, want := EqualClientMaps(ca, cb), reflect.DeepEqual(ca, &cbr); got != want {
			t.Fatalf("seed %d: EqualClientMaps %v, DeepEqual %v", seed, got, want)
		}
	}
}
