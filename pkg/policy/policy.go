// Package policy holds the compiled flow policy a gateway enforces: which
// overlay source may open a flow to which destination, protocol and port.
//
// The controller builds the wire form ([Rule] and [Peer], carried in the
// control protocol); the gateway compiles it once with [Compile] into an
// immutable [Compiled] that the data path reads without locks and replaces
// atomically on every update. A decision on a new flow is one map lookup, one
// longest-prefix-match lookup in a bart routing table and a scan of the few
// entries stored at that prefix, each checked against the source's rule
// bitset; deny rules win, and allow-rule [Conditions] are evaluated against
// the device's [Session] at decision time. It does not allocate unless a
// CEL expression runs.
package policy

import (
	"cmp"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strings"
	"time"

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

// Rule admits (or, with Deny, refuses) flows to an app's destinations. It
// is the wire form sent from the controller to gateways.
//
// A deny rule wins over every allow rule that matches the same flow. An
// allow rule with conditions admits a flow only when all of them hold for
// the device's session at the time of the decision.
type Rule struct {
	ID    RuleID         `json:"id"`
	App   string         `json:"app"`
	Dst   []netip.Prefix `json:"dst"`
	Proto Proto          `json:"proto"`
	Ports []PortRange    `json:"ports"`
	Name  string         `json:"name,omitempty"` // the policy rule it was compiled from
	Deny  bool           `json:"deny,omitempty"`
	When  *Conditions    `json:"when,omitempty"`
}

// Peer is one client device a gateway serves and the rules that apply to it.
//
// Session, when set, is the controller's view of the device's session: the
// context [Compiled.Decide] evaluates rule conditions against. It is shared
// with the compiled policy and must not be changed after [Compile].
type Peer struct {
	DeviceID string     `json:"device_id"`
	User     string     `json:"user"`
	Addr     netip.Addr `json:"addr"` // overlay address
	Rules    []RuleID   `json:"rules"`
	Session  *Session   `json:"session,omitempty"`
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
	ReasonAllowed       Reason = iota
	ReasonUnknownPeer          // the source is not a device this gateway serves
	ReasonNoRule               // the device has no rule for the destination
	ReasonDenyRule             // a deny rule matched
	ReasonMFARequired          // an allow rule matched but wants MFA in this session
	ReasonMFAStale             // an allow rule matched but the MFA is older than it allows
	ReasonPosture              // an allow rule matched but the device fails a posture check
	ReasonOutsideHours         // an allow rule matched but not at this time
	ReasonSourceNetwork        // an allow rule matched but the device connects from elsewhere
	ReasonExpression           // an allow rule matched but its CEL expression was false
)

func (r Reason) String() string {
	switch r {
	case ReasonAllowed:
		return "allowed"
	case ReasonUnknownPeer:
		return "unknown-source"
	case ReasonNoRule:
		return "no-matching-rule"
	case ReasonDenyRule:
		return "deny-rule"
	case ReasonMFARequired:
		return "mfa-required"
	case ReasonMFAStale:
		return "mfa-too-old"
	case ReasonPosture:
		return "posture-check-failed"
	case ReasonOutsideHours:
		return "outside-time-window"
	case ReasonSourceNetwork:
		return "source-network-not-allowed"
	case ReasonExpression:
		return "expression-false"
	}
	return "unknown"
}

// Decision is the result of [Compiled.Decide]. Rule and Peer are shared,
// read-only pointers into the compiled policy.
type Decision struct {
	Verdict Verdict
	Reason  Reason
	// Rule is the rule that allowed the flow; on deny, the deny rule that
	// matched or the allow rule whose condition failed (nil for no rule).
	Rule *Rule
	Peer *Peer // the source device, nil if unknown
}

// entry is one rule's port filter stored at a destination prefix.
type entry struct {
	proto Proto
	deny  bool
	idx   int32 // the rule's index in Compiled.byIndex, its bit in a ruleSet
	ports []PortRange
	rule  *Rule
	cond  *cond // nil: unconditional
}

// ruleSet is the set of rules that apply to a device, one bit per rule.
// Devices with the same rules share one set, which keeps the compiled
// policy small when thousands of devices belong to the same groups.
type ruleSet []uint64

func (s ruleSet) has(i int32) bool {
	w := int(i >> 6)
	return w < len(s) && s[w]&(1<<(uint(i)&63)) != 0
}

type source struct {
	peer *Peer
	set  ruleSet
}

// Compiled is an immutable, compiled policy. Safe for concurrent use.
//
// It holds one destination table for every rule, whoever it applies to:
// a lookup returns the rules covering the destination, and the source's
// rule set (a bitset) says which of them apply. Its size grows with rules
// plus distinct rule sets, not with devices times rules.
type Compiled struct {
	sources map[netip.Addr]source
	rules   map[RuleID]*Rule
	conds   map[RuleID]*cond
	byIndex []*Rule
	dst     bart.Table[[]entry]
	anyCond bool // some rule has conditions
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
		conds:   make(map[RuleID]*cond, len(rules)),
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
		if r.Deny && !r.When.IsZero() {
			return nil, fmt.Errorf("rule %q: a deny rule takes no conditions", r.ID)
		}
		k, err := compileCond(r.When)
		if err != nil {
			return nil, fmt.Errorf("rule %q: %w", r.ID, err)
		}
		c.rules[r.ID] = &r
		c.conds[r.ID] = k
		c.anyCond = c.anyCond || k != nil
	}
	// Index rules in ID order, so bit numbers do not depend on input order.
	c.byIndex = make([]*Rule, 0, len(c.rules))
	for _, r := range c.rules {
		c.byIndex = append(c.byIndex, r)
	}
	slices.SortFunc(c.byIndex, func(a, b *Rule) int { return cmp.Compare(a.ID, b.ID) })
	index := make(map[RuleID]int32, len(c.byIndex))
	for i, r := range c.byIndex {
		index[r.ID] = int32(i)
	}
	c.buildTable(index)

	sets := map[uint64][]ruleSet{} // hash → distinct sets with that hash
	words := (len(c.byIndex) + 63) / 64
	scratch := make(ruleSet, words)
	// Peers often share one Rules slice (the controller computes one per
	// identity): convert each distinct slice once.
	type sliceKey struct {
		first *RuleID
		n     int
	}
	type converted struct {
		set ruleSet
		ids []RuleID
	}
	seen := map[sliceKey]converted{}
	idsOf := map[*uint64][]RuleID{} // set → its sorted IDs
	stored := slices.Clone(peers)   // one allocation for every peer
	for i := range stored {
		p := &stored[i]
		if !p.Addr.IsValid() {
			return nil, fmt.Errorf("peer %q: invalid overlay address", p.DeviceID)
		}
		if _, dup := c.sources[p.Addr]; dup {
			return nil, fmt.Errorf("peer %q: overlay address %s used twice", p.DeviceID, p.Addr)
		}
		if p.Session != nil && !slices.IsSorted(p.Session.Posture) {
			// Conditions binary-search the posture list; never change the caller's.
			sess := *p.Session
			sess.Posture = slices.Clone(sess.Posture)
			slices.Sort(sess.Posture)
			p.Session = &sess
		}
		var sk sliceKey
		if len(p.Rules) > 0 {
			sk = sliceKey{&p.Rules[0], len(p.Rules)}
		}
		conv, ok := seen[sk]
		if !ok {
			clear(scratch)
			for _, id := range p.Rules {
				i, ok := index[id]
				if !ok {
					return nil, fmt.Errorf("peer %q: unknown rule %q", p.DeviceID, id)
				}
				scratch[i>>6] |= 1 << (uint(i) & 63)
			}
			h := hashSet(scratch)
			for _, s := range sets[h] {
				if slices.Equal(s, scratch) {
					conv.set = s
					break
				}
			}
			if conv.set == nil {
				conv.set = slices.Clone(scratch)
				sets[h] = append(sets[h], conv.set)
			}
			var key *uint64
			if len(conv.set) > 0 {
				key = &conv.set[0]
			}
			switch {
			case isStrictlySorted(p.Rules):
				conv.ids = slices.Clone(p.Rules) // already canonical
			default:
				conv.ids, ok = idsOf[key]
				if ok {
					break
				}
				// The peer's rule IDs, sorted and unique, read from the set.
				for w, word := range conv.set {
					for word != 0 {
						b := word & -word
						conv.ids = append(conv.ids, c.byIndex[w*64+trailingZeros(b)].ID)
						word &^= b
					}
				}
				idsOf[key] = conv.ids
			}
			seen[sk] = conv
		}
		p.Rules = conv.ids // shared, read-only
		c.sources[p.Addr] = source{peer: p, set: conv.set}
	}
	return c, nil
}

func isStrictlySorted(ids []RuleID) bool {
	for i := 1; i < len(ids); i++ {
		if ids[i-1] >= ids[i] {
			return false
		}
	}
	return true
}

func hashSet(s ruleSet) uint64 {
	h := uint64(14695981039346656037)
	for _, w := range s {
		h ^= w
		h *= 1099511628211
	}
	return h
}

func trailingZeros(x uint64) int { return bits.TrailingZeros64(x) }

// buildTable inserts each rule at each of its prefixes. Every prefix also
// carries the entries of all shorter prefixes that contain it, so a single
// longest-prefix match returns every rule that covers an address (the
// prefixes containing one address form a chain).
func (c *Compiled) buildTable(index map[RuleID]int32) {
	byPrefix := map[netip.Prefix][]entry{}
	for _, r := range c.byIndex {
		for _, p := range r.Dst {
			p = p.Masked()
			byPrefix[p] = append(byPrefix[p], entry{proto: r.Proto, deny: r.Deny, idx: index[r.ID], ports: r.Ports, rule: r, cond: c.conds[r.ID]})
		}
	}
	// Shorter prefixes first: when p is inserted, every prefix containing
	// it is already in the table, and the longest of them already carries
	// the entries of all the others. One LPM lookup per prefix, no scan.
	prefixes := make([]netip.Prefix, 0, len(byPrefix))
	for p := range byPrefix {
		prefixes = append(prefixes, p)
	}
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int {
		if c := cmp.Compare(a.Bits(), b.Bits()); c != 0 {
			return c
		}
		return a.Addr().Compare(b.Addr())
	})
	for _, p := range prefixes {
		all := slices.Clone(byPrefix[p])
		if outer, ok := c.dst.LookupPrefix(p); ok {
			all = append(all, outer...)
		}
		// Deny entries first, so one pass sees every deny before it can
		// return an allow; then by rule ID, so the deciding rule is the
		// same on every gateway.
		slices.SortStableFunc(all, func(a, b entry) int {
			if a.deny != b.deny {
				if a.deny {
					return -1
				}
				return 1
			}
			return cmp.Compare(a.idx, b.idx)
		})
		c.dst.Insert(p, all)
	}
}

// Decide returns the verdict for a new flow from src to dst:dport over proto
// at the current time, evaluating rule conditions against the session the
// source's [Peer] carries (none if its Session is nil: then rules with
// conditions that need one, such as MFA, posture or a source network, do
// not admit it). The clock is read only if a condition needs it. It does
// not allocate unless a CEL expression is evaluated.
func (c *Compiled) Decide(src, dst netip.Addr, proto Proto, dport uint16) Decision {
	return c.decide(src, dst, proto, dport, nil, true, time.Time{})
}

// DecideAt is [Compiled.Decide] at time now (zero: the current time), for
// callers that keep their own clock.
func (c *Compiled) DecideAt(src, dst netip.Addr, proto Proto, dport uint16, now time.Time) Decision {
	return c.decide(src, dst, proto, dport, nil, true, now)
}

// DecideSession returns the verdict for a new flow from src to dst:dport
// over proto, evaluating rule conditions against the device's session s
// (nil: none) at time now (zero: the current time, read only if a condition
// needs it). A matching deny rule wins; otherwise the first matching allow
// rule (by ID) whose conditions hold admits the flow. It does not allocate
// unless a CEL expression is evaluated.
//
// Unlike [Compiled.Decide], it ignores the session the peer carries: sess is
// the whole context, which lets a caller ask "what if" (policy tests,
// explain) at a chosen time.
func (c *Compiled) DecideSession(src, dst netip.Addr, proto Proto, dport uint16, sess *Session, now time.Time) Decision {
	return c.decide(src, dst, proto, dport, sess, false, now)
}

// decide is Decide (peerSession: the peer's own session) and DecideSession.
func (c *Compiled) decide(src, dst netip.Addr, proto Proto, dport uint16, sess *Session, peerSession bool, now time.Time) Decision {
	s, ok := c.sources[src]
	if !ok {
		return Decision{Reason: ReasonUnknownPeer}
	}
	entries, ok := c.dst.Lookup(dst)
	if !ok {
		return Decision{Reason: ReasonNoRule, Peer: s.peer}
	}
	if peerSession {
		sess = s.peer.Session
	}
	blocked := Decision{Reason: ReasonNoRule, Peer: s.peer}
	for i := range entries {
		e := &entries[i]
		if !s.set.has(e.idx) {
			continue
		}
		if e.proto != ProtoAny && e.proto != proto {
			continue
		}
		if !portAllowed(e.ports, proto, dport) {
			continue
		}
		if e.deny {
			return Decision{Reason: ReasonDenyRule, Rule: e.rule, Peer: s.peer}
		}
		if e.cond != nil {
			if now.IsZero() {
				now = time.Now()
			}
			var req *celRequest
			if e.cond.prg != nil {
				req = &celRequest{peer: s.peer, app: e.rule.App, proto: proto, port: dport}
			}
			if r := e.cond.check(sess, now, req); r != ReasonAllowed {
				if blocked.Rule == nil {
					blocked = Decision{Reason: r, Rule: e.rule, Peer: s.peer}
				}
				continue
			}
		}
		return Decision{Verdict: Allow, Reason: ReasonAllowed, Rule: e.rule, Peer: s.peer}
	}
	return blocked
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

// Conditional reports whether some rule has conditions: only then can a
// decision change with time or session without a new policy.
func (c *Compiled) Conditional() bool { return c.anyCond }

// NumPeers returns how many devices the policy knows.
func (c *Compiled) NumPeers() int { return len(c.sources) }
