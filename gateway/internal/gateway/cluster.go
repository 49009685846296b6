package gateway

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/cordonhq/cordon/gateway/internal/cluster"
	"github.com/cordonhq/cordon/pkg/agentstate"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// The gateway's side of its cluster (package cluster), when
// --cluster-listen is set:
//
//	map          each map's Cluster (keys, members) goes to the cluster;
//	revocation   a notice from the controller is verified, acted on and
//	             gossiped; one gossiped by a peer is acted on the same way
//	             (revoke): the device leaves the map this gateway serves
//	             (and saves) until the controller's next map says
//	             otherwise;
//	activity     each activity report also goes to the cluster, and what
//	             the peers saw is reported to the controller with this
//	             gateway's own (remoteActivity), so a device busy on a
//	             gateway cut off from the controller keeps its session;
//	health       the members seen suspect or dead ride on the activity
//	             report when they changed (Activity.Cluster).

// startCluster binds the cluster's sockets; the cluster forms on the
// first map that lists this gateway.
func startCluster(listen netip.AddrPort, st *agentstate.State, g *gw, log *slog.Logger) (*cluster.Cluster, error) {
	ca, err := caKey(st.CAPEM)
	if err != nil {
		return nil, err
	}
	return cluster.New(cluster.Config{Name: st.Enrollment.ID, Listen: listen, Key: st.TLSKey, Controller: ca,
		Now: g.now, Logger: log, OnNotice: g.revoke, OnActivity: g.remote.add, OnChange: g.clusterChanged})
}

// caKey is the controller CA's public key, pinned at enrollment: it signs
// revocation notices.
func caKey(caPEM []byte) (*ecdsa.PublicKey, error) {
	blk, _ := pem.Decode(caPEM)
	if blk == nil {
		return nil, errors.New("controller CA certificate in the state directory is not PEM: enroll again")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("controller CA certificate: %w", err)
	}
	k, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("controller CA key is %T, not ECDSA: revocation notices cannot be verified", cert.PublicKey)
	}
	return k, nil
}

// revoke takes a verified revocation notice: the device leaves the map
// this gateway serves, at once (its flows are cut, new ones refused, as
// for a map from the controller without it), and the saved map too. The
// controller's next map replaces this one whole.
func (g *gw) revoke(n controlproto.RevocationNotice) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cur == nil {
		return
	}
	i := slices.IndexFunc(g.cur.Peers, func(p controlproto.GatewayPeer) bool {
		return p.DeviceID == n.DeviceID && (n.PublicKey.IsZero() || p.PublicKey == n.PublicKey)
	})
	if i < 0 {
		return // not served here (or gone already)
	}
	m := *g.cur
	m.Peers = slices.Delete(slices.Clone(m.Peers), i, i+1)
	prev := g.cur
	g.cur = &m
	now := g.now()
	if err := g.applyLocked(now); err != nil {
		g.cur = prev
		g.log.Error("apply a revocation notice", "device", n.DeviceID, "err", err)
		return
	}
	g.saveLocked(now)
	g.log.Warn("device cut by a revocation notice from the controller (via the cluster)", "device", n.DeviceID, "reason", n.Reason, "notice", n.ID)
}

// clusterChanged wakes the activity reporter to tell the controller.
func (g *gw) clusterChanged() {
	select {
	case g.clusterNews <- struct{}{}:
	default:
	}
}

// remoteActivity is what the cluster's other members saw, newest per
// device, until the next report takes it.
type remoteActivity struct {
	now func() time.Time
	mu  sync.Mutex
	at  map[string]time.Time // device → last activity, by this gateway's clock
}

// maxRemoteDevices bounds what is kept between two reports.
const maxRemoteDevices = 200000

func (r *remoteActivity) add(_ string, devs []controlproto.DeviceActivity) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.at == nil {
		r.at = map[string]time.Time{}
	}
	for _, d := range devs {
		at := now.Add(-min(max(d.Idle, 0), 24*time.Hour))
		if old, ok := r.at[d.DeviceID]; ok && !at.After(old) {
			continue
		} else if !ok && len(r.at) >= maxRemoteDevices {
			continue
		}
		r.at[d.DeviceID] = at
	}
}

// merge adds the peers' activity to this gateway's own report (the newer
// of the two per device) and forgets it.
func (r *remoteActivity) merge(own map[string]time.Duration) {
	now := r.now()
	r.mu.Lock()
	at := r.at
	r.at = nil
	r.mu.Unlock()
	for id, t := range at {
		idle := max(now.Sub(t), 0)
		if cur, ok := own[id]; !ok || idle < cur {
			own[id] = idle
		}
	}
}
