// Package policy holds the compiled flow policy a gateway enforces: which
// overlay source may open a flow to which destination, protocol and port.
//
// The controller builds the wire form ([Rule] and [Peer], carried in the
// control protocol); the gateway compiles it once with [Compile] into an
// immutable [Compiled] that the data path reads without locks and replaces
// atomically on every update. A decision on a new flow is one map lookup, one
// longest-prefix-match lookup in a bart routing table and a scan of the few
// entries stored at that prefix; it does not allocate.
package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/gaissmai/bart"
)

// Proto is an IP protocol number (IANA): the values agree with the IP header.
type Proto uint8

// Protocols a rule can name.
const (
	ProtoAny   Proto = 0
	ProtoICMP  Proto = 1
	ProtoTCP   Proto = 6
	ProtoUDP   Proto = 17
	ProtoICMP6 Proto = 58
)

// String returns the protocol's lower-case name.
func (p Proto) String() string {
	switch p {
	case ProtoAny:
		return "any"
	case ProtoICMP:
		return "icmp"
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP6:
		return "icmp6"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// ParseProto parses a protocol name as written in the CLI and API.
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return ProtoTCP, nil
	case "udp":
		return ProtoUDP, nil
	case "icmp":
		return ProtoICMP, nil
	case "icmp6", "ipv6-icmp":
		return ProtoICMP6, nil
	case "any", "*":
		return ProtoAny, nil
	}
	return 0, fmt.Errorf("unknown protocol %q: use tcp, udp, icmp or any", s)
}

// MarshalText implements encoding.TextMarshaler.
func (p Proto) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Proto) UnmarshalText(b []byte) error {
	v, err := ParseProto(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// PortRange is an inclusive range of ports. {0, 65535} means every port; for
// protocols without ports (ICMP) the range is ignored.
type PortRange struct {
	First uint16 `json:"first"`
	Last  uint16 `json:"last"`
}

// AllPorts is the range that matches every port.
var AllPorts = PortRange{0, 65535}

// Contains reports whether port p is in the range.
func (r PortRange) Contains(p uint16) bool { return r.First <= p && p <= r.Last }

// String formats the range as "443" or "8000-8099" or "*".
func (r PortRange) String() string {
	switch {
	case r == AllPorts:
		return "*"
	case r.First == r.Last:
		return fmt.Sprint(r.First)
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// ParsePortRange parses "443", "8000-8099" or "*".
func ParsePortRange(s string) (PortRange, error) {
	if s == "*" || s == "" {
		return AllPorts, nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	var r PortRange
	if _, err := fmt.Sscanf(lo, "%d", &r.First); err != nil || fmt.Sprint(r.First) != lo {
		return r, fmt.Errorf("bad port %q: want a number 1-65535, a range like 8000-8099, or *", s)
	}
	r.Last = r.First
	if isRange {
		if _, err := fmt.Sscanf(hi, "%d", &r.Last); err != nil || fmt.Sprint(r.Last) != hi {
			return r, fmt.Errorf("bad port range %q: want a range like 8000-8099", s)
		}
	}
	if r.Last < r.First {
		return r, fmt.Errorf("bad port range %q: the first port is above the last", s)
	}
	return r, nil
}

// RuleID names a compiled rule. It travels into audit records so an auditor
// can tell which rule admitted a flow.
type RuleID string

// Rule admits flows to an app's destinations. It is the wire form sent from
// the controller to gateways.
type Rule struct {
	ID    RuleID         `json:"id"`
	App   string         `json:"app"`
	Dst   []netip.Prefix `json:"dst"`
	Proto Proto          `json:"proto"`
	Ports []PortRange    `json:"ports"`
}

// Peer is one client device a gateway serves and the rules that apply to it.
type Peer struct {
	DeviceID string     `json:"device_id"`
	User     string     `json:"user"`
	Addr     netip.Addr `json:"addr"` // overlay address
	Rules    []RuleID   `json:"rules"`
}

// Verdict is the outcome of a decision.
type Verdict uint8

// Verdicts. The zero value denies: a forgotten assignment fails closed.
const (
	Deny Verdict = iota
	Allow
)

func (v Verdict) String() string {
	if v == Allow {
		return "allow"
	}
	return "deny"
}

// Reason says why a flow was denied; it is recorded in the audit trail.
type Reason uint8

// Reasons for a decision.
const (
	ReasonAllowed     Reason = iota
	ReasonUnknownPeer        // the source is not a device this gateway serves
	ReasonNoRule             // the device has no rule for the destination
)

func (r Reason) String() string {
	switch r {
	case ReasonAllowed:
		return "allowed"
	case ReasonUnknownPeer:
		return "unknown-source"
	case ReasonNoRule:
		return "no-matching-rule"
	}
	return "unknown"
}

// Decision is the result of [Compiled.Decide]. Rule and Peer are shared,
// read-only pointers into the compiled policy.
type Decision struct {
	Verdict Verdict
	Reason  Reason
	Rule    *Rule // the rule that allowed the flow, nil on deny
	Peer    *Peer // the source device, nil if unknown
}

// entry is one rule's port filter stored at a destination prefix.
type entry struct {
	proto Proto
	ports []PortRange
	rule  *Rule
}

// table is the destination lookup for one distinct set of rules. Devices with
// the same rule set share one table, which keeps the compiled policy small
// when thousands of devices belong to the same groups.
type table struct {
	dst bart.Table[[]entry]
}

type source struct {
	peer  *Peer
	table *table
}

// Compiled is an immutable, compiled policy. Safe for concurrent use.
type Compiled struct {
	sources map[netip.Addr]source
	rules   map[RuleID]*Rule
}

// Empty is a policy that denies everything.
var Empty = &Compiled{}

// Compile builds the lookup structure. It rejects a policy it cannot apply
// whole: duplicate rule IDs, peers naming unknown rules, duplicate addresses.
// The result depends only on the input (not on map order).
func Compile(rules []Rule, peers []Peer) (*Compiled, error) {
	c := &Compiled{
		sources: make(map[netip.Addr]source, len(peers)),
		rules:   make(map[RuleID]*Rule, len(rules)),
	}
	for i := range rules {
		r := rules[i]
		if r.ID == "" {
			return nil, fmt.Errorf("rule %d: empty id", i)
		}
		if _, dup := c.rules[r.ID]; dup {
			return nil, fmt.Errorf("rule %q: duplicate id", r.ID)
		}
		for _, p := range r.Dst {
			if !p.IsValid() {
				return nil, fmt.Errorf("rule %q: invalid destination prefix", r.ID)
			}
		}
		for _, pr := range r.Ports {
			if pr.Last < pr.First {
				return nil, fmt.Errorf("rule %q: port range %d-%d is reversed", r.ID, pr.First, pr.Last)
			}
		}
		r.Dst = slices.Clone(r.Dst)
		r.Ports = slices.Clone(r.Ports)
		c.rules[r.ID] = &r
	}
	tables := map[string]*table{}
	for i := range peers {
		p := peers[i]
		if !p.Addr.IsValid() {
			return nil, fmt.Errorf("peer %q: invalid overlay address", p.DeviceID)
		}
		if _, dup := c.sources[p.Addr]; dup {
			return nil, fmt.Errorf("peer %q: overlay address %s used twice", p.DeviceID, p.Addr)
		}
		ids := slices.Clone(p.Rules)
		slices.Sort(ids)
		ids = slices.Compact(ids)
		for _, id := range ids {
			if _, ok := c.rules[id]; !ok {
				return nil, fmt.Errorf("peer %q: unknown rule %q", p.DeviceID, id)
			}
		}
		p.Rules = ids
		key := joinIDs(ids)
		t, ok := tables[key]
		if !ok {
			t = c.buildTable(ids)
			tables[key] = t
		}
		c.sources[p.Addr] = source{peer: &p, table: t}
	}
	return c, nil
}

func joinIDs(ids []RuleID) string {
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(string(id))
		b.WriteByte(0)
	}
	return b.String()
}

// buildTable inserts each rule at each of its prefixes. Every prefix also
// carries the entries of all shorter prefixes that contain it, so a single
// longest-prefix match returns every rule that covers an address (the
// prefixes containing one address form a chain).
func (c *Compiled) buildTable(ids []RuleID) *table {
	byPrefix := map[netip.Prefix][]entry{}
	for _, id := range ids {
		r := c.rules[id]
		for _, p := range r.Dst {
			p = p.Masked()
			byPrefix[p] = append(byPrefix[p], entry{proto: r.Proto, ports: r.Ports, rule: r})
		}
	}
	prefixes := make([]netip.Prefix, 0, len(byPrefix))
	for p := range byPrefix {
		prefixes = append(prefixes, p)
	}
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Bits(), b.Bits())
	})
	t := &table{}
	for _, p := range prefixes {
		var all []entry
		for _, q := range prefixes {
			if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
				all = append(all, byPrefix[q]...)
			}
		}
		t.dst.Insert(p, all)
	}
	return t
}

// Decide returns the verdict for a new flow from src to dst:dport over proto.
// It does not allocate.
func (c *Compiled) Decide(src, dst netip.Addr, proto Proto, dport uint16) Decision {
	s, ok := c.sources[src]
	if !ok {
		return Decision{Reason: ReasonUnknownPeer}
	}
	entries, ok := s.table.dst.Lookup(dst)
	if ok {
		for i := range entries {
			e := &entries[i]
			if e.proto != ProtoAny && e.proto != proto {
				continue
			}
			if !portAllowed(e.ports, proto, dport) {
				continue
			}
			return Decision{Verdict: Allow, Reason: ReasonAllowed, Rule: e.rule, Peer: s.peer}
		}
	}
	return Decision{Reason: ReasonNoRule, Peer: s.peer}
}

func portAllowed(ports []PortRange, proto Proto, dport uint16) bool {
	if proto != ProtoTCP && proto != ProtoUDP {
		return true // ports do not apply
	}
	if len(ports) == 0 {
		return true
	}
	for _, r := range ports {
		if r.Contains(dport) {
			return true
		}
	}
	return false
}

// Peer returns the device behind an overlay address.
func (c *Compiled) Peer(src netip.Addr) (*Peer, bool) {
	s, ok := c.sources[src]
	return s.peer, ok
}

// NumPeers returns how many devices the policy knows.
func (c *Compiled) NumPeers() int { return len(c.sources) }
