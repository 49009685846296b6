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
//   - PutPolicyVersion numbers versions 1, 2, ... and refuses (ErrStale) a
//     prev that is not the active version; ListPolicyVersions leaves Source
//     empty;
//   - an AdminToken is invalid from its ExpiresAt on; deleting an admin
//     deletes its tokens; UseRecoveryCode succeeds once per code even under
//     concurrency, and deleting a user deletes its recovery codes;
//   - ListBreakGlassUses returns uses newest first, each with its reviews
//     oldest first;
//   - Close is idempotent.
package storetest

import (
	"context"
	"encoding/base64"
	"errors"
	"net/netip"
	"reflect"
	"slices"
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
		{"UpdateAtomic", testUpdateAtomic},
		{"ClaimRequest", testClaimRequest},
		{"DNSNameUnique", testDNSNameUnique},
		{"Audit", testAudit},
		{"AuditFilter", testAuditFilter},
		{"AuditConcurrent", testAuditConcurrent},
		{"AuditLog", testAuditLog},
		{"AuditSearch", testAuditSearch},
		{"AuditSearchWhileAppending", testAuditSearchWhileAppending},
		{"AuditArchive", testAuditArchive},
		{"ArchiveRequests", testArchiveRequests},
		{"Checkpoints", testCheckpoints},
		{"AdminAccounts", testAdminAccounts},
		{"AdminTokens", testAdminTokens},
		{"AdminTokenAccount", testAdminTokenAccount},
		{"AdminIdPBinding", testAdminIdPBinding},
		{"RecoveryCodes", testRecoveryCodes},
		{"RecoveryCodeConcurrent", testRecoveryCodeConcurrent},
		{"Sessions", testSessions},
		{"SessionsConcurrent", testSessionsConcurrent},
		{"SessionsUserDisabled", testSessionsUserDisabled},
		{"SessionsDisableRace", testSessionsDisableRace},
		{"PolicyVersions", testPolicyVersions},
		{"PolicyVersionsConcurrent", testPolicyVersionsConcurrent},
		{"Identities", testIdentities},
		{"IdentitiesConcurrent", testIdentitiesConcurrent},
		{"Posture", testPosture},
		{"FlowAcks", testFlowAcks},
		{"Reviews", testReviews},
		{"BreakGlass", testBreakGlass},
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

// together runs f(0) … f(n-1) in n goroutines released at once, to race
// them, and returns their errors by index.
func together(n int, f func(i int) error) []error {
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = f(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
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
