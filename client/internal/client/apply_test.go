package client

import (
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/cordonhq/cordon/client/internal/dnsstub"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/dnszone"
	"github.com/cordonhq/cordon/pkg/wgdev"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

var errInjected = errors.New("injected failure")

// fakeWG holds the peers in effect; failNext makes the next Reconfig fail
// after it applied (as a device that does not come up).
type fakeWG struct {
	peers    []wgdev.Peer
	failNext bool
}

func (f *fakeWG) Reconfig(c wgdev.Config) (bool, error) {
	f.peers = slices.Clone(c.Peers)
	if f.failNext {
		f.failNext = false
		return true, errInjected
	}
	return true, nil
}

type fakeRoutes struct {
	routes   []netip.Prefix
	failNext bool
}

func (f *fakeRoutes) SyncRoutes(want []netip.Prefix) error {
	if f.failNext {
		f.failNext = false
		f.routes = want[:len(want)/2] // half done, as a kernel refusing one route
		return errInjected
	}
	f.routes = slices.Clone(want)
	return nil
}

type fakeSys struct {
	zones    []string
	failNext bool
}

func (f *fakeSys) SetZones(z []string) error {
	if f.failNext {
		f.failNext = false
		return errInjected
	}
	f.zones = slices.Clone(z)
	return nil
}
func (f *fakeSys) Upstream() []netip.AddrPort { return nil }
func (f *fakeSys) Close() error               { return nil }

func testMap(rev uint64, gateways, zone string) *controlproto.ClientMap {
	m := &controlproto.ClientMap{Revision: rev, DNSZones: []controlproto.DNSZone{{Name: zone, TTL: 30}}}
	for i, id := range gateways {
		var k [32]byte
		k[0] = byte(id)
		app := netip.AddrFrom4([4]byte{10, 20, byte(i), byte(id)})
		m.Gateways = append(m.Gateways, controlproto.ClientGateway{
			GatewayID: string(id), PublicKey: wgkey.PublicFromWGTypes(k),
			OverlayAddr: netip.AddrFrom4([4]byte{100, 64, 0, byte(id)}),
			AllowedIPs:  []netip.Prefix{netip.PrefixFrom(app, 32)},
			Apps:        []controlproto.App{{Name: "app-" + string(id), DNSName: "app-" + string(id) + "." + zone, Addr: netip.PrefixFrom(app, 32)}},
		})
	}
	return m
}

type hostState struct {
	peers  []wgdev.Peer
	routes []netip.Prefix
	zones  []string
	stub   []dnszone.Zone
}

// Regression: the client applied a map step by step (WireGuard, routes,
// DNS) and stopped half way when a step failed, serving a mix of two maps.
func TestApplyMapAllOrNothing(t *testing.T) {
	for _, step := range []string{"wireguard", "routes", "system dns", "stub zones"} {
		t.Run(step, func(t *testing.T) {
			wg, rt, sys := &fakeWG{}, &fakeRoutes{}, &fakeSys{}
			stub := dnsstub.New(dnsstub.Config{})
			a := newApplier(wgkey.Private{}, wg, stub)
			a.rt, a.sys = rt, sys
			state := func() hostState {
				return hostState{slices.Clone(wg.peers), slices.Clone(rt.routes), slices.Clone(sys.zones), stub.Zones()}
			}
			if _, err := a.apply(testMap(1, "ab", "hosp.internal.")); err != nil {
				t.Fatal(err)
			}
			before := state()
			next := testMap(2, "bcd", "clinic.internal.")
			switch step {
			case "wireguard":
				wg.failNext = true
			case "routes":
				rt.failNext = true
			case "system dns":
				sys.failNext = true
			case "stub zones":
				next.DNSZones = []controlproto.DNSZone{{Name: "not a zone!", TTL: 30}}
			}
			if _, err := a.apply(next); err != nil {
				t.Log(err)
			} else {
				t.Fatal("map applied despite the failure")
			}
			if after := state(); !reflect.DeepEqual(after, before) {
				t.Fatalf("a failed map changed the host:\nbefore %+v\nafter  %+v", before, after)
			}
			// And the next good map applies whole.
			good := testMap(3, "bcd", "clinic.internal.")
			if _, err := a.apply(good); err != nil {
				t.Fatal(err)
			}
			if got := state(); len(got.peers) != 3 || len(got.routes) != 3 || !slices.Equal(got.zones, []string{"clinic.internal."}) ||
				len(got.stub) != 1 {
				t.Fatalf("next map: %+v", got)
			}
		})
	}
}
