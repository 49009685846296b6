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
	s := reach.Snapshot{Session: cm.Session, ControlUp: t.cc.Connected()}
	gw := gatewayFor(cm, host)
	s.Entitled = gw != nil
	if gw != nil {
		s.GatewayDead = t.fo.dead(gw.GatewayID)
		if peers, err := t.wg.Status(); err == nil {
			for _, p := range peers {
				if p.PublicKey == gw.PublicKey {
					s.LastHandshake = p.LastHandshake
				}
			}
		}
	}
	return reach.Classify(s, time.Now())
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
