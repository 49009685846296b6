package netmap_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/netmap"
	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/posture"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// The proof of incremental maps (issue 11): random sequences of changes
// against a real store, each published as the store.Change the state owner
// would publish. After each, the maps held for every agent (computed when
// netmap.Affects said the change reached them, else left from before) must
// equal the maps computed from scratch from a full snapshot.

var propDNS = netmap.DNSConfig{Zones: []string{"h.internal"}}

func TestIncrementalMapsEqualFromScratch(t *testing.T) {
	seeds, steps := 8, 150
	if testing.Short() {
		seeds, steps = 4, 100
	}
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			t.Parallel()
			w := newPropWorld(t, uint64(seed))
			// Half the runs apply a policy part way (and then keep
			// changing the directory under it); the others never do.
			policyAt := -1
			if seed%2 == 1 {
				policyAt = w.rng.IntN(steps)
			}
			for i := range steps {
				var what string
				var c store.Change
				if i == policyAt || (w.pols > 0 && w.rng.IntN(40) == 0) {
					what, c = w.applyPolicy()
				} else {
					what, c = w.step()
				}
				w.check(t, i, what, c)
			}
			t.Logf("%d maps recomputed, %d left alone, %d live maps checked, %d changes patched in, %d gateway maps patched", w.reached, w.skipped, w.live, w.patched, w.patchedMaps)
			if w.reached == 0 || w.skipped == 0 || w.live < steps/4 || w.patched < steps/4 || w.patchedMaps == 0 {
				t.Errorf("over %d steps %d maps recomputed, %d left alone, %d live maps checked, %d patched: the run exercised too little", steps, w.reached, w.skipped, w.live, w.patched)
			}
		})
	}
}

type propWorld struct {
	t      *testing.T
	ctx    context.Context
	st     *sqlite.Store
	rng    *rand.Rand
	sm     *session.Manager
	now    time.Time
	public map[string]netip.Addr
	down   map[string]bool // gateways the controller knows to be down
	ix     *netmap.Index
	held   map[string]string // "gw:ID" or "dev:ID" → the map it holds
	seq    int
	pols   int // policies applied

	reached, skipped int
	patched          int // changes applied by a partial snapshot
	patchedMaps      int // gateway maps patched
	// live counts held maps with a relation in them (a gateway with
	// peers, a client with a gateway): a run without them proves little.
	live int
}

func newPropWorld(t *testing.T, seed uint64) *propWorld {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "cordon.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	// PHI apps idle out after 20 min; sessions start 5 to 65 min ago, so
	// some devices reach only their non-PHI apps.
	limits := session.Limits{DefaultIdle: time.Hour, Idle: map[session.Classification]time.Duration{"phi": 20 * time.Minute}, Absolute: 12 * time.Hour}
	sm, err := session.NewManager(session.ManagerConfig{Store: st, Limits: limits, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	w := &propWorld{t: t, ctx: ctx, st: st, rng: rand.New(rand.NewPCG(seed, 11)), sm: sm, now: now,
		public: map[string]netip.Addr{}, held: map[string]string{}, down: map[string]bool{}}
	w.populate()
	w.ix = w.index()
	return w
}

// index computes from a full snapshot.
func (w *propWorld) index() *netmap.Index {
	snap, err := w.st.Snapshot(w.ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	return w.indexOf(netmap.NewIndex(snap), snap)
}

// indexAfter computes after change c as the control server does: from
// the snapshot of the current index with what c changed read and patched
// in when c allows it (store.Change.Partial), indexed from the current
// index (netmap.NewIndexFrom), else from a full one. The patched snapshot
// must equal a full one; the maps, those from scratch (check).
func (w *propWorld) indexAfter(c store.Change) *netmap.Index {
	if !c.Partial() {
		return w.index()
	}
	prev := w.ix.Snapshot()
	part, err := w.st.SnapshotPart(w.ctx, prev.Cover(c))
	if err != nil {
		w.t.Fatal(err)
	}
	patched := prev.Patch(part, c)
	full, err := w.st.Snapshot(w.ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	got, _ := json.Marshal(patched)
	want, _ := json.Marshal(full)
	if string(got) != string(want) {
		w.t.Fatalf("change %+v: the patched snapshot differs from a full one\n got: %s\nwant: %s", c, got, want)
	}
	w.patched++
	return w.indexOf(netmap.NewIndexFrom(w.ix, patched, c, nil), patched)
}

func (w *propWorld) indexOf(ix *netmap.Index, snap *store.Snapshot) *netmap.Index {
	ix.SetSessions(w.sm.Limits(), w.sm.View(snap.Sessions), w.now)
	pub := make(map[string]netip.Addr, len(w.public))
	for id, a := range w.public {
		pub[id] = a
	}
	ix.SetPublicAddrs(pub)
	ix.SetGatewayDown(maps.Clone(w.down))
	return ix
}

// agents lists every agent of ix's snapshot as a held-map key.
func agents(ix *netmap.Index, st *sqlite.Store, ctx context.Context) []string {
	var out []string
	gws, _ := st.ListGateways(ctx)
	for _, g := range gws {
		out = append(out, "gw:"+g.ID)
	}
	devs, _ := st.ListDevices(ctx)
	for _, d := range devs {
		out = append(out, "dev:"+d.ID)
	}
	return out
}

// agentMap is the map an agent gets from ix (as the control server fills
// it in), or "" if ix no longer knows the agent (its connection is closed).
func agentMap(ix *netmap.Index, key string) string {
	kind, id, _ := strings.Cut(key, ":")
	var v any
	zones := ix.DNSZones(propDNS)
	if kind == "gw" {
		gw, ok := ix.Gateway(id)
		if !ok {
			return ""
		}
		m := ix.GatewayMap(gw)
		m.DNSZones = zones
		v = m
	} else {
		d, ok := ix.Device(id)
		if !ok || !d.RevokedAt.IsZero() {
			return ""
		}
		m := ix.ClientMap(d)
		m.DNSZones = zones
		m.Session = ix.SessionInfo(d)
		v = m
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// check publishes c as the engine gets it and compares every held map
// with one computed from scratch.
func (w *propWorld) check(t *testing.T, step int, what string, c store.Change) {
	t.Helper()
	next := w.indexAfter(c)
	aff := netmap.Affects(w.ix, next, c, propDNS)
	for key := range w.held {
		kind, id, _ := strings.Cut(key, ":")
		if (kind == "gw" && aff.Gateway(id)) || (kind == "dev" && aff.Device(id)) {
			full := agentMap(next, key)
			if kind == "gw" && aff.PeersOnly(id) && w.held[key] != "" {
				// Patched from the map it held, as the control server
				// does, it must be the map computed whole.
				var prev controlproto.GatewayMap
				if err := json.Unmarshal([]byte(w.held[key]), &prev); err != nil {
					t.Fatal(err)
				}
				gw, _ := next.Gateway(id)
				b, _ := json.Marshal(next.PatchGatewayMap(&prev, gw, aff.Devices))
				if string(b) != full {
					t.Fatalf("step %d: %s, published %+v: %s patched differs from computed whole\n got: %s\nwant: %s", step, what, c, key, b, full)
				}
				w.patchedMaps++
			}
			w.held[key] = full
			w.reached++
		} else {
			w.skipped++
		}
	}
	w.ix = next
	fresh := w.index() // from scratch: a snapshot of its own
	keys := agents(fresh, w.st, w.ctx)
	for _, key := range keys {
		if _, ok := w.held[key]; !ok { // connects: its own map from the current index
			w.held[key] = agentMap(next, key)
		}
	}
	for key, got := range w.held {
		want := agentMap(fresh, key)
		if strings.Contains(want, `"device_id"`) && strings.Contains(want, `"gateway_id"`) {
			w.live++
		}
		if got != want {
			t.Fatalf("step %d: %s, published %+v: %s holds a stale map\n got: %s\nwant: %s", step, what, c, key, got, want)
		}
		if want == "" && !slices.Contains(keys, key) {
			delete(w.held, key) // deleted, and reached: its connection was closed
		}
	}
}

// populate starts from a directory where most changes touch live
// relations: every user, segment and app exists, each group has members
// and rules, gateways serve every segment, and most devices are signed in.
func (w *propWorld) populate() {
	r, ctx, st := w.rng, w.ctx, w.st
	must := func(err error) {
		if err != nil && !errors.Is(err, store.ErrAlreadyExists) && !errors.Is(err, store.ErrNotFound) {
			w.t.Fatal(err)
		}
	}
	for i := range nUsers {
		must(st.CreateUser(ctx, store.User{Name: fmt.Sprint("u", i)}))
	}
	for i := range nSegs {
		must(st.CreateSegment(ctx, store.Segment{Name: fmt.Sprint("s", i), CIDRs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/24", i))}}))
	}
	for i := range nGroups {
		must(st.CreateGroup(ctx, store.Group{Name: fmt.Sprint("g", i)}))
		for range 3 {
			must(st.AddMember(ctx, fmt.Sprint("g", i), pick(r, "u", nUsers)))
		}
	}
	for i := range nApps {
		what, err, _ := w.createApp(fmt.Sprint("a", i), pick(r, "s", nSegs))
		if err != nil {
			w.t.Fatalf("%s: %v", what, err)
		}
	}
	for i := range nRules / 2 {
		must(st.CreateRule(ctx, store.Rule{Name: fmt.Sprint("r", i), Group: pick(r, "g", nGroups), App: pick(r, "a", nApps)}))
	}
	for i := range nGWs {
		if what, c := w.enrollGateway(fmt.Sprint("gw", i), fmt.Sprint("s", i%nSegs)); c.IsZero() {
			w.t.Fatal(what)
		}
	}
	for i := range nDevs {
		id := fmt.Sprint("d", i)
		_, err := st.CreateDevice(ctx, store.Device{ID: id, User: pick(r, "u", nUsers), Hostname: id, PublicKey: newKey(w.t)})
		must(err)
		if r.IntN(5) > 0 {
			must(w.startSession(id))
		}
	}
}

// Small pools of names, so changes collide with what exists.
const (
	nUsers, nGroups, nSegs, nApps, nRules, nGWs, nDevs = 8, 4, 3, 8, 10, 4, 12
)

func pick(r *rand.Rand, prefix string, n int) string { return fmt.Sprintf("%s%d", prefix, r.IntN(n)) }

// step makes one random change and returns what it did and the change
// the state owner would publish for it (zero if the store refused it).
func (w *propWorld) step() (string, store.Change) {
	r, ctx, st := w.rng, w.ctx, w.st
	w.seq++
	ok := func(what string, err error, c store.Change) (string, store.Change) {
		if err != nil {
			if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrAlreadyExists) || errors.Is(err, store.ErrInUse) ||
				errors.Is(err, store.ErrDisabled) || errors.Is(err, store.ErrTokenInvalid) {
				return what + " (refused: " + err.Error() + ")", store.Change{}
			}
			w.t.Fatalf("%s: %v", what, err)
		}
		return what, c
	}
	u, g, sg, a := pick(r, "u", nUsers), pick(r, "g", nGroups), pick(r, "s", nSegs), pick(r, "a", nApps)
	if r.IntN(12) == 0 {
		// The controller loses (or regains) a gateway's control channel:
		// no store write, a change naming the gateway (control/health.go).
		id := pick(r, "gw", nGWs)
		w.down[id] = !w.down[id]
		return fmt.Sprintf("gateway %s down: %v", id, w.down[id]), store.Change{Gateways: []string{id}}
	}
	switch op := r.IntN(30); op {
	case 0, 1:
		return ok("create user "+u, st.CreateUser(ctx, store.User{Name: u}), store.Change{Users: []string{u}})
	case 2:
		return ok("delete user "+u, st.DeleteUser(ctx, u), store.Change{Users: []string{u}})
	case 3:
		dis := r.IntN(2) == 0
		_, err := st.SetUserDisabled(ctx, u, dis, w.now)
		return ok(fmt.Sprintf("disable user %s: %v", u, dis), err, store.Change{Users: []string{u}})
	case 4:
		return ok("create group "+g, st.CreateGroup(ctx, store.Group{Name: g}), store.Change{Groups: []string{g}})
	case 5:
		return ok("delete group "+g, st.DeleteGroup(ctx, g), store.Change{Groups: []string{g}})
	case 6, 7, 8:
		return ok("add "+u+" to "+g, st.AddMember(ctx, g, u), store.Change{Users: []string{u}, Groups: []string{g}})
	case 9, 10:
		return ok("remove "+u+" from "+g, st.RemoveMember(ctx, g, u), store.Change{Users: []string{u}, Groups: []string{g}})
	case 11:
		i := sg[1:]
		return ok("create segment "+sg, st.CreateSegment(ctx, store.Segment{Name: sg, CIDRs: []netip.Prefix{netip.MustParsePrefix("10." + i + ".0.0/24")}}),
			store.Change{Segments: []string{sg}})
	case 12:
		return ok("delete segment "+sg, st.DeleteSegment(ctx, sg), store.Change{Segments: []string{sg}})
	case 13, 14:
		return ok(w.createApp(a, sg))
	case 15:
		return ok("delete app "+a, st.DeleteApp(ctx, a), store.Change{Apps: []string{a}})
	case 16, 17:
		name := pick(r, "r", nRules)
		return ok(fmt.Sprintf("create rule %s: %s → %s", name, g, a), st.CreateRule(ctx, store.Rule{Name: name, Group: g, App: a}), w.ruleChange(g, a))
	case 18:
		name := pick(r, "r", nRules)
		rule, err := st.GetRule(ctx, name)
		if err != nil {
			return ok("delete rule "+name, err, store.Change{})
		}
		return ok("delete rule "+name, st.DeleteRule(ctx, name), w.ruleChange(rule.Group, rule.App))
	case 19:
		return w.enrollGateway(pick(r, "gw", nGWs), sg)
	case 20:
		id := pick(r, "gw", nGWs)
		ep := []string{"", "192.0.2.1:51820", "192.0.2.2:51820"}[r.IntN(3)]
		return ok("gateway "+id+" endpoint "+ep, st.UpdateGatewayEndpoint(ctx, id, ep), store.Change{Gateways: []string{id}})
	case 21:
		id := pick(r, "gw", nGWs)
		return ok("delete gateway "+id, st.DeleteGateway(ctx, id), store.Change{Gateways: []string{id}})
	case 22, 23:
		id := pick(r, "d", nDevs)
		_, err := st.CreateDevice(ctx, store.Device{ID: id, User: u, Hostname: id, PublicKey: newKey(w.t)})
		return ok("create device "+id+" of "+u, err, store.Change{Devices: []string{id}})
	case 24:
		id := pick(r, "d", nDevs)
		switch r.IntN(3) {
		case 0:
			return ok("delete device "+id, st.DeleteDevice(ctx, id), store.Change{Devices: []string{id}})
		case 1:
			_, err := st.RevokeDevice(ctx, id, w.now)
			return ok("revoke device "+id, err, store.Change{Devices: []string{id}})
		default:
			d, err := st.GetDevice(ctx, id)
			if err == nil {
				d.MFAAt = w.now.Add(-time.Duration(r.IntN(120)) * time.Minute)
				err = st.UpdateDevice(ctx, d)
			}
			return ok("device "+id+" signs in again", err, store.Change{Devices: []string{id}})
		}
	case 25, 26:
		id := pick(r, "d", nDevs)
		d, err := st.GetDevice(ctx, id)
		if err != nil {
			return ok("start session on "+id, err, store.Change{})
		}
		if r.IntN(3) == 0 {
			_, err = st.EndSessions(ctx, store.SessionFilter{DeviceID: id}, w.now.Add(-time.Minute), store.EndAdmin)
			return ok("end session on "+id, err, store.Change{Devices: []string{id}})
		}
		_ = d
		return ok("start session on "+id, w.startSession(id), store.Change{Devices: []string{id}})
	case 27:
		id := pick(r, "d", nDevs)
		state := []posture.State{posture.Yes, posture.No}[r.IntN(2)]
		rep := posture.Report{CollectedAt: w.now, OS: "debian", OSVersion: "12", DiskEncryption: posture.Check{State: state},
			Firewall: posture.Check{State: posture.Yes}, ScreenLock: posture.Check{State: posture.Unknown}}
		err := st.PutPosture(ctx, store.PostureRecord{DeviceID: id, Report: rep, Digest: string(state), ReceivedAt: w.now, ChangedAt: w.now})
		return ok("posture of "+id+": disk "+string(state), err, store.Change{Devices: []string{id}})
	case 28:
		id := pick(r, "d", nDevs)
		// As the control server does: a change only if maps carry it.
		addr := netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + r.IntN(3))})
		w.public[id] = addr
		if !w.ix.PublicAddrChanged(id, addr) {
			return "device " + id + " connects from " + addr.String() + " (no map carries it)", store.Change{}
		}
		return "device " + id + " connects from " + addr.String(), store.Change{Devices: []string{id}}
	default:
		// IdP-linked users: their group claims feed the policy's groups.
		name := pick(r, "idp", 3)
		groups := []string{[]string{"Nurses", "Lab", "Other"}[r.IntN(3)]}
		id := store.Identity{IdP: "okta", Subject: name, User: name, Claim: "groups", Groups: groups, LastRefresh: w.now}
		if r.IntN(4) == 0 {
			id.InvalidAt = w.now
		}
		if _, err := st.GetIdentity(ctx, "okta", name); err == nil {
			return ok("refresh "+name+" with groups "+groups[0], st.UpdateIdentity(ctx, id), store.Change{Users: []string{name}})
		}
		_, err := st.LinkIdentity(ctx, id)
		return ok("link "+name, err, store.Change{Users: []string{name}})
	}
}

// createApp creates app a in segment sg, with random details.
func (w *propWorld) createApp(a, sg string) (string, error, store.Change) {
	r := w.rng
	// DNS names are unique across apps (the store refuses a second app
	// with a name another has).
	dns := []string{"", a + ".h.internal", a + ".lab.example", a + ".other.example"}[r.IntN(4)]
	class := []store.Classification{store.ClassPHI, store.ClassInternal, store.ClassPublic}[r.IntN(3)]
	app := store.App{Name: a, Segment: sg, DNSName: dns, Addr: netip.MustParsePrefix(fmt.Sprintf("10.%s.0.%d/32", sg[1:], 10+r.IntN(5))),
		Proto: policy.ProtoTCP, Ports: []policy.PortRange{{First: 443, Last: 443}}, Classification: class}
	return "create app " + a + " in " + sg, w.st.CreateApp(w.ctx, app), store.Change{Apps: []string{a}}
}

// startSession signs device id in (with MFA or not), 5 to 65 min ago.
func (w *propWorld) startSession(id string) error {
	d, err := w.st.GetDevice(w.ctx, id)
	if err != nil {
		return err
	}
	w.seq++
	started := w.now.Add(-time.Duration(5+w.rng.IntN(60)) * time.Minute)
	var mfa time.Time
	if w.rng.IntN(2) == 0 {
		mfa = started
	}
	_, err = w.st.StartSession(w.ctx, store.Session{ID: fmt.Sprint("sess", w.seq), DeviceID: id, User: d.User, StartedAt: started, MFAAt: mfa})
	return err
}

// ruleChange is how a rule change is published: by its app, its group, or
// both (the engine must cope with each).
func (w *propWorld) ruleChange(group, app string) store.Change {
	switch w.rng.IntN(3) {
	case 0:
		return store.Change{Apps: []string{app}}
	case 1:
		return store.Change{Groups: []string{group}}
	}
	return store.Change{Apps: []string{app}, Groups: []string{group}}
}

func (w *propWorld) enrollGateway(id, segment string) (string, store.Change) {
	w.seq++
	hash := []byte(fmt.Sprint("tok", w.seq))
	name := []string{"gw-a", "gw-b", id}[w.rng.IntN(3)]
	if err := w.st.CreateEnrollToken(w.ctx, store.EnrollToken{ID: fmt.Sprint("t", w.seq), Hash: hash, Segment: segment, Name: name,
		CreatedAt: w.now, ExpiresAt: w.now.Add(time.Hour)}); err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			w.t.Fatal(err)
		}
		return "enroll " + id + " (no segment " + segment + ")", store.Change{}
	}
	ep := []string{"", "192.0.2.9:51820", "192.0.2.8:51820"}[w.rng.IntN(3)]
	_, err := w.st.RedeemEnrollToken(w.ctx, hash, w.now, store.Gateway{ID: id, PublicKey: newKey(w.t), Endpoint: ep})
	if err != nil {
		return "enroll " + id + " (refused: " + err.Error() + ")", store.Change{}
	}
	return "enroll gateway " + id + " as " + name + " in " + segment, store.Change{Gateways: []string{id}}
}

// applyPolicy applies a random policy over the same names.
func (w *propWorld) applyPolicy() (string, store.Change) {
	r := w.rng
	var b strings.Builder
	b.WriteString("version: 1\nposture_checks:\n  disk: {description: disk encrypted, disk_encryption: true}\ngroups:\n")
	for i := range 3 {
		fmt.Fprintf(&b, "  pg%d:\n    members: [%s, %s, %s]\n", i, pick(r, "u", nUsers), pick(r, "u", nUsers), pick(r, "u", nUsers))
		if i == 0 {
			b.WriteString("    idp: [{claim: groups, value: Nurses}]\n")
		}
	}
	b.WriteString("segments:\n")
	for i := range nSegs {
		fmt.Fprintf(&b, "  s%d: {prefixes: [10.%d.0.0/24], gateways: [%s]}\n", i, i, []string{"gw-a", "gw-b"}[r.IntN(2)])
	}
	b.WriteString("apps:\n")
	for i := range 5 {
		fmt.Fprintf(&b, "  pa%d: {segment: s%d, names: [pa%d.h.internal], addresses: [10.%d.0.%d], ports: [tcp/443], classification: %s}\n",
			i, i%nSegs, i, i%nSegs, 50+i, []string{"phi", "internal", "public"}[r.IntN(3)])
	}
	b.WriteString("rules:\n")
	for i := range 4 {
		from := fmt.Sprintf("group:pg%d", r.IntN(3))
		if r.IntN(4) == 0 {
			from = "user:" + pick(r, "u", nUsers)
		}
		when := ", waiver: \"test waiver approved by the CISO\"" // phi apps want MFA and posture, or a waiver
		switch r.IntN(4) {
		case 0:
			when += ", when: {mfa: true}"
		case 1:
			when += ", when: {posture: [disk]}"
		case 2:
			when = ", when: {mfa: true, posture: [disk]}"
		}
		fmt.Fprintf(&b, "  - {name: pr%d, from: [%s], to: [app:pa%d]%s}\n", i, from, r.IntN(5), when)
	}
	fmt.Fprintf(&b, "deny:\n  - {name: pd, from: [user:%s], to: [app:pa%d]}\n", pick(r, "u", nUsers), r.IntN(5))
	src := b.String()
	prev := int64(0)
	if v, err := w.st.ActivePolicy(w.ctx); err == nil {
		prev = v.Version
	}
	if _, err := w.st.PutPolicyVersion(w.ctx, prev, store.PolicyVersion{File: "p.yaml", Source: []byte(src), Actor: "test"}); err != nil {
		w.t.Fatal(err)
	}
	w.pols++
	if err := w.index().PolicyError(); err != nil {
		w.t.Fatalf("generated policy does not parse: %v\n%s", err, src)
	}
	return "apply policy:\n" + src, store.Change{Policy: true}
}

func newKey(t *testing.T) wgkey.Public {
	k, err := wgkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}
