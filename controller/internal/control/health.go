package control

import (
	"maps"
	"slices"
	"time"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Gateway health. Clients get every gateway of a segment in their own
// order (netmap.RankGateways); a gateway the controller knows to be down
// goes last in every order, so clients that (re)connect or get a new map
// start on a live one. "Known to be down" is: no control connection now,
// and none for longer than the grace period (since it disconnected, or
// since this controller started). A control connection that comes back
// makes it up again. Each flip is a store.Change naming the gateway, so
// the maps of every device it serves are recomputed (netmap.Affects), as
// for any other change of a gateway; nothing is written to the store.
//
// This is the controller's view only, and a slow one: a gateway killed
// without closing its connection is noticed at the QUIC idle timeout
// (controlproto.IdleTimeout) plus the grace. Clients do not wait for it:
// they probe their gateways themselves and fail over within seconds, also
// with the controller unreachable. A gateway cluster (memberlist, later)
// will report the same "down" faster, into the same SetGatewayDown.
//
// The health state lives in memory (per controller replica), like
// gateway instances: a restarted controller gives every gateway the grace
// period to reconnect before it calls it down.

// DefaultGatewayGrace is how long a gateway may be without a control
// connection before the controller calls it down.
const DefaultGatewayGrace = 10 * time.Second

// healthEvery is how often the recompute loop checks gateway health.
const healthEvery = time.Second

// Gateway states, as 'cordonctl gateway list' shows them.
const (
	GatewayUp           = "up"           // control connection open
	GatewayDisconnected = "disconnected" // no connection, within the grace period
	GatewayDead         = "dead"         // no connection past the grace period: clients order it last
)

// gatewaySeen is what the controller last knew of a gateway's control
// connection; guarded by Server.mu.
type gatewaySeen struct {
	cluster  clusterIdentity           // from its last connection (cluster.go)
	version  string                    // Hello.AgentVersion
	lastSeen time.Time                 // when it connected, or disconnected
	load     *controlproto.GatewayLoad // last reported on its connection; nil: none
}

// GatewayStatus is a gateway's health as this controller sees it.
type GatewayStatus struct {
	State    string
	LastSeen time.Time // zero: never since this controller started
	Version  string
	// Load is what the gateway last reported on its open connection; nil
	// while it is not up or reported none (an older gateway).
	Load *controlproto.GatewayLoad
}

// noteGatewayLocked records a gateway's connection (up) or disconnection.
func (s *Server) noteGatewayLocked(id, version string, now time.Time) {
	g := s.seen[id]
	if g == nil {
		g = &gatewaySeen{}
		s.seen[id] = g
	}
	if version != "" {
		g.version = version
	}
	g.lastSeen = now
	g.load = nil // reported anew on each connection
}

// noteLoad records the load gateway agent a reported on its connection
// (ignored once another connection replaced it).
func (s *Server) noteLoad(a *agent, l controlproto.GatewayLoad) {
	l.Peers, l.Flows = max(l.Peers, 0), max(l.Flows, 0)
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.seen[a.id]; g != nil && s.agents[a.id] == a {
		g.load = &l
	}
}

// gatewayStateLocked is gateway id's state at now.
func (s *Server) gatewayStateLocked(id string, now time.Time) string {
	if s.peersSeeDeadLocked(id) {
		return GatewayDead // its cluster saw it die (cluster.go)
	}
	if a := s.agents[id]; a != nil && a.kind == ca.KindGateway {
		return GatewayUp
	}
	since := s.started
	if g := s.seen[id]; g != nil && g.lastSeen.After(since) {
		since = g.lastSeen
	}
	if now.Sub(since) > s.grace() {
		return GatewayDead
	}
	return GatewayDisconnected
}

func (s *Server) grace() time.Duration {
	if s.cfg.GatewayGrace > 0 {
		return s.cfg.GatewayGrace
	}
	return DefaultGatewayGrace
}

// GatewayStatus returns gateway id's health as this controller sees it.
func (s *Server) GatewayStatus(id string) GatewayStatus {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := GatewayStatus{State: s.gatewayStateLocked(id, now)}
	if g := s.seen[id]; g != nil {
		st.Version = g.version
		st.LastSeen = g.lastSeen
	}
	if st.State == GatewayUp {
		st.LastSeen = now // it pings every controlproto.KeepAlive
		if g := s.seen[id]; g != nil {
			st.Load = g.load
		}
	}
	return st
}

// checkHealth recomputes which of ids (every gateway of the current
// state) are down and publishes the gateways that flipped as a change.
// The recompute goroutine only: it owns s.down, which load hands to each
// new index, so the change and the down set it names stay together.
func (s *Server) checkHealth(ids []string, now time.Time) {
	down := map[string]bool{}
	s.mu.Lock()
	for _, id := range ids {
		if s.gatewayStateLocked(id, now) == GatewayDead {
			down[id] = true
		}
	}
	s.mu.Unlock()
	var flipped []string
	for id := range down {
		if !s.down[id] {
			flipped = append(flipped, id)
		}
	}
	for id := range s.down {
		if !down[id] {
			flipped = append(flipped, id)
		}
	}
	if len(flipped) == 0 {
		return
	}
	slices.Sort(flipped)
	for _, id := range flipped {
		if down[id] {
			s.log.Warn("gateway down: no control connection past the grace period; clients order it last", "gateway", id, "grace", s.grace())
		} else {
			s.log.Info("gateway up again", "gateway", id)
		}
	}
	s.down = down
	s.Changed(store.Change{Gateways: flipped})
}

// downCopy is the down set for a new index (recompute goroutine only).
func (s *Server) downCopy() map[string]bool { return maps.Clone(s.down) }

// gatewayIDs is every gateway of the current state.
func (st *mapState) gatewayIDs() []string {
	if st == nil {
		return nil
	}
	gws := st.ix.Snapshot().Gateways
	out := make([]string, len(gws))
	for i, g := range gws {
		out[i] = g.ID
	}
	return out
}
