package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/cordonhq/cordon/client/internal/pathsel"
	"github.com/cordonhq/cordon/pkg/agentstate"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/wgstream"
)

// The TCP path (issue 14). A gateway whose map entry has a TCPEndpoint
// also accepts this device's WireGuard packets over TLS on TCP (usually
// 443), for networks that block UDP. The WireGuard device's bind is a
// wgstream.Bind: a peer whose endpoint is "tls://IP:port" is reached over
// a TLS stream, dialed on the first packet, with the controller's CA
// pinned and the gateway's identity (its ID in the map) verified.
//
// Each gateway's path is decided by pathsel from what the bind counts
// (wgstream.PathStats), read every pathTick:
//
//	on UDP:  probes are the handshake initiations sent to the gateway's
//	         UDP endpoint and the failover's DNS probes (failover.go);
//	         answers are packets received from that endpoint. No answer
//	         for pathsel.FallbackAfter: move to the stream, and handshake
//	         there at once.
//	on TCP:  every probeUDPEvery the next few packets sent down the stream
//	         are copied to UDP as well (wgstream.PathStats.ProbeNext); when
//	         UDP works, the gateway takes a copy, roams to UDP and answers
//	         there. pathsel.ReturnAfterOK answers:
//	         move back to UDP and close the stream.
//
// A move re-applies the map (the peer's endpoint changes; nothing else
// does). Nothing here sends anything of its own: an idle device costs the
// gateway nothing on either path.

// Path timers.
const (
	pathTick      = 250 * time.Millisecond
	probeUDPEvery = time.Second
)

// gwPath is one gateway's path state.
type gwPath struct {
	sel            *pathsel.Selector
	udpSrc, tcpSrc string         // as the map has them
	udp            netip.AddrPort // resolved; invalid: no UDP endpoint
	tcp            string         // resolved "IP:port"; empty: no TCP path
	stats          *wgstream.PathStats
	seen           struct{ init, recv, probes uint64 }
	nextProbe      time.Time
}

// pathChange is a gateway moved to another path.
type pathChange struct {
	id   string
	path pathsel.Path
	tcp  string // its TCP endpoint (IP:port)
}

// paths holds every gateway's path. Safe for concurrent use.
type paths struct {
	bind *wgstream.Bind
	log  *slog.Logger

	mu       sync.Mutex
	gws      map[string]*gwPath // by gateway ID
	switches [2]uint64          // moves to UDP, to TCP (by pathsel.Path)
}

func newPaths(bind *wgstream.Bind, log *slog.Logger) *paths {
	return &paths{bind: bind, log: log, gws: map[string]*gwPath{}}
}

// sync follows map m: gateways added, gone, or whose endpoints changed.
// Host names are resolved when they change.
func (p *paths) sync(m *controlproto.ClientMap) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := map[string]bool{}
	for _, g := range m.Gateways {
		keep[g.GatewayID] = true
		gp := p.gws[g.GatewayID]
		if gp == nil {
			gp = &gwPath{sel: pathsel.New(false)}
			p.gws[g.GatewayID] = gp
		}
		if gp.udpSrc != g.Endpoint {
			if gp.stats != nil {
				p.bind.Unwatch(gp.udp)
				gp.stats = nil
			}
			gp.udpSrc, gp.udp = g.Endpoint, netip.AddrPort{}
			if ua, err := net.ResolveUDPAddr("udp", g.Endpoint); err == nil {
				gp.udp = ua.AddrPort()
			}
		}
		if gp.tcpSrc != g.TCPEndpoint {
			p.closeStreamLocked(gp)
			gp.tcpSrc, gp.tcp = g.TCPEndpoint, ""
			if g.TCPEndpoint != "" {
				if ta, err := net.ResolveTCPAddr("tcp", g.TCPEndpoint); err == nil {
					gp.tcp = netip.AddrPortFrom(ta.AddrPort().Addr().Unmap(), ta.AddrPort().Port()).String()
				} else {
					p.log.Warn("gateway's TCP endpoint does not resolve: UDP only", "gateway", g.GatewayID, "tcp_endpoint", g.TCPEndpoint, "err", err)
				}
			}
		}
		offered := gp.tcp != "" && gp.udp.IsValid()
		gp.sel.SetTCPOffered(offered)
		if !offered {
			if gp.stats != nil {
				p.bind.Unwatch(gp.udp)
				gp.stats = nil
			}
			continue
		}
		st, err := p.bind.Watch(gp.udp, wgstream.Scheme+gp.tcp)
		if err != nil {
			p.log.Warn("watch the gateway's UDP path", "gateway", g.GatewayID, "err", err)
			continue
		}
		if st != gp.stats {
			gp.stats = st
			gp.seen.init, gp.seen.recv, gp.seen.probes = st.Initiations.Load(), st.Received.Load(), st.Probes.Load()
		}
	}
	for id, gp := range p.gws {
		if !keep[id] {
			p.closeStreamLocked(gp)
			if gp.stats != nil {
				p.bind.Unwatch(gp.udp)
			}
			delete(p.gws, id)
		}
	}
}

func (p *paths) closeStreamLocked(gp *gwPath) {
	if gp.tcp != "" {
		p.bind.CloseStream(wgstream.Scheme + gp.tcp)
	}
}

// endpoint is the WireGuard endpoint of gateway g on its current path.
func (p *paths) endpoint(g controlproto.ClientGateway) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gp := p.gws[g.GatewayID]; gp != nil && gp.sel.Path() == pathsel.TCP && gp.tcp != "" {
		return wgstream.Scheme + gp.tcp
	}
	return g.Endpoint
}

// gatewayFor names the gateway whose TCP endpoint is addr (IP:port), for
// the TLS dial.
func (p *paths) gatewayFor(addr string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, gp := range p.gws {
		if gp.tcp == addr {
			return id, true
		}
	}
	return "", false
}

// probeSent records a failover DNS probe to gateway id: on UDP it is a
// UDP probe too.
func (p *paths) probeSent(id string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gp := p.gws[id]; gp != nil && gp.stats != nil && gp.sel.Path() == pathsel.UDP {
		gp.sel.UDPProbeSent(now)
	}
}

// tick reads the counters at now and returns the gateways that moved.
func (p *paths) tick(now time.Time) []pathChange {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []pathChange
	for id, gp := range p.gws {
		if st := gp.stats; st != nil {
			init, recv, probes := st.Initiations.Load(), st.Received.Load(), st.Probes.Load()
			if gp.sel.Path() == pathsel.UDP {
				if init != gp.seen.init {
					gp.sel.UDPProbeSent(now)
				}
			} else {
				if probes != gp.seen.probes {
					gp.sel.UDPProbeSent(now)
				}
				if !now.Before(gp.nextProbe) {
					st.ProbeNext()
					gp.nextProbe = now.Add(probeUDPEvery)
				}
			}
			if recv != gp.seen.recv {
				gp.sel.UDPAnswer(now)
			}
			gp.seen.init, gp.seen.recv, gp.seen.probes = init, recv, probes
		}
		if path, changed := gp.sel.Tick(now); changed {
			p.switches[path]++
			out = append(out, pathChange{id: id, path: path, tcp: gp.tcp})
		}
	}
	return out
}

// current returns each gateway's path, for status and metrics.
func (p *paths) current() map[string]pathsel.Path {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]pathsel.Path, len(p.gws))
	for id, gp := range p.gws {
		out[id] = gp.sel.Path()
	}
	return out
}

// switchCounts returns the moves to UDP and to TCP so far.
func (p *paths) switchCounts() (toUDP, toTCP uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.switches[pathsel.UDP], p.switches[pathsel.TCP]
}

// streamDialer dials a gateway's TCP endpoint: TLS 1.3, the controller's
// CA pinned, and the certificate must be the one issued to the gateway
// the map lists at that address.
func streamDialer(st *agentstate.State, p *paths) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		id, ok := p.gatewayFor(addr)
		if !ok {
			return nil, fmt.Errorf("no gateway of the map has TCP endpoint %s", addr)
		}
		cfg, err := st.PeerTLS(wgstream.ALPN, id, string(controlproto.KindGateway))
		if err != nil {
			return nil, err
		}
		d := tls.Dialer{Config: cfg}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("TLS to gateway %s at %s: %w", id, addr, err)
		}
		return c, nil
	}
}

// watchPaths moves gateways between UDP and TCP until ctx ends.
func (t *tunnel) watchPaths(ctx context.Context) {
	tick := time.NewTicker(pathTick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		changes := t.paths.tick(time.Now())
		if len(changes) == 0 {
			continue
		}
		t.applyMu.Lock()
		t.mu.Lock()
		m := t.raw
		t.mu.Unlock()
		var err error
		if m != nil {
			_, _, err = t.applyLocked(m)
		}
		t.applyMu.Unlock()
		if err != nil {
			t.log.Error("move gateways to another path", "err", err)
			continue
		}
		for _, c := range changes {
			t.pathMoved(m, c)
		}
	}
}

// pathMoved finishes a move: a new session over the stream at once, or
// the stream closed once back on UDP.
func (t *tunnel) pathMoved(m *controlproto.ClientMap, c pathChange) {
	if c.path == pathsel.UDP {
		t.bind.CloseStream(wgstream.Scheme + c.tcp)
		t.log.Info("UDP to the gateway works again: back on UDP", "gateway", c.id, "path", c.path.String())
		return
	}
	t.log.Warn("UDP to the gateway gets no answer: carrying WireGuard over TLS on TCP", "gateway", c.id, "path", c.path.String(),
		"tcp_endpoint", c.tcp, "after", pathsel.FallbackAfter)
	if m == nil {
		return
	}
	for _, g := range m.Gateways {
		if g.GatewayID == c.id {
			t.wg.Rehandshake(g.PublicKey)
		}
	}
}
