// Package hostfw is the tun-mode gateway's host firewall: one nftables
// table of its own ("inet cordon", installed through netlink, never mixed
// with the host's rules) that makes the gateway host part of the boundary.
//
//	prerouting  (filter, -150): packets from the WireGuard interface pass;
//	            an overlay source from anywhere else is spoofed (dropped,
//	            counted); a packet for another host that is not the reply
//	            of a tunnel flow, or whose source fails the reverse-path
//	            check, is dropped (counted) before routing can answer it
//	            with an ICMP error or a TTL-exceeded.
//	input       (policy drop): loopback, replies to the host's own
//	            connections, the WireGuard interface, the WireGuard UDP
//	            port, IPv6 neighbour discovery, the management sources and,
//	            with a cluster port, the cluster's peers on that port
//	            (chain cluster_peers, refilled from each map:
//	            SetClusterPeers); everything else dropped (counted)
//	            without an answer.
//	forward     (policy drop): only from the WireGuard interface (what the
//	            flow authorizer passed) toward the served segments, and the
//	            replies of those flows back into it; all else dropped
//	            (counted). First, TCP SYNs into and out of the WireGuard
//	            interface have their MSS clamped to the route's MTU
//	            ('tcp option maxseg size set rt mtu'), so TCP between a
//	            client and an app fits both the tunnel and the app-side
//	            path without relying on ICMP reaching the sender.
//	output      (policy accept): no ICMP port-unreachable leaves except
//	            into the tunnel, so a closed UDP port stays silent too.
//	            ICMP fragmentation-needed and ICMPv6 packet-too-big the
//	            host sends (a forwarded packet did not fit the next hop)
//	            are counted.
//	postrouting (nat, srcnat): tunnel flows leaving toward the apps are
//	            masqueraded, so apps need no route back to the overlay.
//
// The table is never removed by a stop or a crash: a stopped or killed
// gateway leaves the host closed (its interface is gone, so nothing
// matches the accept rules; the drop policies stay). [Uninstall] removes
// it, for 'cordon-gateway uninstall'.
package hostfw

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the nftables table Cordon owns (family inet).
const TableName = "cordon"

// Counter names (nftables named counters in the table: 'nft list counters
// table inet cordon').
const (
	CounterForwardDropped = "forward_dropped" // forwarded packets that did not pass the authorizer
	CounterInputDropped   = "input_dropped"   // packets for the host itself from outside the allowed sources
	CounterSpoofed        = "spoofed"         // overlay or reverse-path-failing sources outside the tunnel
	// CounterPacketTooBigSent counts the ICMP fragmentation-needed and
	// ICMPv6 packet-too-big messages the host sent: packets it could not
	// forward because a next hop's MTU was smaller (path MTU discovery at
	// work; a steady rise means a narrow path the MSS clamp does not cover,
	// such as UDP or a client's own MTU).
	CounterPacketTooBigSent = "packet_too_big_sent"
)

var counters = []string{CounterForwardDropped, CounterInputDropped, CounterSpoofed, CounterPacketTooBigSent}

// Config is what the rules need.
type Config struct {
	// Interface is the WireGuard (tun) interface: the only way in to the
	// app subnet.
	Interface string
	// Overlay is the client address pool; only Interface may carry it.
	Overlay netip.Prefix
	// ListenPort is the WireGuard UDP port, open to everyone.
	ListenPort uint16
	// TCPPort is the TCP port carrying WireGuard over TLS (--tcp-listen),
	// open to everyone like ListenPort; 0: none.
	TCPPort uint16
	// Management are the sources allowed to reach the host's own services
	// (SSH, monitoring), every port and protocol.
	Management []netip.Prefix
	// Segments are the prefixes the tunnel may reach; SetSegments updates
	// them from each map. Empty: nothing is forwarded.
	Segments []netip.Prefix
	// ClusterPort is the port the gateway gossips with its cluster on
	// (UDP and TCP; 0: no cluster). Only the peers SetClusterPeers names
	// reach it.
	ClusterPort uint16
}

func (c Config) validate() error {
	if c.Interface == "" || len(c.Interface) > unix.IFNAMSIZ-1 {
		return fmt.Errorf("hostfw: interface name %q must be 1 to 15 bytes", c.Interface)
	}
	if !c.Overlay.IsValid() || !c.Overlay.Addr().Is4() {
		return fmt.Errorf("hostfw: overlay prefix %s is not IPv4", c.Overlay)
	}
	if c.ListenPort == 0 {
		return errors.New("hostfw: no WireGuard listen port")
	}
	for _, p := range append(slices.Clone(c.Management), c.Segments...) {
		if !p.IsValid() {
			return fmt.Errorf("hostfw: invalid prefix %v", p)
		}
	}
	return nil
}

// Firewall is the installed table.
type Firewall struct {
	mu    sync.Mutex
	conn  *nftables.Conn
	table *nftables.Table
	cfg   Config
	fwd   *nftables.Chain
	peers *nftables.Chain // cluster_peers; nil without a cluster port
}

// Option configures how Install talks to the kernel.
type Option = nftables.ConnOption

// WithNetNS runs against the network namespace open as fd (tests).
func WithNetNS(fd int) Option { return nftables.WithNetNSFd(fd) }

func table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
}

// Install replaces the cordon table whole, in one netlink transaction: the
// host is never open between an old table and the new one.
func Install(cfg Config, opts ...Option) (*Firewall, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	f := &Firewall{conn: c, table: table(), cfg: cfg}
	t := f.table
	c.AddTable(t) // no-op if a crashed or stopped run left it
	c.DelTable(t)
	c.AddTable(t)
	for _, n := range counters {
		c.AddObj(&nftables.CounterObj{Table: t, Name: n})
	}
	f.addPrerouting()
	f.addInput()
	f.fwd = c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: ptr(nftables.ChainPolicyDrop)})
	f.addForwardRules(cfg.Segments)
	f.addOutput()
	f.addPostrouting()
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("install the gateway's nftables table %q (tun mode needs CAP_NET_ADMIN and nf_tables): %w", TableName, err)
	}
	return f, nil
}

// SetSegments replaces the prefixes the tunnel may reach, atomically.
func (f *Firewall) SetSegments(segs []netip.Prefix) error {
	for _, p := range segs {
		if !p.IsValid() {
			return fmt.Errorf("hostfw: invalid segment prefix %v", p)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conn.FlushChain(f.fwd)
	f.addForwardRules(segs)
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("update forwarded segments: %w", err)
	}
	f.cfg.Segments = slices.Clone(segs)
	return nil
}

// Close is the clean stop: nothing is forwarded any more, and the table
// stays with its drop policies (see the package doc). Further calls are
// no-ops.
func (f *Firewall) Close() error {
	return f.SetSegments(nil)
}

// Counts reads the drop counters (packets) by name.
func (f *Firewall) Counts() (map[string]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return readCounts(f.conn, f.table)
}

// Counts reads the drop counters of an installed table (for a status
// command that did not install it).
func Counts(opts ...Option) (map[string]uint64, error) {
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables: %w", err)
	}
	return readCounts(c, table())
}

func readCounts(c *nftables.Conn, t *nftables.Table) (map[string]uint64, error) {
	objs, err := c.GetObjects(t)
	if err != nil {
		return nil, fmt.Errorf("read nftables counters: %w", err)
	}
	out := map[string]uint64{}
	for _, o := range objs {
		if co, ok := o.(*nftables.CounterObj); ok {
			out[co.Name] = co.Packets
		}
	}
	return out, nil
}

// Installed reports whether the cordon table is present.
func Installed(opts ...Option) (bool, error) {
	c, err := nftables.New(opts...)
	if err != nil {
		return false, fmt.Errorf("open nftables: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("list nftables tables: %w", err)
	}
	return slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == TableName }), nil
}

// Uninstall removes the cordon table (and, from older releases, the IPv4
// one). Removing nothing is not an error.
func Uninstall(opts ...Option) error {
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyIPv4} {
		t := &nftables.Table{Family: fam, Name: TableName}
		c.AddTable(t)
		c.DelTable(t)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("remove nftables table %q: %w", TableName, err)
	}
	return nil
}

func (f *Firewall) addPrerouting() {
	ch := f.conn.AddChain(&nftables.Chain{Name: "prerouting", Table: f.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: ptr(nftables.ChainPolicyAccept)})
	rule := f.ruleIn(ch)
	wg := f.cfg.Interface
	rule(iif(expr.CmpOpEq, wg), accept())
	rule(iif(expr.CmpOpEq, "lo"), accept())
	rule(src(f.cfg.Overlay), count(CounterSpoofed), drop())
	// For the host itself (or broadcast, multicast): the input chain decides.
	for _, rtn := range []uint32{unix.RTN_LOCAL, unix.RTN_BROADCAST, unix.RTN_MULTICAST} {
		rule(daddrType(rtn), accept())
	}
	// To be forwarded: a source that would not be routed back out of the
	// interface it came in on is spoofed.
	rule(noReversePath(), count(CounterSpoofed), drop())
	// Replies of tunnel flows (conntrack knows them); nothing else is.
	rule(ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), accept())
	rule(count(CounterForwardDropped), drop())
}

func (f *Firewall) addInput() {
	if f.cfg.ClusterPort != 0 {
		f.peers = f.conn.AddChain(&nftables.Chain{Name: "cluster_peers", Table: f.table})
	}
	ch := f.conn.AddChain(&nftables.Chain{Name: "input", Table: f.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: ptr(nftables.ChainPolicyDrop)})
	rule := f.ruleIn(ch)
	rule(iif(expr.CmpOpEq, "lo"), accept())
	rule(ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), accept())
	rule(iif(expr.CmpOpEq, f.cfg.Interface), accept())
	rule(l4proto(unix.IPPROTO_UDP), dport(f.cfg.ListenPort), accept())
	if f.cfg.TCPPort != 0 {
		rule(l4proto(unix.IPPROTO_TCP), dport(f.cfg.TCPPort), accept())
	}
	// IPv6 neighbour discovery (router solicitation and advertisement,
	// neighbour solicitation and advertisement, redirect): the link's ARP.
	for _, typ := range []byte{133, 134, 135, 136, 137} {
		rule(l4proto(unix.IPPROTO_ICMPV6), transport(0, []byte{typ}), accept())
	}
	for _, p := range f.cfg.Management {
		rule(src(p), accept())
	}
	if f.peers != nil {
		rule(dport(f.cfg.ClusterPort), cond{&expr.Verdict{Kind: expr.VerdictJump, Chain: f.peers.Name}})
	}
	rule(count(CounterInputDropped), drop())
}

// SetClusterPeers replaces the addresses admitted to the cluster port
// (UDP and TCP), atomically. Without a cluster port it does nothing.
func (f *Firewall) SetClusterPeers(peers []netip.Addr) error {
	for _, a := range peers {
		if !a.IsValid() {
			return fmt.Errorf("hostfw: invalid cluster peer address %v", a)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.peers == nil {
		return nil
	}
	f.conn.FlushChain(f.peers)
	rule := f.ruleIn(f.peers)
	for _, a := range peers {
		a = a.Unmap()
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			rule(src(netip.PrefixFrom(a, a.BitLen())), l4proto(proto), dport(f.cfg.ClusterPort), accept())
		}
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("update the cluster peers admitted to port %d: %w", f.cfg.ClusterPort, err)
	}
	return nil
}

// addForwardRules fills the forward chain (after a flush).
func (f *Firewall) addForwardRules(segs []netip.Prefix) {
	rule := f.ruleIn(f.fwd)
	wg := f.cfg.Interface
	// The clamp only lowers an MSS; the rules carry no verdict.
	rule(iif(expr.CmpOpEq, wg), tcpSYN(), clampMSS())
	rule(oif(expr.CmpOpEq, wg), tcpSYN(), clampMSS())
	for _, p := range segs {
		rule(iif(expr.CmpOpEq, wg), dst(p), accept())
	}
	rule(oif(expr.CmpOpEq, wg), ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), accept())
	rule(count(CounterForwardDropped), drop())
}

func (f *Firewall) addOutput() {
	ch := f.conn.AddChain(&nftables.Chain{Name: "output", Table: f.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: ptr(nftables.ChainPolicyAccept)})
	rule := f.ruleIn(ch)
	// ICMP type 3 code 3 and ICMPv6 type 1 code 4: port unreachable.
	rule(oif(expr.CmpOpNeq, f.cfg.Interface), oif(expr.CmpOpNeq, "lo"), l4proto(unix.IPPROTO_ICMP), transport(0, []byte{3, 3}), drop())
	rule(oif(expr.CmpOpNeq, f.cfg.Interface), oif(expr.CmpOpNeq, "lo"), l4proto(unix.IPPROTO_ICMPV6), transport(0, []byte{1, 4}), drop())
	// Path MTU signals the host sends (counted, then on to the policy).
	rule(l4proto(unix.IPPROTO_ICMP), transport(0, []byte{3, 4}), count(CounterPacketTooBigSent))
	rule(l4proto(unix.IPPROTO_ICMPV6), transport(0, []byte{2}), count(CounterPacketTooBigSent))
}

func (f *Firewall) addPostrouting() {
	ch := f.conn.AddChain(&nftables.Chain{Name: "postrouting", Table: f.table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	wg := f.cfg.Interface
	f.ruleIn(ch)(iif(expr.CmpOpEq, wg), oif(expr.CmpOpNeq, wg), src(f.cfg.Overlay), cond{&expr.Masq{}})
}

// Expression helpers: each condition or verdict is a short list of
// expressions; a rule is their concatenation.

type cond = []expr.Any

func (f *Firewall) ruleIn(ch *nftables.Chain) func(...cond) {
	return func(parts ...cond) {
		f.conn.AddRule(&nftables.Rule{Table: f.table, Chain: ch, Exprs: slices.Concat(parts...)})
	}
}

func ptr[T any](v T) *T { return &v }

func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

func metaCmp(key expr.MetaKey, op expr.CmpOp, data []byte) cond {
	return cond{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: op, Register: 1, Data: data}}
}

func iif(op expr.CmpOp, name string) cond { return metaCmp(expr.MetaKeyIIFNAME, op, ifname(name)) }
func oif(op expr.CmpOp, name string) cond { return metaCmp(expr.MetaKeyOIFNAME, op, ifname(name)) }
func l4proto(p byte) cond                 { return metaCmp(expr.MetaKeyL4PROTO, expr.CmpOpEq, []byte{p}) }

func accept() cond { return cond{&expr.Verdict{Kind: expr.VerdictAccept}} }
func drop() cond   { return cond{&expr.Verdict{Kind: expr.VerdictDrop}} }

func count(name string) cond {
	return cond{&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: name}}
}

// transport matches len(data) bytes of the transport header at offset.
func transport(offset uint32, data []byte) cond {
	return cond{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: offset, Len: uint32(len(data))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data},
	}
}

// tcpSYN matches TCP segments with SYN set and RST clear (a SYN or a
// SYN-ACK: the segments that carry an MSS option).
func tcpSYN() cond {
	return cond{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x02 | 0x04}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
	}
}

// clampMSS lowers the TCP MSS option to what the route's MTU allows: nft's
// 'tcp option maxseg size set rt mtu'. The kernel only ever lowers it.
func clampMSS() cond {
	return cond{
		&expr.Rt{Register: 1, Key: expr.RtTCPMSS},
		&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 2, Size: 2},
		&expr.Exthdr{SourceRegister: 1, Op: expr.ExthdrOpTcpopt, Type: 2, Offset: 2, Len: 2},
	}
}

func dport(port uint16) cond { return transport(2, binaryutil.BigEndian.PutUint16(port)) }

// ctState matches packets whose conntrack state has any of bits.
func ctState(bits uint32) cond {
	return cond{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// daddrType matches the route type of the destination (RTN_LOCAL, ...).
func daddrType(rtn uint32) cond {
	return cond{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(rtn)},
	}
}

// noReversePath matches a source the host would not route back out of the
// interface the packet came in on (strict reverse-path filtering).
func noReversePath() cond {
	return cond{
		&expr.Fib{Register: 1, FlagSADDR: true, FlagIIF: true, ResultOIF: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

func src(p netip.Prefix) cond {
	if p.Addr().Is4() {
		return prefixMatch(p, 12)
	}
	return prefixMatch(p, 8)
}

func dst(p netip.Prefix) cond {
	if p.Addr().Is4() {
		return prefixMatch(p, 16)
	}
	return prefixMatch(p, 24)
}

// prefixMatch matches the network-header address at offset against p,
// guarded by the address family (the table is inet).
func prefixMatch(p netip.Prefix, offset uint32) cond {
	p = p.Masked()
	proto := byte(unix.NFPROTO_IPV4)
	if p.Addr().Is6() {
		proto = unix.NFPROTO_IPV6
	}
	addr := p.Addr().AsSlice()
	mask := make([]byte, len(addr))
	for i, bits := 0, p.Bits(); i < len(mask) && bits > 0; i++ {
		n := min(bits, 8)
		mask[i] = byte(0xff << (8 - n))
		bits -= n
	}
	return cond{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(len(addr))},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(addr)), Mask: mask, Xor: make([]byte, len(addr))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr},
	}
}
