package client

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cordonhq/cordon/client/internal/proxy"
	"github.com/cordonhq/cordon/client/internal/reach"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

var _ proxy.Explainer = (*tunnel)(nil)

// Explain says why host (a name or address, with or without a port) cannot
// be reached now, from the applied map, the session, the control channel,
// the failover prober and the WireGuard handshake with the app's gateway.
func (t *tunnel) Explain(host string, _ error) reach.Verdict {
	t.mu.Lock()
	cm := t.cm
	t.mu.Unlock()
	if cm == nil {
		// No map yet. t.cc, t.fo and t.wg are set before the first map,
		// so they may be read only once cm is non-nil.
		return reach.For(reach.ReasonControlDown)
	}
	return reach.Classify(t.snapshot(cm, gatewayFor(cm, host), t.handshakes()), time.Now())
}

// snapshot is what the client knows about reaching the apps of gateway gw
// (nil: the map entitles the user to none) of the applied map cm, for
// reach.Classify; hs holds the last handshake by gateway public key. The
// proxy (Explain) and 'cordon status' (status) both classify from it.
func (t *tunnel) snapshot(cm *controlproto.ClientMap, gw *controlproto.ClientGateway, hs map[string]time.Time) reach.Snapshot {
	s := reach.Snapshot{Session: cm.Session, ControlUp: t.cc.Connected(), Entitled: gw != nil}
	if gw != nil {
		s.GatewayDead = t.fo.dead(gw.GatewayID)
		s.LastHandshake = hs[gw.PublicKey.String()]
	}
	return s
}

// handshakes returns the last WireGuard handshake with each peer, by
// public key; empty if the device cannot say.
func (t *tunnel) handshakes() map[string]time.Time {
	hs := map[string]time.Time{}
	if peers, err := t.wg.Status(); err == nil {
		for _, p := range peers {
			hs[p.PublicKey.String()] = p.LastHandshake
		}
	}
	return hs
}

// gatewayFor returns the gateway of the applied map cm that serves host
// (an app name, alias or address, optionally with a port), or nil when the
// map does not entitle the user to it.
func gatewayFor(cm *controlproto.ClientMap, host string) *controlproto.ClientGateway {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	addr, err := netip.ParseAddr(host)
	isAddr := err == nil
	for i := range cm.Gateways {
		g := &cm.Gateways[i]
		for _, a := range g.Apps {
			if isAddr && a.Addr.Contains(addr) {
				return g
			}
			if !isAddr && (strings.EqualFold(strings.TrimSuffix(a.DNSName, "."), host) ||
				slices.ContainsFunc(a.DNSAliases, func(n string) bool { return strings.EqualFold(strings.TrimSuffix(n, "."), host) })) {
				return g
			}
		}
	}
	return nil
}
