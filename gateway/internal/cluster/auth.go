package cluster

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/hashicorp/memberlist"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// authSet is the cluster as the controller listed it; immutable, swapped
// whole on each Update.
type authSet struct {
	name    string
	keys    []controlproto.ClusterKey
	members map[string]member // by gateway ID
	addrs   map[netip.AddrPort]bool
	ips     map[netip.Addr]bool
}

type member struct {
	addr netip.AddrPort
	key  *ecdsa.PublicKey
}

// gossipKeyLen is the gossip key size: AES-256-GCM.
const gossipKeyLen = 32

func newAuthSet(v *controlproto.GatewayCluster) (*authSet, error) {
	if v.Name == "" {
		return nil, errors.New("cluster: the map's cluster has no name")
	}
	if len(v.Keys) == 0 {
		return nil, errors.New("cluster: the map's cluster has no gossip keys")
	}
	for _, k := range v.Keys {
		if len(k.Key) != gossipKeyLen {
			return nil, fmt.Errorf("cluster: gossip key of epoch %d is %d bytes, want %d", k.Epoch, len(k.Key), gossipKeyLen)
		}
	}
	a := &authSet{name: v.Name, keys: v.Keys, members: map[string]member{},
		addrs: map[netip.AddrPort]bool{}, ips: map[netip.Addr]bool{}}
	for _, m := range v.Members {
		if m.GatewayID == "" || !m.Addr.IsValid() {
			return nil, fmt.Errorf("cluster: member %q has no ID or address", m.GatewayID)
		}
		key, err := parseCertKey(m.CertKey)
		if err != nil {
			return nil, fmt.Errorf("cluster: member %s: %w", m.GatewayID, err)
		}
		addr := netip.AddrPortFrom(m.Addr.Addr().Unmap(), m.Addr.Port())
		a.members[m.GatewayID] = member{addr: addr, key: key}
		a.addrs[addr] = true
		a.ips[addr.Addr()] = true
	}
	return a, nil
}

// Metadata: epoch (8 bytes, big endian) then the ASN.1 ECDSA signature
// over metaDigest. Memberlist caps metadata at 512 bytes; this is at most
// 80.
const metaDomain = "cordon cluster member v1\x00"

func metaDigest(cluster, name string, addr netip.AddrPort, epoch uint64) [32]byte {
	h := sha256.New()
	h.Write([]byte(metaDomain))
	h.Write([]byte(cluster))
	h.Write([]byte{0})
	h.Write([]byte(name))
	h.Write([]byte{0})
	ip := addr.Addr().As16()
	h.Write(ip[:])
	var b [10]byte
	binary.BigEndian.PutUint16(b[:2], addr.Port())
	binary.BigEndian.PutUint64(b[2:], epoch)
	h.Write(b[:])
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// signMetaLocked signs this node's metadata for the clock's epoch.
func (c *Cluster) signMetaLocked() error {
	epoch := controlproto.Epoch(c.cfg.Now())
	d := metaDigest(c.name, c.cfg.Name, c.addr, epoch)
	sig, err := ecdsa.SignASN1(rand.Reader, c.cfg.Key, d[:])
	if err != nil {
		return fmt.Errorf("cluster: sign metadata: %w", err)
	}
	meta := make([]byte, 8, 8+len(sig))
	binary.BigEndian.PutUint64(meta, epoch)
	meta = append(meta, sig...)
	c.meta.Store(&meta)
	c.epoch = epoch
	return nil
}

// Errors a refused node gets in memberlist's log.
var (
	errNotListed = errors.New("not a gateway the controller lists for this cluster")
	errBadMeta   = errors.New("metadata not signed by the listed gateway's certificate key for this address and epoch")
)

// check authenticates a node memberlist heard of.
func (c *Cluster) check(n *memberlist.Node) error {
	if n.Name == c.cfg.Name {
		return nil // ourselves
	}
	auth := c.auth.Load()
	m, ok := auth.members[n.Name]
	if !ok {
		return errNotListed
	}
	addr := addrPortOf(n.Addr, n.Port)
	if addr != m.addr {
		return fmt.Errorf("%w (at %s, listed at %s)", errNotListed, addr, m.addr)
	}
	if len(n.Meta) < 8+8 {
		return errBadMeta
	}
	epoch := binary.BigEndian.Uint64(n.Meta[:8])
	if now := controlproto.Epoch(c.cfg.Now()); epoch+1 < now || epoch > now+1 {
		return fmt.Errorf("%w (epoch %d, ours %d)", errBadMeta, epoch, now)
	}
	if c.verified.ok(auth, n.Name, n.Meta) {
		return nil
	}
	d := metaDigest(auth.name, n.Name, addr, epoch)
	if !ecdsa.VerifyASN1(m.key, d[:], n.Meta[8:]) {
		return errBadMeta
	}
	c.verified.add(auth, n.Name, n.Meta)
	return nil
}

// authDelegate refuses alive messages and push/pull merges naming nodes
// that fail check.
type authDelegate Cluster

func (d *authDelegate) NotifyAlive(n *memberlist.Node) error {
	c := (*Cluster)(d)
	if err := c.check(n); err != nil {
		c.refused(n, err)
		return err
	}
	return nil
}

// NotifyMerge refuses a push/pull whole when any live node in it fails
// check: the other side is not (only) our cluster.
func (d *authDelegate) NotifyMerge(peers []*memberlist.Node) error {
	c := (*Cluster)(d)
	for _, n := range peers {
		if n.State != memberlist.StateAlive && n.State != memberlist.StateSuspect {
			continue
		}
		if err := c.check(n); err != nil {
			c.refused(n, err)
			return fmt.Errorf("refused member %s: %w", n.Name, err)
		}
	}
	return nil
}

func (c *Cluster) refused(n *memberlist.Node, err error) {
	c.refusals.Add(1)
	c.log.Debug("cluster member refused", "node", n.Name, "addr", addrPortOf(n.Addr, n.Port), "err", err)
}

// verifyCache remembers metadata that verified, per authSet (a new list
// from the controller starts it afresh), so the alive messages of a
// steady cluster cost no signature check each.
type verifyCache struct {
	mu    sync.Mutex
	auth  *authSet
	metas map[string]string // node name → metadata that verified
}

func (v *verifyCache) ok(auth *authSet, name string, meta []byte) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.auth == auth && v.metas[name] == string(meta)
}

func (v *verifyCache) add(auth *authSet, name string, meta []byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.auth != auth {
		v.auth, v.metas = auth, map[string]string{}
	}
	v.metas[name] = string(meta)
}
