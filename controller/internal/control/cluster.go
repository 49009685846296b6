package control

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Gateway clusters (controlproto capability 12). The gateways of one
// segment form a cluster; each gateway of capability 12 that said hello
// with a ClusterAddr gets its cluster in its map (clusterFor):
//
//	keys     the CA's gossip keys of the epochs before, at and after now
//	         (ca.ClusterKey); when the epoch turns, every gateway gets its
//	         map again (checkEpoch).
//	members  every gateway of the segment whose cluster address and
//	         certificate key this controller learnt from its last
//	         connection (in memory, like instances). A deleted gateway
//	         leaves every list at once, and its peers expel it from the
//	         cluster. For the grace period after it starts, the controller
//	         sends no cluster (gateways keep the one they have) while the
//	         gateways reconnect: a list of the first to reconnect would
//	         make them expel the others.
//
// Revocation notices: when a device leaves the map of a gateway of
// capability 12 in a cluster of more than one, the controller signs a
// notice for it (ca.SignRevocation) and sends it to that gateway just
// before the map; the gateway gossips it, so a gateway of the cluster that
// lost its control channel cuts the device within a second too.
//
// Health: gateways report how they see the other members
// (Activity.Cluster). A gateway that most of the members reporting on it
// see dead is dead (gatewayStateLocked), at once, whatever its control
// connection seems to be: a gateway killed with kill -9 leaves its QUIC
// connection open until the idle timeout.

// clusterIdentity is what a gateway's connection told of its cluster.
type clusterIdentity struct {
	addr    netip.AddrPort
	certKey []byte // PKIX DER of its certificate's public key
}

// noteClusterLocked records gateway id's cluster identity from its hello
// and certificate; it reports whether it changed (other gateways' maps
// list it).
func (s *Server) noteClusterLocked(id string, addr netip.AddrPort, cert *x509.Certificate) bool {
	g := s.seen[id]
	if g == nil {
		return false
	}
	var ci clusterIdentity
	if addr.IsValid() && addr.Port() != 0 {
		der, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
		if err == nil {
			ci = clusterIdentity{addr: addr, certKey: der}
		}
	}
	changed := ci.addr != g.cluster.addr || string(ci.certKey) != string(g.cluster.certKey)
	g.cluster = ci
	return changed
}

// refreshGateways queues every connected gateway's map again (they list
// each other, or the keys turned).
func (s *Server) refreshGateways() {
	s.mu.Lock()
	var gws []*agent
	for _, a := range s.agents {
		if a.kind == ca.KindGateway {
			gws = append(gws, a)
		}
	}
	s.mu.Unlock()
	for _, a := range gws {
		s.joinedAgent(a)
	}
}

// checkEpoch refreshes every gateway's map when the gossip key epoch
// turned, and once the grace period after the start passed (clusterReady;
// the recompute goroutine only).
func (s *Server) checkEpoch() {
	if !s.clusterReady.Load() && s.now().Sub(s.started) >= s.grace() {
		s.clusterReady.Store(true)
		s.refreshGateways()
	}
	e := controlproto.Epoch(s.now())
	if e == s.epoch {
		return
	}
	first := s.epoch == 0
	s.epoch = e
	if !first {
		s.log.Info("gateway cluster key epoch turned; sending gateways their new keys", "epoch", e)
		s.refreshGateways()
	}
}

// clusterFor is gateway gw's cluster for a map, or nil when it joins
// none: too old, no cluster address, or no CA key to derive keys from.
func (s *Server) clusterFor(st *mapState, a *agent, gw store.Gateway) *controlproto.GatewayCluster {
	if a.caps < controlproto.MinClusterCapability || s.cfg.CA == nil || !s.clusterReady.Load() {
		return nil
	}
	e := controlproto.Epoch(s.now())
	c := &controlproto.GatewayCluster{Name: gw.Segment}
	for _, ep := range []uint64{e - 1, e, e + 1} {
		k, err := s.cfg.CA.ClusterKey(gw.Segment, ep)
		if err != nil {
			s.log.Error("derive gateway cluster key", "err", err)
			return nil
		}
		c.Keys = append(c.Keys, controlproto.ClusterKey{Epoch: ep, Key: k})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	self := false
	for _, g := range st.ix.Snapshot().Gateways {
		if g.Segment != gw.Segment {
			continue
		}
		seen := s.seen[g.ID]
		if seen == nil || !seen.cluster.addr.IsValid() {
			continue
		}
		self = self || g.ID == gw.ID
		c.Members = append(c.Members, controlproto.ClusterMember{GatewayID: g.ID, Addr: seen.cluster.addr,
			CertKey: seen.cluster.certKey})
	}
	if !self {
		return nil
	}
	slices.SortFunc(c.Members, func(x, y controlproto.ClusterMember) int { return strings.Compare(x.GatewayID, y.GatewayID) })
	return c
}

// revocations signs a notice for each peer of prev that next no longer
// has, for a gateway in a cluster of more than one; made holds the
// notices of this recompute by device, so every gateway of a cluster
// gossips the same one (and each member acts on it once).
func (s *Server) revocations(log *slog.Logger, prev, next *controlproto.GatewayMap, made map[string]*controlproto.Revocation) []*controlproto.Revocation {
	if prev == nil || next.Cluster == nil || len(next.Cluster.Members) < 2 {
		return nil
	}
	keep := make(map[string]bool, len(next.Peers))
	for _, p := range next.Peers {
		keep[p.DeviceID] = true
	}
	var out []*controlproto.Revocation
	for _, p := range prev.Peers {
		if keep[p.DeviceID] {
			continue
		}
		r := made[p.DeviceID]
		if r == nil {
			var id [12]byte
			rand.Read(id[:])
			var err error
			r, err = s.cfg.CA.SignRevocation(controlproto.RevocationNotice{ID: hex.EncodeToString(id[:]),
				DeviceID: p.DeviceID, PublicKey: p.PublicKey, Reason: "access ended", IssuedAt: s.now()})
			if err != nil {
				log.Error("sign revocation notice", "device", p.DeviceID, "err", err)
				continue
			}
			made[p.DeviceID] = r
		}
		out = append(out, r)
	}
	return out
}

// queueNotices queues revocation notices for a's writer, which sends them
// before the map they came with.
func (a *agent) queueNotices(rs []*controlproto.Revocation) {
	if len(rs) == 0 {
		return
	}
	a.mu.Lock()
	a.notices = append(a.notices, rs...)
	// A gateway that does not read its stream must not grow this
	// without bound: notices matter for seconds, maps are the truth.
	if len(a.notices) > maxQueuedNotices {
		a.notices = slices.Clone(a.notices[len(a.notices)-maxQueuedNotices:])
	}
	a.mu.Unlock()
	a.poke()
}

// maxQueuedNotices bounds the notices waiting for one gateway.
const maxQueuedNotices = 10000

// writeNotices writes the queued notices (the writer goroutine only).
func writeNotices(a *agent, w io.Writer) error {
	a.mu.Lock()
	rs := a.notices
	a.notices = nil
	a.mu.Unlock()
	for _, r := range rs {
		buf, err := controlproto.EncodeFrame(&controlproto.Frame{Type: controlproto.TypeRevocation, Revocation: r})
		if err != nil {
			return err
		}
		a.wmu.Lock()
		_, err = w.Write(buf)
		a.wmu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// noteClusterView records how gateway reporter sees its cluster's other
// members (its Activity.Cluster), while it is connected.
func (s *Server) noteClusterView(a *agent, states []controlproto.ClusterMemberState) {
	view := make(map[string]string, len(states))
	for _, m := range states {
		if len(view) >= 1000 {
			break
		}
		view[m.GatewayID] = m.State
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.agents[a.id] != a {
		return
	}
	s.views[a.id] = view
}

// peersSeeDeadLocked reports whether most of the connected gateways that
// report on gateway id see it dead.
func (s *Server) peersSeeDeadLocked(id string) bool {
	reporting, dead := 0, 0
	for from, view := range s.views {
		st, ok := view[id]
		if !ok || from == id {
			continue
		}
		reporting++
		if st == controlproto.MemberDead {
			dead++
		}
	}
	return dead > 0 && dead*2 > reporting
}
