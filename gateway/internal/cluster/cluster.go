// Package cluster joins a gateway to the memberlist cluster of the other
// gateways serving its segment (github.com/hashicorp/memberlist), and
// carries over it what must not wait for the controller: which gateways
// are alive, revocation notices the controller signed, and per-device
// activity for the session idle limit.
//
// Everything a member trusts comes from the controller, in the gateway's
// map (controlproto.GatewayCluster):
//
//	gossip keys   one per 24-hour epoch, derived by the controller; the
//	              map carries the previous, current and next epoch's keys.
//	              A member encrypts with its current epoch's key (by its
//	              own clock) and decrypts with all three, so members whose
//	              clocks straddle a boundary still understand each other.
//	members       each enrolled gateway of the cluster with the address it
//	              gossips on and its certificate's public key.
//
// Membership is authenticated three ways, each enough to refuse a node
// with the gossip key but no enrollment:
//
//	transport     packets from an address that is no listed member's are
//	              dropped before memberlist sees them, nothing is sent to
//	              one, and streams only come from listed members' IPs
//	              (filter.go);
//	metadata      each node's memberlist metadata is its signature, with
//	              its certificate key, over (cluster, name, address,
//	              epoch); an alive message or a push/pull whose node is not
//	              listed, or whose signature does not verify against the
//	              listed key, is refused (auth.go);
//	payloads      activity gossip is signed by its sender; revocation
//	              notices by the controller (gossip.go).
//
// A gateway the controller stops listing (revoked, deleted, moved) is
// expelled: the others drop its packets, so it stops answering their
// probes, is suspected, cannot refute, and is declared dead.
//
// Lifetimes: New binds the sockets (the gateway tells the controller the
// address in its hello); memberlist starts with the first Update that
// lists this gateway. One goroutine, owned by the Cluster and stopped by
// Close, rotates the primary key at epoch boundaries and joins listed
// members that are not in the cluster. Close leaves nothing running.
package cluster

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Timing is how fast the cluster probes its members. The zero value is
// LAN: a member that dies is declared dead in well under a second (see
// docs/benchmarks.md); the probe traffic is a few small UDP packets per
// member per interval.
type Timing struct {
	ProbeInterval  time.Duration // 150 ms
	ProbeTimeout   time.Duration // 100 ms
	SuspicionMult  int           // 3: suspicion lasts 3 probe intervals (scaled up by log10 of the size)
	GossipInterval time.Duration // 50 ms
}

func (t Timing) withDefaults() Timing {
	if t.ProbeInterval <= 0 {
		t.ProbeInterval = 150 * time.Millisecond
	}
	if t.ProbeTimeout <= 0 {
		t.ProbeTimeout = 100 * time.Millisecond
	}
	if t.SuspicionMult <= 0 {
		t.SuspicionMult = 3
	}
	if t.GossipInterval <= 0 {
		t.GossipInterval = 50 * time.Millisecond
	}
	return t
}

// Config configures a Cluster.
type Config struct {
	// Name is this gateway's ID, its node name.
	Name string
	// Listen is where to gossip (UDP and TCP); port 0 picks one (tests).
	Listen netip.AddrPort
	// Key is the gateway's certificate key: it signs this node's metadata
	// and activity. It never leaves the gateway.
	Key *ecdsa.PrivateKey
	// Controller is the controller's CA key, pinned at enrollment: it
	// verifies revocation notices.
	Controller *ecdsa.PublicKey
	// Now is the clock of epochs and notice ages; nil: time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	Timing Timing
	// OnNotice is called once for each valid revocation notice, from the
	// controller or gossip. OnActivity gets each member's verified
	// activity report. OnChange is called when a member's state changed.
	// They must not block.
	OnNotice   func(controlproto.RevocationNotice)
	OnActivity func(from string, devices []controlproto.DeviceActivity)
	OnChange   func()
}

// Cluster is this gateway's membership of its cluster.
type Cluster struct {
	cfg    Config
	log    *slog.Logger
	timing Timing
	tr     *filterTransport
	addr   netip.AddrPort // bound

	auth atomic.Pointer[authSet] // the members the controller listed
	// seen dedups notices (gossip.go); activity seq per sender.
	notices  noticeLog
	activity activitySeq
	queue    *memberlist.TransmitLimitedQueue
	verified verifyCache

	// ml is nil until the first Update listing us; meta is this node's
	// signed metadata. Atomics: memberlist calls back into the delegates
	// from inside Create and UpdateNode, while mu is held.
	ml   atomic.Pointer[memberlist.Memberlist]
	meta atomic.Pointer[[]byte]

	// mu serialises Update, refresh and Close.
	mu      sync.Mutex
	keyring *memberlist.Keyring
	name    string // the cluster's name, fixed once started
	epoch   uint64 // of the meta last signed
	closed  bool

	refusals, badNotices, badActivity, goodNotices atomic.Uint64

	wake chan struct{}
	done chan struct{}
	wg   sync.WaitGroup
}

// New binds the gossip sockets at cfg.Listen and starts the Cluster's
// goroutine; the cluster forms on the first Update.
func New(cfg Config) (*Cluster, error) {
	if cfg.Name == "" || cfg.Key == nil || cfg.Controller == nil {
		return nil, errors.New("cluster: a name, the gateway's certificate key and the controller's key are required")
	}
	if !cfg.Listen.IsValid() || cfg.Listen.Addr().IsUnspecified() {
		return nil, fmt.Errorf("--cluster-listen %s: give the address this gateway's cluster peers reach it at (IP:PORT, not 0.0.0.0)", cfg.Listen)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	inner, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{cfg.Listen.Addr().String()},
		BindPort:  int(cfg.Listen.Port()),
		Logger:    slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	})
	if err != nil {
		return nil, fmt.Errorf("--cluster-listen %s: %w", cfg.Listen, err)
	}
	c := &Cluster{cfg: cfg, log: cfg.Logger, timing: cfg.Timing.withDefaults(),
		addr: netip.AddrPortFrom(cfg.Listen.Addr().Unmap(), uint16(inner.GetAutoBindPort())),
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	c.auth.Store(&authSet{})
	c.tr = newFilterTransport(inner, &c.auth)
	c.queue = &memberlist.TransmitLimitedQueue{NumNodes: c.numNodes, RetransmitMult: 3}
	c.wg.Go(c.run)
	return c, nil
}

// Addr is where the cluster listens (the port resolved).
func (c *Cluster) Addr() netip.AddrPort { return c.addr }

// Update takes the cluster the controller sent: its keys, members and
// their keys. The first one that lists this gateway starts memberlist.
// A nil or invalid view changes nothing (and errs).
func (c *Cluster) Update(v *controlproto.GatewayCluster) error {
	if v == nil {
		return errors.New("cluster: no cluster in the map")
	}
	auth, err := newAuthSet(v)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("cluster: closed")
	}
	if c.ml.Load() != nil && v.Name != c.name {
		return fmt.Errorf("cluster: the map moves this gateway from cluster %q to %q: restart the gateway", c.name, v.Name)
	}
	if self, ok := auth.members[c.cfg.Name]; !ok || self.addr != c.addr {
		c.auth.Store(auth)
		return fmt.Errorf("cluster: the controller does not list this gateway at %s (listed: %v); it joins no cluster until it does", c.addr, ok)
	}
	c.auth.Store(auth)
	if c.ml.Load() == nil {
		if err := c.startLocked(v); err != nil {
			return err
		}
	} else if err := c.rekeyLocked(v.Keys); err != nil {
		return err
	}
	c.poke()
	return nil
}

// startLocked creates the memberlist with v's keys.
func (c *Cluster) startLocked(v *controlproto.GatewayCluster) error {
	keys := make([][]byte, len(v.Keys))
	for i, k := range v.Keys {
		keys[i] = k.Key
	}
	primary := primaryKey(v.Keys, controlproto.Epoch(c.cfg.Now()))
	kr, err := memberlist.NewKeyring(keys, primary)
	if err != nil {
		return fmt.Errorf("cluster: gossip keys: %w", err)
	}
	c.name, c.keyring = v.Name, kr
	if err := c.signMetaLocked(); err != nil {
		return err
	}
	conf := memberlist.DefaultLANConfig()
	conf.Name = c.cfg.Name
	conf.Transport = c.tr
	conf.AdvertiseAddr = c.addr.Addr().String()
	conf.AdvertisePort = int(c.addr.Port())
	conf.Keyring = kr
	conf.GossipVerifyIncoming, conf.GossipVerifyOutgoing = true, true
	conf.Label = "cordon:" + v.Name
	conf.Delegate = (*delegate)(c)
	conf.Events = (*events)(c)
	conf.Alive = (*authDelegate)(c)
	conf.Merge = (*authDelegate)(c)
	conf.Logger = slog.NewLogLogger(c.log.Handler(), slog.LevelDebug)
	t := c.timing
	conf.ProbeInterval, conf.ProbeTimeout, conf.SuspicionMult = t.ProbeInterval, t.ProbeTimeout, t.SuspicionMult
	conf.GossipInterval = t.GossipInterval
	conf.TCPTimeout = time.Second
	conf.PushPullInterval = 15 * time.Second
	conf.DeadNodeReclaimTime = time.Second // a restarted gateway rejoins under its name at once
	conf.AwarenessMaxMultiplier = 2        // a loaded host slows its own probes at most twice
	ml, err := memberlist.Create(conf)
	if err != nil {
		return fmt.Errorf("cluster: start memberlist on %s: %w", c.addr, err)
	}
	c.ml.Store(ml)
	c.log.Info("gateway cluster started", "cluster", v.Name, "addr", c.addr, "members_listed", len(v.Members))
	return nil
}

// rekeyLocked installs keys and drops the ones no longer listed.
func (c *Cluster) rekeyLocked(keys []controlproto.ClusterKey) error {
	want := make([][]byte, len(keys))
	for i, k := range keys {
		want[i] = k.Key
		if err := c.keyring.AddKey(k.Key); err != nil {
			return fmt.Errorf("cluster: gossip key of epoch %d: %w", k.Epoch, err)
		}
	}
	if err := c.keyring.UseKey(primaryKey(keys, controlproto.Epoch(c.cfg.Now()))); err != nil {
		return fmt.Errorf("cluster: primary gossip key: %w", err)
	}
	for _, k := range c.keyring.GetKeys() {
		if !slices.ContainsFunc(want, func(w []byte) bool { return string(w) == string(k) }) {
			if err := c.keyring.RemoveKey(k); err != nil {
				return fmt.Errorf("cluster: drop an old gossip key: %w", err)
			}
		}
	}
	return nil
}

// primaryKey is the key of epoch now, or the newest before it, or the
// oldest listed (keys is oldest first and not empty).
func primaryKey(keys []controlproto.ClusterKey, now uint64) []byte {
	best := keys[0]
	for _, k := range keys {
		if k.Epoch <= now && k.Epoch >= best.Epoch {
			best = k
		}
	}
	return best.Key
}

// refresh moves the primary key and the metadata's epoch to the clock's
// epoch; the owner goroutine calls it, and tests after moving the clock.
func (c *Cluster) refresh() {
	c.mu.Lock()
	ml := c.ml.Load()
	if ml == nil || c.closed {
		c.mu.Unlock()
		return
	}
	now := controlproto.Epoch(c.cfg.Now())
	if now == c.epoch {
		c.mu.Unlock()
		return
	}
	if err := c.keyring.UseKey(primaryKey(c.auth.Load().keys, now)); err != nil {
		c.log.Error("rotate the cluster's gossip key", "err", err)
	}
	err := c.signMetaLocked()
	c.mu.Unlock()
	if err != nil {
		c.log.Error("sign cluster metadata for the new epoch", "err", err)
		return
	}
	// UpdateNode asks the delegate for the metadata: not under c.mu.
	if err := ml.UpdateNode(time.Second); err != nil {
		c.log.Debug("announce new cluster metadata", "err", err)
	}
	c.log.Info("cluster gossip key rotated", "epoch", now)
}

func (c *Cluster) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// joinEvery is how often listed members outside the cluster are joined,
// at most joinAtOnce of them a time (one that answers brings the whole
// membership; each unreachable one costs a 1 s dial, which Close waits
// for).
const (
	joinEvery  = 2 * time.Second
	joinAtOnce = 3
)

// run is the owner goroutine: epoch rotation and joins, until Close.
func (c *Cluster) run() {
	t := time.NewTicker(joinEvery)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-c.wake:
		case <-t.C:
		}
		c.refresh()
		c.joinMissing()
	}
}

// joinMissing joins the listed members memberlist does not see alive.
func (c *Cluster) joinMissing() {
	ml := c.ml.Load()
	if ml == nil {
		return
	}
	alive := map[string]bool{}
	for _, n := range ml.Members() {
		alive[n.Name] = n.State == memberlist.StateAlive
	}
	var addrs []string
	for name, m := range c.auth.Load().members {
		if name != c.cfg.Name && !alive[name] {
			addrs = append(addrs, m.addr.String())
		}
	}
	if len(addrs) == 0 {
		return
	}
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	addrs = addrs[:min(len(addrs), joinAtOnce)]
	if n, err := ml.Join(addrs); err != nil && n == 0 {
		c.log.Debug("join cluster members", "addrs", addrs, "err", err)
	}
}

// Members returns every listed member but this gateway with its state as
// this gateway sees it, by ID: alive, suspect or dead (never heard of
// counts as dead).
func (c *Cluster) Members() []controlproto.ClusterMemberState {
	auth := c.auth.Load()
	seen := map[string]string{}
	if ml := c.ml.Load(); ml != nil {
		for _, n := range ml.Members() {
			switch n.State {
			case memberlist.StateAlive:
				seen[n.Name] = controlproto.MemberAlive
			case memberlist.StateSuspect:
				seen[n.Name] = controlproto.MemberSuspect
			}
		}
	}
	var out []controlproto.ClusterMemberState
	for name := range auth.members {
		if name == c.cfg.Name {
			continue
		}
		out = append(out, controlproto.ClusterMemberState{GatewayID: name, State: cmp.Or(seen[name], controlproto.MemberDead)})
	}
	slices.SortFunc(out, func(a, b controlproto.ClusterMemberState) int { return strings.Compare(a.GatewayID, b.GatewayID) })
	return out
}

// numNodes sizes retransmits.
func (c *Cluster) numNodes() int {
	ml := c.ml.Load()
	if ml == nil {
		return 1
	}
	return ml.NumMembers()
}

// Close leaves nothing running: the goroutine, memberlist and its
// sockets. It does not announce a leave: to its peers a stopped gateway
// is a dead one (the same failover). Further calls do nothing.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	ml := c.ml.Load()
	c.mu.Unlock()
	close(c.done)
	c.wg.Wait()
	if ml != nil {
		return ml.Shutdown() // shuts the transport down too
	}
	return c.tr.Shutdown()
}

// parseCertKey parses a member's PKIX public key; only ECDSA keys (what
// the controller's CA certifies for agents) are accepted.
func parseCertKey(der []byte) (*ecdsa.PublicKey, error) {
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("certificate key is %T, not ECDSA", k)
	}
	return ek, nil
}

// addrPortOf converts memberlist's address form.
func addrPortOf(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}

// parseAddr parses memberlist's "host:port" strings.
func parseAddr(s string) (netip.AddrPort, bool) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, false
	}
	a, err := netip.ParseAddr(host)
	p, perr := strconv.ParseUint(port, 10, 16)
	if err != nil || perr != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), true
}
