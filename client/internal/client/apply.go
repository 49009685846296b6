package client

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cordonhq/cordon/client/internal/dnsstub"
	"github.com/cordonhq/cordon/client/internal/sysdns"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/wgdev"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// A map changes three parts of the host: WireGuard's peers, the routes
// through the tun device (tun mode) and DNS (the stub's routing and, in tun
// mode, the zones the system resolver sends to the stub). The client
// applies a map whole or not at all:
//
//	prepare: build the peers, routes and DNS routing and check what can be
//	         checked (the stub's zones); nothing on the host changes yet
//	commit:  WireGuard → routes → stub → system resolver, in that order;
//	         when a step fails, the steps already taken go back to the
//	         previous map's configuration, and the map is refused (its ack
//	         carries the error; the controller sends a whole map next)
//
// so the device goes on serving exactly the previous map. A rollback that
// fails itself (the kernel refused twice) is reported with the error; the
// next map, or the route resync, puts things right.

// peerConfigurer is WireGuard's peer configuration (*wgdev.Device).
type peerConfigurer interface {
	Reconfig(wgdev.Config) (bool, error)
}

// routeTable is the routes through the tun device (*tunnet.Link).
type routeTable interface {
	SyncRoutes(want []netip.Prefix) error
}

// stubRouting is the DNS stub's routing (*dnsstub.Stub).
type stubRouting interface {
	Prepare(*controlproto.ClientMap) (dnsstub.Routing, error)
	Install(dnsstub.Routing)
	Current() dnsstub.Routing
	SetUpstream([]netip.AddrPort)
}

// mapConfig is what one map configures on the host.
type mapConfig struct {
	peers  []wgdev.Peer
	routes []netip.Prefix
	dns    dnsstub.Routing
	zones  []string
	names  map[string]netip.Addr // entitled app name → address
}

// applier applies maps whole; only the control goroutine calls it.
type applier struct {
	key  wgkey.Private
	wg   peerConfigurer
	rt   routeTable     // nil in userspace mode
	stub stubRouting    // nil when there is none
	sys  sysdns.Manager // nil in userspace mode
	cur  mapConfig      // of the last map applied
	// peersSet, if set, is called once WireGuard has the new peers (the
	// rest of the map is host configuration the data path does not wait
	// for): the tunnel's gate (failover.go) opens there.
	peersSet func()
}

func newApplier(key wgkey.Private, wg peerConfigurer, stub stubRouting) *applier {
	a := &applier{key: key, wg: wg, stub: stub}
	if stub != nil {
		a.cur.dns = stub.Current()
	}
	return a
}

// prepare builds m's configuration without changing anything.
func (a *applier) prepare(m *controlproto.ClientMap) (mapConfig, error) {
	c := mapConfig{names: map[string]netip.Addr{}}
	for _, g := range m.Gateways {
		c.peers = append(c.peers, wgdev.Peer{
			PublicKey: g.PublicKey, Endpoint: g.Endpoint, AllowedIPs: g.AllowedIPs,
			Keepalive: 25 * time.Second,
			// A new gateway run lost our session: handshake again now.
			Epoch: string(g.Instance),
		})
		c.routes = append(c.routes, g.AllowedIPs...)
		for _, app := range g.Apps {
			if app.DNSName != "" && app.Addr.IsSingleIP() {
				c.names[strings.ToLower(app.DNSName)] = app.Addr.Addr()
			}
		}
	}
	if a.stub != nil {
		r, err := a.stub.Prepare(m)
		if err != nil {
			return c, fmt.Errorf("dns zones: %w", err)
		}
		c.dns = r
	}
	c.zones = make([]string, len(m.DNSZones))
	for i, z := range m.DNSZones {
		c.zones[i] = z.Name
	}
	return c, nil
}

// apply makes m what the host serves, whole or not at all, and returns its
// configuration.
func (a *applier) apply(m *controlproto.ClientMap) (mapConfig, error) {
	next, err := a.prepare(m)
	if err != nil {
		return mapConfig{}, err
	}
	var undo []func() error
	fail := func(err error) (mapConfig, error) {
		var errs []error
		for _, u := range slices.Backward(undo) {
			if uerr := u(); uerr != nil {
				errs = append(errs, uerr)
			}
		}
		if len(errs) > 0 {
			return mapConfig{}, fmt.Errorf("%w (and going back to the previous map: %w)", err, errors.Join(errs...))
		}
		return mapConfig{}, err
	}
	prev := a.cur

	if _, err := a.wg.Reconfig(wgdev.Config{PrivateKey: a.key, Peers: next.peers}); err != nil {
		// Reconfig checks everything before it changes anything, but may
		// have applied the peers and failed to bring the device up.
		undo = append(undo, a.peersBack(prev))
		return fail(fmt.Errorf("apply wireguard peers: %w", err))
	}
	undo = append(undo, a.peersBack(prev))
	if a.peersSet != nil {
		a.peersSet()
	}
	if a.rt != nil {
		if err := a.rt.SyncRoutes(next.routes); err != nil {
			undo = append(undo, func() error { return a.rt.SyncRoutes(prev.routes) })
			return fail(fmt.Errorf("apply routes: %w", err))
		}
		undo = append(undo, func() error { return a.rt.SyncRoutes(prev.routes) })
	}
	if a.stub != nil {
		a.stub.Install(next.dns)
		undo = append(undo, func() error { a.stub.Install(prev.dns); return nil })
	}
	if a.sys != nil {
		if err := a.sys.SetZones(next.zones); err != nil {
			undo = append(undo, func() error { return a.sys.SetZones(prev.zones) })
			return fail(fmt.Errorf("apply system dns zones: %w", err))
		}
		if a.stub != nil {
			a.stub.SetUpstream(a.sys.Upstream())
		}
	}
	a.cur = next
	return next, nil
}

func (a *applier) peersBack(prev mapConfig) func() error {
	return func() error {
		_, err := a.wg.Reconfig(wgdev.Config{PrivateKey: a.key, Peers: prev.peers})
		return err
	}
}
