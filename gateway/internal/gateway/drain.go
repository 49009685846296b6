package gateway

import (
	"slices"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/wgdev"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// Drain (capability 14). An admin drains a gateway before maintenance
// (cordonctl gateway drain); its map says so (GatewayMap.Draining), and
// every client's map orders it after the segment's other gateways. Each
// client moves its segments off it at its first quiet moment (no
// connection into the segment open), so the gateway lets its peers go as
// they leave:
//
//	drain ──DrainSettle──▶ only peers with an open flow ──DrainGrace──▶ no peers
//	  │                        │  (re-checked every drainCheck)
//	  └── undrain at any time: every peer of the map again
//
// For DrainSettle it keeps every peer (the clients get their maps at
// about the same time and move within a probe round); then only peers
// whose device has a flow in the connection table; at DrainGrace none:
// connections still open then are cut (the clients moved a little
// before, controlproto.DrainGrace). The authorizer and DNS keep the whole
// map: a dropped peer simply cannot send. The drain starts from when this
// process first applied a draining map (a restart starts it again).

// drainCheck is how often a draining gateway looks for peers to let go.
const drainCheck = time.Second

// noteDrainLocked records whether the map drains the gateway.
func (g *gw) noteDrainLocked(draining bool, now time.Time) {
	switch {
	case draining && g.drainSince.IsZero():
		g.drainSince = now
		g.log.Info("draining: clients move to the segment's other gateways; peers are let go as their flows end",
			"settle", controlproto.DrainSettle, "grace", controlproto.DrainGrace)
	case !draining && !g.drainSince.IsZero():
		g.drainSince = time.Time{}
		g.log.Info("drain ended: serving every peer of the map again")
	}
}

// drainPeersLocked is the peers of the map to configure at now: all of
// them unless draining (see above).
func (g *gw) drainPeersLocked(now time.Time) []wgdev.Peer {
	var peers []controlproto.GatewayPeer
	if g.cur != nil {
		peers = g.cur.Peers
	}
	return drainPeers(g.want, peers, g.drainSince, now, func() map[string]time.Duration {
		open, _ := g.authz.Activity(0) // devices with a flow in the table
		return open
	})
}

// drainPeers is drainPeersLocked's rule: of want (the map's peers in
// effect; mapPeers names their devices), all before DrainSettle of a drain
// since (zero: not draining), then those whose device is in open(), none
// from DrainGrace.
func drainPeers(want []wgdev.Peer, mapPeers []controlproto.GatewayPeer, since, now time.Time, open func() map[string]time.Duration) []wgdev.Peer {
	if since.IsZero() || now.Sub(since) < controlproto.DrainSettle {
		return slices.Clone(want)
	}
	if now.Sub(since) >= controlproto.DrainGrace {
		return nil
	}
	active := open()
	device := make(map[wgkey.Public]string, len(mapPeers))
	for _, p := range mapPeers {
		device[p.PublicKey] = p.DeviceID
	}
	var out []wgdev.Peer
	for _, p := range want {
		if _, ok := active[device[p.PublicKey]]; ok {
			out = append(out, p)
		}
	}
	return out
}

// armDrainLocked re-checks a draining gateway's peers in drainCheck.
func (g *gw) armDrainLocked() {
	if g.drainTimer != nil {
		g.drainTimer.Stop()
		g.drainTimer = nil
	}
	if g.drainSince.IsZero() || g.closed {
		return
	}
	g.drainTimer = time.AfterFunc(drainCheck, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if !g.closed && !g.drainSince.IsZero() {
			g.reconcileLocked(g.now())
		}
	})
}
