// Package storetest is the conformance suite every [store.Store]
// implementation runs: call [Run] from the implementation's tests.
//
// The suite uses only the store interface, so the same cases hold the
// SQLite and the PostgreSQL implementations to one contract. Besides what
// store.go documents, it pins down these behaviours:
//
//   - times round-trip at microsecond precision (the suite uses times
//     truncated to the microsecond) and compare with time.Equal;
//   - a zero CreatedAt is replaced by the current time; an empty Gateway,
//     Device or EnrollToken ID is replaced by a generated one;
//   - overlay addresses come from one pool shared by gateways and devices,
//     lowest free first, starting at 100.64.0.1; deleting a device or
//     gateway (or the user owning devices) frees its address for reuse;
//   - AddMember of an existing member is ErrAlreadyExists; CreateGroup with
//     an unknown member is ErrNotFound and creates nothing;
//   - DeleteSegment removes the segment's enrollment tokens; DeleteGroup
//     removes its memberships;
//   - RedeemEnrollToken takes the gateway's Segment (and Name, if the token
//     has one) from the token, and a failed redemption leaves the token
//     unused; a token whose ExpiresAt is not after now is expired;
//   - AuditFilter.Limit 0 or negative means 100; a type filter ending in "."
//     matches by prefix, anything else exactly;
//   - Close is idempotent.
package storetest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// Run runs the suite. open must return a new, empty store for each call;
// the suite closes it when the test ends (open may register its own
// cleanup too: Close is idempotent).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Segments", testSegments},
		{"Apps", testApps},
		{"Users", testUsers},
		{"Groups", testGroups},
		{"Rules", testRules},
		{"EnrollTokens", testEnrollTokens},
		{"RedeemExpiry", testRedeemExpiry},
		{"RedeemConcurrent", testRedeemConcurrent},
		{"RedeemAtomic", testRedeemAtomic},
		{"Gateways", testGateways},
		{"Devices", testDevices},
		{"AddressAllocation", testAddressAllocation},
		{"AddressConcurrent", testAddressConcurrent},
		{"DeleteUserCascades", testDeleteUserCascades},
		{"Audit", testAudit},
		{"AuditFilter", testAuditFilter},
		{"AuditConcurrent", testAuditConcurrent},
		{"AdminTokens", testAdminTokens},
		{"Snapshot", testSnapshot},
		{"SnapshotConsistent", testSnapshotConsistent},
		{"OddInput", testOddInput},
		{"CanceledContext", testCanceledContext},
		{"Close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

// t0 is the suite's clock: microsecond precision, UTC.
var t0 = time.Date(2026, 3, 1, 8, 30, 0, 123456000, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// key returns a distinct, valid public key for each i.
func key(t testing.TB, i int) wgkey.Public {
	t.Helper()
	var b [32]byte
	b[0], b[1], b[31] = byte(i), byte(i>>8), 0x40
	k, err := wgkey.ParsePublic(base64.StdEncoding.EncodeToString(b[:]))
	if err != nil {
		t.Fatalf("make key %d: %v", i, err)
	}
	return k
}

// must fails the test on err.
func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// wantErr fails unless errors.Is(err, want).
func wantErr(t testing.TB, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

// equal fails unless got and want are equal after normalising times to UTC
// and nil slices or maps to empty ones.
func equal[T any](t testing.TB, what string, got, want T) {
	t.Helper()
	g, w := normalize(reflect.ValueOf(&got).Elem()), normalize(reflect.ValueOf(&want).Elem())
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

var timeType = reflect.TypeFor[time.Time]()

// normalize returns v as a tree for reflect.DeepEqual: times become UTC
// RFC 3339 strings, nil and empty slices and maps the same.
func normalize(v reflect.Value) any {
	if v.Type() == timeType {
		return v.Interface().(time.Time).UTC().Format(time.RFC3339Nano)
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		return []any{normalize(v.Elem())}
	case reflect.Struct:
		if v.NumField() == 0 || !v.Type().Field(0).IsExported() || v.Type().PkgPath() == "net/netip" {
			return v.Interface() // opaque value types (keys, addresses)
		}
		out := make(map[string]any, v.NumField())
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				out[v.Type().Field(i).Name] = normalize(v.Field(i))
			}
		}
		return out
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return string(v.Bytes())
		}
		out := make([]any, v.Len())
		for i := range v.Len() {
			out[i] = normalize(v.Index(i))
		}
		return out
	case reflect.Map:
		out := make(map[any]any, v.Len())
		for it := v.MapRange(); it.Next(); {
			out[it.Key().Interface()] = normalize(it.Value())
		}
		return out
	}
	return v.Interface()
}

// ctx returns the test's context.
func ctx(t *testing.T) context.Context { return t.Context() }

// --- fixtures ---

func seg(name string) store.Segment {
	return store.Segment{
		Name:      name,
		CIDRs:     []netip.Prefix{netip.MustParsePrefix("10.20.0.0/24"), netip.MustParsePrefix("fd00:20::/64")},
		CreatedAt: at(time.Minute),
	}
}

func app(name, segment string) store.App {
	return store.App{
		Name:           name,
		Segment:        segment,
		DNSName:        name + ".hospital.internal",
		Addr:           netip.MustParsePrefix("10.20.0.10/32"),
		Proto:          policy.ProtoTCP,
		Ports:          []policy.PortRange{{First: 443, Last: 443}, {First: 8000, Last: 8099}},
		Classification: store.ClassPHI,
		CreatedAt:      at(2 * time.Minute),
	}
}

func user(name string) store.User {
	return store.User{
		Name:         name,
		PasswordHash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
		TOTPSecret:   "JBSWY3DPEHPK3PXP",
		CreatedAt:    at(3 * time.Minute),
	}
}

func token(id, segment, name string, hash string, expires time.Time) store.EnrollToken {
	return store.EnrollToken{
		ID:        id,
		Hash:      []byte(hash),
		Segment:   segment,
		Name:      name,
		CreatedAt: at(0),
		ExpiresAt: expires,
	}
}

// enroll creates gateway id in an existing segment: token, then redemption.
func enroll(t *testing.T, s store.Store, segment, id string) store.Gateway {
	t.Helper()
	hash := "hash-" + id
	must(t, s.CreateEnrollToken(ctx(t), token("tok-"+id, segment, "gw-"+id, hash, at(time.Hour))))
	g, err := s.RedeemEnrollToken(ctx(t), []byte(hash), at(time.Minute), store.Gateway{ID: id, PublicKey: key(t, 1000), Endpoint: "192.0.2.1:51820"})
	must(t, err)
	return g
}

func names[T any](items []T, name func(T) string) []string {
	out := make([]string, len(items))
	for i, v := range items {
		out[i] = name(v)
	}
	return out
}

func wantNames(t testing.TB, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: got %q, want %q", what, got, want)
	}
}

// --- segments ---

func testSegments(t *testing.T, s store.Store) {
	c := ctx(t)
	for _, n := range []string{"radiology", "cardiology", "lab"} {
		must(t, s.CreateSegment(c, seg(n)))
	}
	wantErr(t, "duplicate", s.CreateSegment(c, seg("lab")), store.ErrAlreadyExists)

	got, err := s.GetSegment(c, "radiology")
	must(t, err)
	equal(t, "GetSegment", got, seg("radiology"))

	_, err = s.GetSegment(c, "nope")
	wantErr(t, "GetSegment missing", err, store.ErrNotFound)

	list, err := s.ListSegments(c)
	must(t, err)
	wantNames(t, "ListSegments", names(list, func(s store.Segment) string { return s.Name }), []string{"cardiology", "lab", "radiology"})
	equal(t, "listed segment", list[2], seg("radiology"))

	must(t, s.DeleteSegment(c, "lab"))
	_, err = s.GetSegment(c, "lab")
	wantErr(t, "get deleted", err, store.ErrNotFound)
	wantErr(t, "delete missing", s.DeleteSegment(c, "lab"), store.ErrNotFound)

	// A zero CreatedAt is set by the store; nil CIDRs come back empty.
	before := time.Now().Add(-time.Second)
	must(t, s.CreateSegment(c, store.Segment{Name: "empty"}))
	got, err = s.GetSegment(c, "empty")
	must(t, err)
	if got.CreatedAt.Before(before) || got.CreatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("zero CreatedAt stored as %v, want about now", got.CreatedAt)
	}
	if len(got.CIDRs) != 0 {
		t.Errorf("CIDRs = %v, want none", got.CIDRs)
	}
}

// --- apps ---

func testApps(t *testing.T, s store.Store) {
	c := ctx(t)
	wantErr(t, "app in missing segment", s.CreateApp(c, app("ehr", "clinical")), store.ErrNotFound)
	must(t, s.CreateSegment(c, seg("clinical")))

	ehr := app("ehr", "clinical")
	must(t, s.CreateApp(c, ehr))
	pacs := app("pacs", "clinical")
	pacs.Addr = netip.MustParsePrefix("fd00:20::5/128")
	pacs.Proto = policy.ProtoUDP
	pacs.Ports = []policy.PortRange{policy.AllPorts}
	pacs.Classification = store.ClassInternal
	must(t, s.CreateApp(c, pacs))
	icmp := app("monitor", "clinical")
	icmp.Addr = netip.MustParsePrefix("10.20.0.0/28")
	icmp.Proto = policy.ProtoICMP
	icmp.Ports = nil
	icmp.Classification = store.ClassPublic
	must(t, s.CreateApp(c, icmp))
	wantErr(t, "duplicate", s.CreateApp(c, ehr), store.ErrAlreadyExists)

	for _, want := range []store.App{ehr, pacs, icmp} {
		got, err := s.GetApp(c, want.Name)
		must(t, err)
		equal(t, "GetApp "+want.Name, got, want)
	}
	_, err := s.GetApp(c, "nope")
	wantErr(t, "GetApp missing", err, store.ErrNotFound)

	list, err := s.ListApps(c)
	must(t, err)
	wantNames(t, "ListApps", names(list, func(a store.App) string { return a.Name }), []string{"ehr", "monitor", "pacs"})

	wantErr(t, "delete segment with apps", s.DeleteSegment(c, "clinical"), store.ErrInUse)

	// A rule pins the app.
	must(t, s.CreateGroup(c, store.Group{Name: "nurses"}))
	must(t, s.CreateRule(c, store.Rule{Name: "nurses-ehr", Group: "nurses", App: "ehr"}))
	wantErr(t, "delete app with rule", s.DeleteApp(c, "ehr"), store.ErrInUse)
	if _, err := s.GetApp(c, "ehr"); err != nil {
		t.Fatalf("app gone after refused delete: %v", err)
	}
	must(t, s.DeleteRule(c, "nurses-ehr"))
	must(t, s.DeleteApp(c, "ehr"))
	wantErr(t, "delete missing", s.DeleteApp(c, "ehr"), store.ErrNotFound)

	must(t, s.DeleteApp(c, "pacs"))
	must(t, s.DeleteApp(c, "monitor"))
	must(t, s.DeleteSegment(c, "clinical"))
}

// --- users ---

func testUsers(t *testing.T, s store.Store) {
	c := ctx(t)
	nurse := user("nurse")
	doc := user("doctor")
	doc.Disabled = true
	doc.TOTPSecret = ""
	must(t, s.CreateUser(c, nurse))
	must(t, s.CreateUser(c, doc))
	wantErr(t, "duplicate", s.CreateUser(c, nurse), store.ErrAlreadyExists)

	got, err := s.GetUser(c, "doctor")
	must(t, err)
	equal(t, "GetUser", got, doc)
	if got.PasswordHash != doc.PasswordHash {
		t.Errorf("password hash = %q, want %q", got.PasswordHash, doc.PasswordHash)
	}
	_, err = s.GetUser(c, "nope")
	wantErr(t, "GetUser missing", err, store.ErrNotFound)

	list, err := s.ListUsers(c)
	must(t, err)
	wantNames(t, "ListUsers", names(list, func(u store.User) string { return u.Name }), []string{"doctor", "nurse"})
	equal(t, "listed user", list[1], nurse)

	must(t, s.DeleteUser(c, "doctor"))
	_, err = s.GetUser(c, "doctor")
	wantErr(t, "get deleted", err, store.ErrNotFound)
	wantErr(t, "delete missing", s.DeleteUser(c, "doctor"), store.ErrNotFound)
}

// --- groups ---

func testGroups(t *testing.T, s store.Store) {
	c := ctx(t)
	for _, u := range []string{"carol", "alice", "bob"} {
		must(t, s.CreateUser(c, user(u)))
	}
	nurses := store.Group{Name: "nurses", Members: []string{"carol", "alice"}, CreatedAt: at(4 * time.Minute)}
	must(t, s.CreateGroup(c, nurses))
	wantErr(t, "duplicate", s.CreateGroup(c, nurses), store.ErrAlreadyExists)

	got, err := s.GetGroup(c, "nurses")
	must(t, err)
	nurses.Members = []string{"alice", "carol"} // sorted
	equal(t, "GetGroup", got, nurses)

	// An unknown member fails the whole creation.
	wantErr(t, "group with unknown member", s.CreateGroup(c, store.Group{Name: "ghosts", Members: []string{"alice", "nobody"}}), store.ErrNotFound)
	_, err = s.GetGroup(c, "ghosts")
	wantErr(t, "group created despite failure", err, store.ErrNotFound)

	must(t, s.CreateGroup(c, store.Group{Name: "admins"}))
	must(t, s.AddMember(c, "admins", "bob"))
	must(t, s.AddMember(c, "admins", "alice"))
	wantErr(t, "add twice", s.AddMember(c, "admins", "bob"), store.ErrAlreadyExists)
	wantErr(t, "add unknown user", s.AddMember(c, "admins", "nobody"), store.ErrNotFound)
	wantErr(t, "add to unknown group", s.AddMember(c, "nobody", "bob"), store.ErrNotFound)

	list, err := s.ListGroups(c)
	must(t, err)
	wantNames(t, "ListGroups", names(list, func(g store.Group) string { return g.Name }), []string{"admins", "nurses"})
	wantNames(t, "admins members", list[0].Members, []string{"alice", "bob"})
	wantNames(t, "nurses members", list[1].Members, []string{"alice", "carol"})

	must(t, s.RemoveMember(c, "admins", "alice"))
	wantErr(t, "remove non-member", s.RemoveMember(c, "admins", "alice"), store.ErrNotFound)
	wantErr(t, "remove from unknown group", s.RemoveMember(c, "nobody", "bob"), store.ErrNotFound)
	got, err = s.GetGroup(c, "admins")
	must(t, err)
	wantNames(t, "admins after remove", got.Members, []string{"bob"})

	// Empty group.
	must(t, s.RemoveMember(c, "admins", "bob"))
	got, err = s.GetGroup(c, "admins")
	must(t, err)
	if len(got.Members) != 0 {
		t.Errorf("empty group members = %q", got.Members)
	}

	// A rule pins the group.
	must(t, s.CreateSegment(c, seg("clinical")))
	must(t, s.CreateApp(c, app("ehr", "clinical")))
	must(t, s.CreateRule(c, store.Rule{Name: "r", Group: "nurses", App: "ehr"}))
	wantErr(t, "delete group with rule", s.DeleteGroup(c, "nurses"), store.ErrInUse)
	must(t, s.DeleteRule(c, "r"))
	must(t, s.DeleteGroup(c, "nurses"))
	_, err = s.GetGroup(c, "nurses")
	wantErr(t, "get deleted", err, store.ErrNotFound)
	wantErr(t, "delete missing", s.DeleteGroup(c, "nurses"), store.ErrNotFound)

	// Re-creating the group does not resurrect old memberships.
	must(t, s.CreateGroup(c, store.Group{Name: "nurses"}))
	got, err = s.GetGroup(c, "nurses")
	must(t, err)
	if len(got.Members) != 0 {
		t.Errorf("recreated group has members %q", got.Members)
	}
	_, err = s.GetGroup(c, "nope")
	wantErr(t, "GetGroup missing", err, store.ErrNotFound)
}

// --- rules ---

func testRules(t *testing.T, s store.Store) {
	c := ctx(t)
	must(t, s.CreateSegment(c, seg("clinical")))
	must(t, s.CreateApp(c, app("ehr", "clinical")))
	must(t, s.CreateApp(c, app("pacs", "clinical")))
	must(t, s.CreateGroup(c, store.Group{Name: "nurses"}))

	wantErr(t, "rule for missing group", s.CreateRule(c, store.Rule{Name: "x", Group: "nobody", App: "ehr"}), store.ErrNotFound)
	wantErr(t, "rule for missing app", s.CreateRule(c, store.Rule{Name: "x", Group: "nurses", App: "nothing"}), store.ErrNotFound)

	r1 := store.Rule{Name: "nurses-pacs", Group: "nurses", App: "pacs", CreatedAt: at(5 * time.Minute)}
	r2 := store.Rule{Name: "nurses-ehr", Group: "nurses", App: "ehr", CreatedAt: at(6 * time.Minute)}
	must(t, s.CreateRule(c, r1))
	must(t, s.CreateRule(c, r2))
	wantErr(t, "duplicate", s.CreateRule(c, r1), store.ErrAlreadyExists)

	got, err := s.GetRule(c, "nurses-pacs")
	must(t, err)
	equal(t, "GetRule", got, r1)
	_, err = s.GetRule(c, "nope")
	wantErr(t, "GetRule missing", err, store.ErrNotFound)

	list, err := s.ListRules(c)
	must(t, err)
	equal(t, "ListRules", list, []store.Rule{r2, r1})

	must(t, s.DeleteRule(c, "nurses-pacs"))
	wantErr(t, "delete missing", s.DeleteRule(c, "nurses-pacs"), store.ErrNotFound)
	_, err = s.GetRule(c, "nurses-pacs")
	wantErr(t, "get deleted", err, store.ErrNotFound)
}

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
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, n)
	)
	for i := range n {
		gw := store.Gateway{ID: fmt.Sprintf("gw-%02d", i), PublicKey: key(t, i)}
		wg.Go(func() {
			<-start
			_, errs[i] = s.RedeemEnrollToken(c, []byte("h"), at(time.Minute), gw)
		})
	}
	close(start)
	wg.Wait()

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
		OverlayAddr: netip.MustParseAddr("100.64.9.9"), CreatedAt: at(7 * time.Minute)}
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

	// UpdateDevice changes the key and hostname, nothing else.
	upd := store.Device{ID: "d2", User: "someone-else", Hostname: "ward4-pc", PublicKey: key(t, 3),
		OverlayAddr: netip.MustParseAddr("100.64.7.7"), CreatedAt: at(time.Hour)}
	must(t, s.UpdateDevice(c, upd))
	got, err = s.GetDevice(c, "d2")
	must(t, err)
	want.Hostname, want.PublicKey = upd.Hostname, upd.PublicKey
	equal(t, "after UpdateDevice", got, want)
	wantErr(t, "update missing", s.UpdateDevice(c, store.Device{ID: "nope"}), store.ErrNotFound)

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
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		devs  = make([]store.Device, n)
		errs  = make([]error, n)
	)
	for i := range n {
		d := store.Device{ID: fmt.Sprintf("d%02d", i), User: "nurse", PublicKey: key(t, i)}
		wg.Go(func() {
			<-start
			devs[i], errs[i] = s.CreateDevice(c, d)
		})
	}
	close(start)
	wg.Wait()
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

// --- audit ---

func event(typ string, i int) store.AuditEvent {
	return store.AuditEvent{
		Time:    at(time.Duration(i) * time.Second),
		Type:    typ,
		Actor:   "user:nurse",
		Outcome: "success",
		Subject: fmt.Sprintf("subject-%d", i),
	}
}

func testAudit(t *testing.T, s store.Store) {
	c := ctx(t)
	list, err := s.ListAudit(c, store.AuditFilter{})
	must(t, err)
	if len(list) != 0 {
		t.Fatalf("new store has audit events: %+v", list)
	}
	must(t, s.AppendAudit(c)) // nothing to do

	e1 := event("login", 1)
	e1.Details = map[string]string{"ip": "10.1.2.3", "mfa": "totp", "quote": `"{}\n`}
	e2 := event("flow.allow", 2)
	e2.Seq = 999 // ignored: the store assigns Seq
	must(t, s.AppendAudit(c, e1, e2))
	must(t, s.AppendAudit(c, event("flow.deny", 3)))

	list, err = s.ListAudit(c, store.AuditFilter{})
	must(t, err)
	if len(list) != 3 {
		t.Fatalf("got %d events, want 3", len(list))
	}
	wantNames(t, "types, newest first", names(list, func(e store.AuditEvent) string { return e.Type }), []string{"flow.deny", "flow.allow", "login"})
	for i := 1; i < len(list); i++ {
		if list[i-1].Seq <= list[i].Seq {
			t.Fatalf("Seq not strictly decreasing newest first: %d then %d", list[i-1].Seq, list[i].Seq)
		}
	}
	if list[1].Seq == 999 {
		t.Errorf("store kept the caller's Seq")
	}
	got := list[2]
	want := e1
	want.Seq = got.Seq
	equal(t, "event round trip", got, want)

	// A zero Time is set by the store.
	must(t, s.AppendAudit(c, store.AuditEvent{Type: "session.end"}))
	list, err = s.ListAudit(c, store.AuditFilter{Limit: 1})
	must(t, err)
	if len(list) != 1 || list[0].Type != "session.end" || list[0].Time.IsZero() {
		t.Errorf("latest event = %+v", list)
	}
}

func testAuditFilter(t *testing.T, s store.Store) {
	c := ctx(t)
	types := []string{"login", "flow.allow", "flow.deny", "flow", "flowlog.x", "dns.deny", "flow.allow.extra"}
	var batch []store.AuditEvent
	for i := range 150 {
		batch = append(batch, event(types[i%len(types)], i))
	}
	must(t, s.AppendAudit(c, batch...))
	all, err := s.ListAudit(c, store.AuditFilter{Limit: 1000})
	must(t, err)
	if len(all) != 150 {
		t.Fatalf("got %d events, want 150", len(all))
	}
	// Seq order matches append order within a batch.
	for i, e := range all {
		if want := fmt.Sprintf("subject-%d", 149-i); e.Subject != want {
			t.Fatalf("event %d is %s, want %s", i, e.Subject, want)
		}
	}
	oldest := all[len(all)-1].Seq

	count := func(f store.AuditFilter) []store.AuditEvent {
		t.Helper()
		l, err := s.ListAudit(c, f)
		must(t, err)
		for i := 1; i < len(l); i++ {
			if l[i-1].Seq <= l[i].Seq {
				t.Fatalf("filter %+v: not newest first", f)
			}
		}
		return l
	}
	if n := len(count(store.AuditFilter{})); n != 100 {
		t.Errorf("default limit returned %d, want 100", n)
	}
	if n := len(count(store.AuditFilter{Limit: -5})); n != 100 {
		t.Errorf("negative limit returned %d, want 100", n)
	}
	if l := count(store.AuditFilter{Limit: 7}); len(l) != 7 || l[0].Seq != all[0].Seq {
		t.Errorf("limit 7 returned %d events starting at %d", len(l), l[0].Seq)
	}

	want := func(f store.AuditFilter, match func(string) bool) {
		t.Helper()
		got := count(f)
		var exp []int64
		for _, e := range all {
			if match(e.Type) && e.Seq > f.AfterSeq {
				exp = append(exp, e.Seq)
			}
		}
		if f.Limit > 0 && len(exp) > f.Limit {
			exp = exp[:f.Limit]
		}
		gotSeqs := names(got, func(e store.AuditEvent) string { return fmt.Sprint(e.Seq) })
		expSeqs := names(exp, func(s int64) string { return fmt.Sprint(s) })
		if !slices.Equal(gotSeqs, expSeqs) {
			t.Errorf("filter %+v: got seqs %v, want %v", f, gotSeqs, expSeqs)
		}
	}
	want(store.AuditFilter{Type: "flow.", Limit: 1000}, func(s string) bool {
		return s == "flow.allow" || s == "flow.deny" || s == "flow.allow.extra"
	})
	want(store.AuditFilter{Type: "flow", Limit: 1000}, func(s string) bool { return s == "flow" })
	want(store.AuditFilter{Type: "flow.allow", Limit: 1000}, func(s string) bool { return s == "flow.allow" })
	want(store.AuditFilter{Type: "flow.allow.", Limit: 1000}, func(s string) bool { return s == "flow.allow.extra" })
	want(store.AuditFilter{Type: "nothing", Limit: 1000}, func(string) bool { return false })
	want(store.AuditFilter{Type: "%", Limit: 1000}, func(string) bool { return false })
	want(store.AuditFilter{Type: "_.", Limit: 1000}, func(string) bool { return false })
	want(store.AuditFilter{AfterSeq: oldest + 140, Limit: 1000}, func(string) bool { return true })
	want(store.AuditFilter{Type: "flow.", AfterSeq: oldest + 100, Limit: 3}, func(s string) bool { return len(s) > 5 && s[:5] == "flow." })
	want(store.AuditFilter{AfterSeq: all[0].Seq}, func(string) bool { return true })
}

// testAuditConcurrent: concurrent appends get distinct Seqs and none is lost.
func testAuditConcurrent(t *testing.T, s store.Store) {
	c := ctx(t)
	const writers, batches, per = 8, 5, 10
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				var batch []store.AuditEvent
				for i := range per {
					e := event("flow.allow", i)
					e.Subject = fmt.Sprintf("w%d-b%d-%d", w, b, i)
					batch = append(batch, e)
				}
				if err := s.AppendAudit(c, batch...); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	list, err := s.ListAudit(c, store.AuditFilter{Limit: 10000})
	must(t, err)
	if len(list) != writers*batches*per {
		t.Fatalf("got %d events, want %d", len(list), writers*batches*per)
	}
	// Strictly decreasing newest-first, and each batch contiguous and in
	// order (one transaction).
	pos := map[string]int64{}
	for i, e := range list {
		if i > 0 && list[i-1].Seq <= e.Seq {
			t.Fatalf("Seq not strictly decreasing at %d", i)
		}
		pos[e.Subject] = e.Seq
	}
	for w := range writers {
		for b := range batches {
			first := pos[fmt.Sprintf("w%d-b%d-0", w, b)]
			for i := range per {
				if got := pos[fmt.Sprintf("w%d-b%d-%d", w, b, i)]; got != first+int64(i) {
					t.Fatalf("batch w%d-b%d not contiguous: event %d at seq %d, first at %d", w, b, i, got, first)
				}
			}
		}
	}
}

// --- admin tokens ---

func testAdminTokens(t *testing.T, s store.Store) {
	c := ctx(t)
	m, err := s.AdminTokenHashes(c)
	must(t, err)
	if len(m) != 0 {
		t.Fatalf("new store has admin tokens: %v", m)
	}
	must(t, s.PutAdminTokenHash(c, "admin", []byte("h1")))
	must(t, s.PutAdminTokenHash(c, "ops", []byte("h2")))
	must(t, s.PutAdminTokenHash(c, "admin", []byte("h3"))) // replaces
	m, err = s.AdminTokenHashes(c)
	must(t, err)
	equal(t, "AdminTokenHashes", m, map[string][]byte{"admin": []byte("h3"), "ops": []byte("h2")})
}

// --- snapshot ---

func testSnapshot(t *testing.T, s store.Store) {
	c := ctx(t)
	snap, err := s.Snapshot(c)
	must(t, err)
	if len(snap.Segments)+len(snap.Apps)+len(snap.Users)+len(snap.Groups)+len(snap.Rules)+len(snap.Gateways)+len(snap.Devices) != 0 {
		t.Fatalf("empty store snapshot not empty: %+v", snap)
	}

	must(t, s.CreateSegment(c, seg("radiology")))
	must(t, s.CreateSegment(c, seg("clinical")))
	must(t, s.CreateApp(c, app("pacs", "radiology")))
	must(t, s.CreateApp(c, app("ehr", "clinical")))
	must(t, s.CreateUser(c, user("nurse")))
	must(t, s.CreateUser(c, user("admin")))
	must(t, s.CreateGroup(c, store.Group{Name: "nurses", Members: []string{"nurse"}}))
	must(t, s.CreateGroup(c, store.Group{Name: "all", Members: []string{"nurse", "admin"}}))
	must(t, s.CreateRule(c, store.Rule{Name: "r2", Group: "nurses", App: "ehr"}))
	must(t, s.CreateRule(c, store.Rule{Name: "r1", Group: "all", App: "pacs"}))
	enroll(t, s, "clinical", "gw-2")
	enroll(t, s, "radiology", "gw-1")
	_, err = s.CreateDevice(c, store.Device{ID: "dev-2", User: "nurse"})
	must(t, err)
	_, err = s.CreateDevice(c, store.Device{ID: "dev-1", User: "admin"})
	must(t, err)

	snap, err = s.Snapshot(c)
	must(t, err)
	// The snapshot agrees with the list methods.
	segs, _ := s.ListSegments(c)
	apps, _ := s.ListApps(c)
	users, _ := s.ListUsers(c)
	groups, _ := s.ListGroups(c)
	rules, _ := s.ListRules(c)
	gws, _ := s.ListGateways(c)
	devs, _ := s.ListDevices(c)
	equal(t, "Snapshot", *snap, store.Snapshot{
		Segments: segs, Apps: apps, Users: users, Groups: groups, Rules: rules, Gateways: gws, Devices: devs,
	})
	wantNames(t, "snapshot segments", names(snap.Segments, func(s store.Segment) string { return s.Name }), []string{"clinical", "radiology"})
	wantNames(t, "snapshot groups", names(snap.Groups, func(g store.Group) string { return g.Name }), []string{"all", "nurses"})
	wantNames(t, "snapshot group members", snap.Groups[0].Members, []string{"admin", "nurse"})
	wantNames(t, "snapshot rules", names(snap.Rules, func(r store.Rule) string { return r.Name }), []string{"r1", "r2"})
	wantNames(t, "snapshot gateways", names(snap.Gateways, func(g store.Gateway) string { return g.ID }), []string{"gw-1", "gw-2"})
	wantNames(t, "snapshot devices", names(snap.Devices, func(d store.Device) string { return d.ID }), []string{"dev-1", "dev-2"})
	if snap.Users[1].PasswordHash == "" {
		t.Errorf("snapshot users lack credentials")
	}
}

// testSnapshotConsistent takes snapshots while a writer keeps changing the
// directory; every snapshot must be referentially whole. A snapshot read
// table by table outside one transaction would see, for example, a device
// whose user was created after the users were read.
func testSnapshotConsistent(t *testing.T, s store.Store) {
	c := ctx(t)
	must(t, s.CreateSegment(c, seg("clinical")))
	must(t, s.CreateApp(c, app("ehr", "clinical")))

	const rounds = 60
	done := make(chan struct{})
	var writeErr error
	go func() {
		defer close(done)
		for i := range rounds {
			u, g, r := fmt.Sprintf("u%03d", i), fmt.Sprintf("g%03d", i), fmt.Sprintf("r%03d", i)
			steps := []func() error{
				func() error { return s.CreateUser(c, user(u)) },
				func() error { _, err := s.CreateDevice(c, store.Device{ID: "d-" + u, User: u}); return err },
				func() error { return s.CreateGroup(c, store.Group{Name: g, Members: []string{u}}) },
				func() error { return s.CreateRule(c, store.Rule{Name: r, Group: g, App: "ehr"}) },
			}
			if i >= 2 { // tear down an older round, in dependency order
				o := i - 2
				ou, og, or := fmt.Sprintf("u%03d", o), fmt.Sprintf("g%03d", o), fmt.Sprintf("r%03d", o)
				steps = append(steps,
					func() error { return s.DeleteRule(c, or) },
					func() error { return s.DeleteGroup(c, og) },
					func() error { return s.DeleteUser(c, ou) },
				)
			}
			for _, step := range steps {
				if err := step(); err != nil {
					writeErr = err
					return
				}
			}
		}
	}()

	snaps := 0
	for running := true; running; {
		select {
		case <-done:
			running = false // one more snapshot after the writer stops
		default:
		}
		snap, err := s.Snapshot(c)
		must(t, err)
		snaps++
		checkWhole(t, snap)
	}
	if writeErr != nil {
		t.Fatalf("writer: %v", writeErr)
	}
	if snaps < 2 {
		t.Logf("only %d snapshots overlapped the writer", snaps)
	}
}

// checkWhole fails if any reference in snap dangles.
func checkWhole(t *testing.T, snap *store.Snapshot) {
	t.Helper()
	set := func(ns []string) map[string]bool {
		m := make(map[string]bool, len(ns))
		for _, n := range ns {
			m[n] = true
		}
		return m
	}
	users := set(names(snap.Users, func(u store.User) string { return u.Name }))
	groups := set(names(snap.Groups, func(g store.Group) string { return g.Name }))
	apps := set(names(snap.Apps, func(a store.App) string { return a.Name }))
	segs := set(names(snap.Segments, func(s store.Segment) string { return s.Name }))
	for _, d := range snap.Devices {
		if !users[d.User] {
			t.Fatalf("snapshot: device %s of missing user %s", d.ID, d.User)
		}
	}
	for _, g := range snap.Groups {
		for _, m := range g.Members {
			if !users[m] {
				t.Fatalf("snapshot: group %s has missing member %s", g.Name, m)
			}
		}
	}
	for _, r := range snap.Rules {
		if !groups[r.Group] || !apps[r.App] {
			t.Fatalf("snapshot: rule %s references missing group %s or app %s", r.Name, r.Group, r.App)
		}
	}
	for _, a := range snap.Apps {
		if !segs[a.Segment] {
			t.Fatalf("snapshot: app %s in missing segment %s", a.Name, a.Segment)
		}
	}
	for _, g := range snap.Gateways {
		if !segs[g.Segment] {
			t.Fatalf("snapshot: gateway %s in missing segment %s", g.ID, g.Segment)
		}
	}
	// Every user created in a round has its device by the time its group
	// exists (they are created in that order).
	devUsers := set(names(snap.Devices, func(d store.Device) string { return d.User }))
	for _, g := range snap.Groups {
		for _, m := range g.Members {
			if !devUsers[m] {
				t.Fatalf("snapshot: group %s exists but its member %s has no device yet", g.Name, m)
			}
		}
	}
}

// --- robustness ---

// testOddInput: values the API layer would reject still store and load
// without panics or corruption. (Strings stay valid UTF-8 without NUL:
// PostgreSQL text cannot hold either.)
func testOddInput(t *testing.T, s store.Store) {
	c := ctx(t)
	odd := "'; DROP TABLE users; --\u202e%_\\\"\n"
	must(t, s.CreateSegment(c, store.Segment{Name: odd, CIDRs: []netip.Prefix{{}}}))
	got, err := s.GetSegment(c, odd)
	must(t, err)
	if got.Name != odd {
		t.Errorf("name round trip: %q", got.Name)
	}
	must(t, s.CreateApp(c, store.App{Name: "", Segment: odd, Proto: policy.Proto(250)}))
	a, err := s.GetApp(c, "")
	must(t, err)
	if a.Addr.IsValid() || a.Proto != 250 || len(a.Ports) != 0 {
		t.Errorf("zero app round trip: %+v", a)
	}
	must(t, s.CreateUser(c, store.User{Name: odd}))
	d, err := s.CreateDevice(c, store.Device{ID: odd, User: odd})
	must(t, err)
	if !d.PublicKey.IsZero() {
		t.Errorf("zero key came back as %v", d.PublicKey)
	}
	_, err = s.GetDevice(c, odd)
	must(t, err)
	must(t, s.AppendAudit(c, store.AuditEvent{Type: odd, Details: map[string]string{odd: odd}}))
	ev, err := s.ListAudit(c, store.AuditFilter{Type: odd})
	must(t, err)
	if len(ev) != 1 || ev[0].Details[odd] != odd {
		t.Errorf("odd audit event round trip: %+v", ev)
	}
	must(t, s.CreateEnrollToken(c, store.EnrollToken{ID: "far", Segment: odd, Hash: []byte{0}, ExpiresAt: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}))
	must(t, s.CreateEnrollToken(c, store.EnrollToken{ID: "past", Segment: odd, Hash: []byte{1}}))
	_, err = s.RedeemEnrollToken(c, []byte{1}, at(0), store.Gateway{})
	wantErr(t, "token with zero ExpiresAt", err, store.ErrTokenInvalid)
	if _, err := s.RedeemEnrollToken(c, []byte{0}, time.Time{}, store.Gateway{}); err != nil {
		t.Errorf("redeem at zero time: %v", err)
	}
	if _, err := s.Snapshot(c); err != nil {
		t.Errorf("snapshot with odd values: %v", err)
	}
}

// testCanceledContext: a cancelled context fails the call and changes
// nothing.
func testCanceledContext(t *testing.T, s store.Store) {
	c, cancel := context.WithCancel(ctx(t))
	cancel()
	if err := s.CreateSegment(c, seg("clinical")); err == nil {
		t.Fatalf("CreateSegment with a cancelled context succeeded")
	}
	if _, err := s.ListSegments(c); err == nil {
		t.Errorf("ListSegments with a cancelled context succeeded")
	}
	if _, err := s.GetSegment(ctx(t), "clinical"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("cancelled create left a segment behind: %v", err)
	}
}

func testClose(t *testing.T, s store.Store) {
	must(t, s.CreateSegment(ctx(t), seg("clinical")))
	must(t, s.Close())
	must(t, s.Close())
	if _, err := s.ListSegments(ctx(t)); err == nil {
		t.Errorf("ListSegments after Close succeeded")
	}
}
