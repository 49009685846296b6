package storetest

// Cases for enrollment tokens, gateways, devices and overlay addresses.

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// --- enrollment tokens and gateways ---

func testEnrollTokens(t *testing.T, s store.Store) {
	c := ctx(t)
	wantErr(t, "token for missing segment", s.CreateEnrollToken(c, token("t1", "clinical", "gw", "h1", at(time.Hour))), store.ErrNotFound)
	must(t, s.CreateSegment(c, seg("clinical")))

	tb := token("tb", "clinical", "gw-b", "hb", at(time.Hour))
	ta := token("ta", "clinical", "gw-a", "ha", at(2*time.Hour))
	must(t, s.CreateEnrollToken(c, tb))
	must(t, s.CreateEnrollToken(c, ta))
	wantErr(t, "duplicate ID", s.CreateEnrollToken(c, token("ta", "clinical", "x", "other", at(time.Hour))), store.ErrAlreadyExists)
	wantErr(t, "duplicate hash", s.CreateEnrollToken(c, token("tc", "clinical", "x", "ha", at(time.Hour))), store.ErrAlreadyExists)

	list, err := s.ListEnrollTokens(c)
	must(t, err)
	equal(t, "ListEnrollTokens", list, []store.EnrollToken{ta, tb})

	now := at(10 * time.Minute)
	in := store.Gateway{ID: "g1", Name: "ignored", Segment: "ignored", PublicKey: key(t, 1), Endpoint: "198.51.100.7:51820"}
	g, err := s.RedeemEnrollToken(c, []byte("ha"), now, in)
	must(t, err)
	if g.ID != "g1" || g.Name != "gw-a" || g.Segment != "clinical" || g.Endpoint != in.Endpoint || g.PublicKey != in.PublicKey {
		t.Fatalf("redeemed gateway = %+v", g)
	}
	if !g.CreatedAt.Equal(now) {
		t.Errorf("gateway CreatedAt = %v, want redemption time %v", g.CreatedAt, now)
	}
	checkOverlay(t, g.OverlayAddr)
	stored, err := s.GetGateway(c, "g1")
	must(t, err)
	equal(t, "stored gateway", stored, g)

	_, err = s.RedeemEnrollToken(c, []byte("ha"), now, store.Gateway{ID: "g2"})
	wantErr(t, "redeem twice", err, store.ErrTokenInvalid)
	_, err = s.RedeemEnrollToken(c, []byte("unknown"), now, store.Gateway{ID: "g3"})
	wantErr(t, "redeem unknown", err, store.ErrTokenInvalid)
	_, err = s.RedeemEnrollToken(c, nil, now, store.Gateway{ID: "g4"})
	wantErr(t, "redeem nil hash", err, store.ErrTokenInvalid)

	list, err = s.ListEnrollTokens(c)
	must(t, err)
	if list[0].UsedAt == nil || !list[0].UsedAt.Equal(now) || list[0].UsedBy != "g1" {
		t.Errorf("used token = UsedAt %v UsedBy %q, want %v g1", list[0].UsedAt, list[0].UsedBy, now)
	}
	if list[1].UsedAt != nil || list[1].UsedBy != "" {
		t.Errorf("unused token marked used: %+v", list[1])
	}
	gws, err := s.ListGateways(c)
	must(t, err)
	if len(gws) != 1 {
		t.Fatalf("gateways = %+v, want only g1", gws)
	}

	// A token without a name gives the gateway the caller's name; an empty
	// ID is generated.
	must(t, s.CreateEnrollToken(c, token("", "clinical", "", "hn", at(time.Hour))))
	g, err = s.RedeemEnrollToken(c, []byte("hn"), now, store.Gateway{Name: "from-caller"})
	must(t, err)
	if g.Name != "from-caller" || g.ID == "" {
		t.Errorf("gateway from nameless token = %+v", g)
	}
	list, err = s.ListEnrollTokens(c)
	must(t, err)
	if len(list) != 3 {
		t.Fatalf("tokens = %d, want 3", len(list))
	}
	for _, tk := range list {
		if tk.ID == "" {
			t.Errorf("token stored with empty ID")
		}
	}

	// Deleting the segment (once its gateways are gone) removes its tokens.
	wantErr(t, "delete segment with gateways", s.DeleteSegment(c, "clinical"), store.ErrInUse)
	for _, gw := range []string{"g1", g.ID} {
		must(t, s.DeleteGateway(c, gw))
	}
	must(t, s.DeleteSegment(c, "clinical"))
	list, err = s.ListEnrollTokens(c)
	must(t, err)
	if len(list) != 0 {
		t.Errorf("tokens left after their segment was deleted: %+v", list)
	}
}

func testRedeemExpiry(t *testing.T, s store.Store) {
	c := ctx(t)
	must(t, s.CreateSegment(c, seg("clinical")))
	exp := at(time.Hour)
	must(t, s.CreateEnrollToken(c, token("t", "clinical", "gw", "h", exp)))

	for _, now := range []time.Time{exp, exp.Add(time.Microsecond), exp.Add(24 * time.Hour)} {
		_, err := s.RedeemEnrollToken(c, []byte("h"), now, store.Gateway{ID: "late"})
		wantErr(t, fmt.Sprintf("redeem at %v (expires %v)", now, exp), err, store.ErrTokenInvalid)
	}
	list, err := s.ListEnrollTokens(c)
	must(t, err)
	if list[0].UsedAt != nil {
		t.Fatalf("expired redemption marked the token used")
	}
	g, err := s.RedeemEnrollToken(c, []byte("h"), exp.Add(-time.Microsecond), store.Gateway{ID: "just-in-time"})
	must(t, err)
	if g.ID != "just-in-time" {
		t.Fatalf("gateway = %+v", g)
	}
}

// testRedeemConcurrent is the single-use guarantee: of 50 concurrent
// redemptions of one token exactly one creates a gateway.
func testRedeemConcurrent(t *testing.T, s store.Store) {
	c := ctx(t)
	must(t, s.CreateSegment(c, seg("clinical")))
	must(t, s.CreateEnrollToken(c, token("t", "clinical", "gw", "h", at(time.Hour))))

	const n = 50
	keys := make([]wgkey.Public, n)
	for i := range keys {
		keys[i] = key(t, i)
	}
	errs := together(n, func(i int) error {
		_, err := s.RedeemEnrollToken(c, []byte("h"), at(time.Minute), store.Gateway{ID: fmt.Sprintf("gw-%02d", i), PublicKey: keys[i]})
		return err
	})

	ok, invalid := 0, 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, store.ErrTokenInvalid):
			invalid++
		default:
			t.Errorf("redemption %d: unexpected error %v", i, err)
		}
	}
	if ok != 1 || invalid != n-1 {
		t.Fatalf("%d succeeded and %d got ErrTokenInvalid, want 1 and %d", ok, invalid, n-1)
	}
	gws, err := s.ListGateways(c)
	must(t, err)
	if len(gws) != 1 {
		t.Fatalf("%d gateways created, want 1", len(gws))
	}
	list, err := s.ListEnrollTokens(c)
	must(t, err)
	if list[0].UsedBy != gws[0].ID {
		t.Errorf("token used by %q, gateway is %q", list[0].UsedBy, gws[0].ID)
	}
}

// testRedeemAtomic: a redemption that cannot create its gateway leaves the
// token unused.
func testRedeemAtomic(t *testing.T, s store.Store) {
	c := ctx(t)
	must(t, s.CreateSegment(c, seg("clinical")))
	enroll(t, s, "clinical", "taken")
	must(t, s.CreateEnrollToken(c, token("t2", "clinical", "gw", "h2", at(time.Hour))))

	_, err := s.RedeemEnrollToken(c, []byte("h2"), at(time.Minute), store.Gateway{ID: "taken"})
	wantErr(t, "redeem with existing gateway ID", err, store.ErrAlreadyExists)
	list, err := s.ListEnrollTokens(c)
	must(t, err)
	for _, tk := range list {
		if tk.ID == "t2" && tk.UsedAt != nil {
			t.Fatalf("failed redemption consumed the token")
		}
	}
	if _, err := s.RedeemEnrollToken(c, []byte("h2"), at(time.Minute), store.Gateway{ID: "fresh"}); err != nil {
		t.Fatalf("token unusable after a failed redemption: %v", err)
	}
}

func testGateways(t *testing.T, s store.Store) {
	c := ctx(t)
	must(t, s.CreateSegment(c, seg("clinical")))
	for _, id := range []string{"gw-c", "gw-a", "gw-b"} {
		enroll(t, s, "clinical", id)
	}
	list, err := s.ListGateways(c)
	must(t, err)
	wantNames(t, "ListGateways", names(list, func(g store.Gateway) string { return g.ID }), []string{"gw-a", "gw-b", "gw-c"})

	_, err = s.GetGateway(c, "nope")
	wantErr(t, "GetGateway missing", err, store.ErrNotFound)

	must(t, s.UpdateGatewayEndpoint(c, "gw-a", "[2001:db8::1]:51820"))
	g, err := s.GetGateway(c, "gw-a")
	must(t, err)
	if g.Endpoint != "[2001:db8::1]:51820" {
		t.Errorf("endpoint = %q", g.Endpoint)
	}
	equal(t, "gateway after endpoint update", g, func() store.Gateway { x := list[0]; x.Endpoint = g.Endpoint; return x }())
	wantErr(t, "update missing", s.UpdateGatewayEndpoint(c, "nope", "x"), store.ErrNotFound)

	// Drain: set, read back, cleared.
	drained := at(time.Minute).UTC().Truncate(time.Microsecond)
	must(t, s.SetGatewayDrained(c, "gw-c", drained))
	if g, err := s.GetGateway(c, "gw-c"); err != nil || !g.DrainedAt.Equal(drained) {
		t.Errorf("drained gateway: DrainedAt %v (%v), want %v", g.DrainedAt, err, drained)
	}
	if list, _ := s.ListGateways(c); !list[2].DrainedAt.Equal(drained) || !list[0].DrainedAt.IsZero() {
		t.Errorf("ListGateways after drain of gw-c: %+v", list)
	}
	must(t, s.SetGatewayDrained(c, "gw-c", time.Time{}))
	if g, err := s.GetGateway(c, "gw-c"); err != nil || !g.DrainedAt.IsZero() {
		t.Errorf("undrained gateway: DrainedAt %v (%v), want zero", g.DrainedAt, err)
	}
	wantErr(t, "drain missing", s.SetGatewayDrained(c, "nope", drained), store.ErrNotFound)

	must(t, s.DeleteGateway(c, "gw-b"))
	_, err = s.GetGateway(c, "gw-b")
	wantErr(t, "get deleted", err, store.ErrNotFound)
	wantErr(t, "delete missing", s.DeleteGateway(c, "gw-b"), store.ErrNotFound)
}

// --- devices and addresses ---

// checkOverlay fails unless a is a usable overlay address.
func checkOverlay(t testing.TB, a netip.Addr) {
	t.Helper()
	if !a.IsValid() || !store.OverlayPrefix.Contains(a) || a == store.OverlayPrefix.Masked().Addr() {
		t.Fatalf("overlay address %v is not a host address in %v", a, store.OverlayPrefix)
	}
}

func testDevices(t *testing.T, s store.Store) {
	c := ctx(t)
	_, err := s.CreateDevice(c, store.Device{ID: "d1", User: "nobody"})
	wantErr(t, "device of missing user", err, store.ErrNotFound)

	must(t, s.CreateUser(c, user("nurse")))
	in := store.Device{ID: "d2", User: "nurse", Hostname: "ward3-pc", PublicKey: key(t, 2),
		OverlayAddr: netip.MustParseAddr("100.64.9.9"), CreatedAt: at(7 * time.Minute), MFAAt: at(6 * time.Minute)}
	d, err := s.CreateDevice(c, in)
	must(t, err)
	checkOverlay(t, d.OverlayAddr)
	want := in
	want.OverlayAddr = d.OverlayAddr
	equal(t, "CreateDevice result", d, want)
	got, err := s.GetDevice(c, "d2")
	must(t, err)
	equal(t, "GetDevice", got, want)

	_, err = s.CreateDevice(c, store.Device{ID: "d2", User: "nurse"})
	wantErr(t, "duplicate", err, store.ErrAlreadyExists)

	d1, err := s.CreateDevice(c, store.Device{ID: "d1", User: "nurse", Hostname: "ipad"})
	must(t, err)
	if d1.CreatedAt.IsZero() {
		t.Errorf("zero CreatedAt not set")
	}
	if !d1.MFAAt.IsZero() {
		t.Errorf("zero MFAAt stored as %v", d1.MFAAt)
	}
	if got, err := s.GetDevice(c, "d1"); err != nil || !got.MFAAt.IsZero() {
		t.Errorf("zero MFAAt read back as %v (%v)", got.MFAAt, err)
	}
	gen, err := s.CreateDevice(c, store.Device{User: "nurse"})
	must(t, err)
	if gen.ID == "" {
		t.Errorf("empty device ID not generated")
	}

	list, err := s.ListDevices(c)
	must(t, err)
	wantIDs := []string{"d1", "d2", gen.ID}
	sort.Strings(wantIDs)
	wantNames(t, "ListDevices", names(list, func(d store.Device) string { return d.ID }), wantIDs)

	// UpdateDevice changes the key, hostname and MFA time, nothing else.
	upd := store.Device{ID: "d2", User: "someone-else", Hostname: "ward4-pc", PublicKey: key(t, 3),
		OverlayAddr: netip.MustParseAddr("100.64.7.7"), CreatedAt: at(time.Hour), MFAAt: at(59 * time.Minute)}
	must(t, s.UpdateDevice(c, upd))
	got, err = s.GetDevice(c, "d2")
	must(t, err)
	want.Hostname, want.PublicKey, want.MFAAt = upd.Hostname, upd.PublicKey, upd.MFAAt
	equal(t, "after UpdateDevice", got, want)
	wantErr(t, "update missing", s.UpdateDevice(c, store.Device{ID: "nope"}), store.ErrNotFound)

	// A quarantine is stored and read back whole, an update (a new
	// sign-in) keeps it, and the zero Quarantine releases it.
	q := store.Quarantine{At: at(2 * time.Hour), By: "admin:hd", Reason: "EDR alert"}
	must(t, s.SetDeviceQuarantine(c, "d2", q))
	must(t, s.UpdateDevice(c, upd))
	got, err = s.GetDevice(c, "d2")
	must(t, err)
	equal(t, "quarantine after UpdateDevice", got.Quarantine, q)
	byKey, err := s.ListDevicesByKey(c, upd.PublicKey)
	must(t, err)
	wantNames(t, "ListDevicesByKey", names(byKey, func(d store.Device) string { return d.ID + "/" + d.Quarantine.Reason }), []string{"d2/EDR alert"})
	must(t, s.SetDeviceQuarantine(c, "d2", store.Quarantine{}))
	got, err = s.GetDevice(c, "d2")
	must(t, err)
	equal(t, "after the release", got, want)
	wantErr(t, "quarantine missing", s.SetDeviceQuarantine(c, "nope", q), store.ErrNotFound)

	_, err = s.GetDevice(c, "nope")
	wantErr(t, "GetDevice missing", err, store.ErrNotFound)
	must(t, s.DeleteDevice(c, "d2"))
	_, err = s.GetDevice(c, "d2")
	wantErr(t, "get deleted", err, store.ErrNotFound)
	wantErr(t, "delete missing", s.DeleteDevice(c, "d2"), store.ErrNotFound)
}

// testAddressAllocation: lowest free address first, from 100.64.0.1, one
// pool for gateways and devices, released addresses reused.
func testAddressAllocation(t *testing.T, s store.Store) {
	c := ctx(t)
	must(t, s.CreateUser(c, user("nurse")))
	must(t, s.CreateSegment(c, seg("clinical")))
	addr := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	dev := func(id string) netip.Addr {
		t.Helper()
		d, err := s.CreateDevice(c, store.Device{ID: id, User: "nurse"})
		must(t, err)
		return d.OverlayAddr
	}

	if a := dev("d1"); a != addr("100.64.0.1") {
		t.Fatalf("first address = %v, want 100.64.0.1", a)
	}
	if a := enroll(t, s, "clinical", "g1").OverlayAddr; a != addr("100.64.0.2") {
		t.Fatalf("gateway address = %v, want 100.64.0.2 (shared pool)", a)
	}
	if a := dev("d3"); a != addr("100.64.0.3") {
		t.Fatalf("third address = %v", a)
	}
	if a := dev("d4"); a != addr("100.64.0.4") {
		t.Fatalf("fourth address = %v", a)
	}

	must(t, s.DeleteDevice(c, "d3"))
	must(t, s.DeleteDevice(c, "d1"))
	if a := dev("d5"); a != addr("100.64.0.1") {
		t.Fatalf("after releases of .1 and .3: got %v, want the lowest, 100.64.0.1", a)
	}
	if a := dev("d6"); a != addr("100.64.0.3") {
		t.Fatalf("got %v, want 100.64.0.3", a)
	}
	if a := dev("d7"); a != addr("100.64.0.5") {
		t.Fatalf("got %v, want 100.64.0.5", a)
	}
	must(t, s.DeleteGateway(c, "g1"))
	if a := dev("d8"); a != addr("100.64.0.2") {
		t.Fatalf("gateway's released address not reused: got %v", a)
	}
	// Releasing the highest address makes it the next one again.
	must(t, s.DeleteDevice(c, "d7"))
	if a := dev("d9"); a != addr("100.64.0.5") {
		t.Fatalf("got %v, want 100.64.0.5", a)
	}
}

// testAddressConcurrent: 20 concurrent CreateDevice calls get 20 distinct
// addresses.
func testAddressConcurrent(t *testing.T, s store.Store) {
	c := ctx(t)
	must(t, s.CreateUser(c, user("nurse")))
	const n = 20
	devs := make([]store.Device, n)
	for i := range devs {
		devs[i] = store.Device{ID: fmt.Sprintf("d%02d", i), User: "nurse", PublicKey: key(t, i)}
	}
	errs := together(n, func(i int) (err error) {
		devs[i], err = s.CreateDevice(c, devs[i])
		return err
	})
	seen := map[netip.Addr]string{}
	for i, err := range errs {
		must(t, err)
		a := devs[i].OverlayAddr
		checkOverlay(t, a)
		if other, dup := seen[a]; dup {
			t.Fatalf("%s and %s both got %v", other, devs[i].ID, a)
		}
		seen[a] = devs[i].ID
	}
	list, err := s.ListDevices(c)
	must(t, err)
	for _, d := range list {
		if seen[d.OverlayAddr] != d.ID {
			t.Errorf("stored %s at %v, CreateDevice returned another address", d.ID, d.OverlayAddr)
		}
	}
	// With nothing released, the pool is dense: .1 to .20.
	for i := 1; i <= n; i++ {
		a := netip.AddrFrom4([4]byte{100, 64, 0, byte(i)})
		if _, ok := seen[a]; !ok {
			t.Errorf("%v not allocated; allocations: %v", a, seen)
		}
	}
}

func testDeleteUserCascades(t *testing.T, s store.Store) {
	c := ctx(t)
	must(t, s.CreateUser(c, user("nurse")))
	must(t, s.CreateUser(c, user("doctor")))
	must(t, s.CreateGroup(c, store.Group{Name: "ward3", Members: []string{"nurse", "doctor"}}))
	must(t, s.CreateGroup(c, store.Group{Name: "night", Members: []string{"nurse"}}))
	d1, err := s.CreateDevice(c, store.Device{ID: "n1", User: "nurse"})
	must(t, err)
	_, err = s.CreateDevice(c, store.Device{ID: "doc1", User: "doctor"})
	must(t, err)
	_, err = s.CreateDevice(c, store.Device{ID: "n2", User: "nurse"})
	must(t, err)

	must(t, s.DeleteUser(c, "nurse"))

	groups, err := s.ListGroups(c)
	must(t, err)
	for _, g := range groups {
		if slices.Contains(g.Members, "nurse") {
			t.Errorf("group %s still lists the deleted user", g.Name)
		}
	}
	wantNames(t, "ward3 members", groups[1].Members, []string{"doctor"})
	devs, err := s.ListDevices(c)
	must(t, err)
	wantNames(t, "devices left", names(devs, func(d store.Device) string { return d.ID }), []string{"doc1"})

	// The user's addresses are free again; the name can be reused cleanly.
	must(t, s.CreateUser(c, user("nurse")))
	d, err := s.CreateDevice(c, store.Device{ID: "n3", User: "nurse"})
	must(t, err)
	if d.OverlayAddr != d1.OverlayAddr {
		t.Errorf("address of deleted user's device not reused: got %v, want %v", d.OverlayAddr, d1.OverlayAddr)
	}
	g, err := s.GetGroup(c, "night")
	must(t, err)
	if len(g.Members) != 0 {
		t.Errorf("re-created user inherited memberships: %q", g.Members)
	}
}
