package policyfile

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/policy"
)

// randomPolicy writes a random but valid policy file: a few groups (some
// nested, some with IdP refs), apps over a small address space so prefixes
// overlap, allow rules with random conditions and deny rules.
func randomPolicy(rng *rand.Rand) string {
	var b strings.Builder
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	b.WriteString("version: 1\nposture_checks:\n  p0: a\n  p1: b\n  p2: c\n")
	b.WriteString("groups:\n")
	for g := range 4 {
		fmt.Fprintf(&b, "  g%d:\n    members: [u%d, u%d]\n", g, rng.IntN(6), rng.IntN(6))
		if g > 0 && rng.IntN(2) == 0 {
			fmt.Fprintf(&b, "    groups: [g%d]\n", rng.IntN(g))
		}
		if rng.IntN(3) == 0 {
			fmt.Fprintf(&b, "    idp: [{claim: groups, value: G%d}]\n", rng.IntN(3))
		}
	}
	b.WriteString("segments:\n  s0: {prefixes: [10.20.0.0/16]}\n  s1: {prefixes: [10.30.0.0/16]}\n")
	b.WriteString("apps:\n")
	for a := range 5 {
		seg := rng.IntN(2)
		fmt.Fprintf(&b, "  a%d:\n    segment: s%d\n    addresses: [", a, seg)
		for i := range 1 + rng.IntN(2) {
			if i > 0 {
				b.WriteString(", ")
			}
			bits := []int{32, 30, 28, 24}[rng.IntN(4)]
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(20 + 10*seg), 0, byte(rng.IntN(16))}), bits).Masked()
			b.WriteString(p.String())
		}
		b.WriteString("]\n    ports: [")
		for i := range 1 + rng.IntN(3) {
			if i > 0 {
				b.WriteString(", ")
			}
			lo := rng.IntN(20)
			b.WriteString(pick(fmt.Sprintf("tcp/%d", lo), fmt.Sprintf("tcp/%d-%d", lo, lo+rng.IntN(6)), fmt.Sprintf("udp/%d-%d", lo, lo+3), "icmp", "udp", "any"))
		}
		fmt.Fprintf(&b, "]\n    classification: %s\n    tags: [t%d]\n", pick("phi", "internal", "public"), rng.IntN(3))
	}
	subject := func() string {
		return pick(fmt.Sprintf("group:g%d", rng.IntN(4)), fmt.Sprintf("user:u%d", rng.IntN(6)), fmt.Sprintf("tag:d%d", rng.IntN(3)))
	}
	target := func() string {
		return pick(fmt.Sprintf("app:a%d", rng.IntN(5)), fmt.Sprintf("app:a%d", rng.IntN(5)), fmt.Sprintf("tag:t%d", rng.IntN(3)), "class:internal", "class:public")
	}
	rule := func(i int, deny bool) {
		fmt.Fprintf(&b, "  - name: %s%d\n    from: [%s, %s]\n    to: [%s]\n", map[bool]string{true: "d", false: "r"}[deny], i, subject(), subject(), target())
		if rng.IntN(3) == 0 {
			lo := rng.IntN(20)
			fmt.Fprintf(&b, "    ports: [%s]\n", pick(fmt.Sprintf("tcp/%d-%d", lo, lo+8), "icmp", "tcp", fmt.Sprintf("udp/%d-%d", lo, lo+8)))
		}
		if deny {
			return
		}
		b.WriteString("    waiver: \"random policy for the differential test\"\n")
		var when []string
		if rng.IntN(3) == 0 {
			when = append(when, pick("mfa: true", "mfa_max_age: 1h", "mfa_max_age: 10m"))
		}
		if rng.IntN(3) == 0 {
			when = append(when, fmt.Sprintf("posture: [p%d]", rng.IntN(3)))
		}
		if rng.IntN(4) == 0 {
			when = append(when, fmt.Sprintf("hours: [%q]", pick("Mon-Fri 06:00-20:00 America/New_York", "Sat,Sun 22:00-06:00 Europe/Berlin", "daily 00:00-12:00 UTC")))
		}
		if rng.IntN(4) == 0 {
			when = append(when, fmt.Sprintf("source: [%s]", pick("198.51.100.0/24", "203.0.113.0/25")))
		}
		if rng.IntN(8) == 0 {
			when = append(when, "cel: "+pick(`'port > 5'`, `'"d1" in tags'`, `'user == "u2" || "g1" in groups'`, `'mfa_age < duration("30m")'`))
		}
		if len(when) > 0 {
			fmt.Fprintf(&b, "    when: {%s}\n", strings.Join(when, ", "))
		}
	}
	b.WriteString("rules:\n")
	for i := range 1 + rng.IntN(8) {
		rule(i, false)
	}
	if n := rng.IntN(3); n > 0 {
		b.WriteString("deny:\n")
		for i := range n {
			rule(i, true)
		}
	}
	return b.String()
}

// The compiled policy (what gateways enforce) agrees with the reference
// evaluator on verdict, reason and deciding rule, for thousands of random
// policies and requests.
func TestDifferentialCompiledAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	rounds := 400
	if testing.Short() {
		rounds = 50
	}
	base := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	var checked int
	reasons := map[policy.Reason]int{}
	for round := range rounds {
		src := randomPolicy(rng)
		pol, err := Parse("random.yaml", []byte(src))
		for tries := 0; err != nil && strings.Contains(err.Error(), "match none") && tries < 50; tries++ {
			src = randomPolicy(rng) // rule ports that miss every app port are refused; draw again
			pol, err = Parse("random.yaml", []byte(src))
		}
		if err != nil {
			t.Fatalf("round %d: random policy does not parse: %v\n%s", round, err, src)
		}
		var devices []Device
		for i := range 12 {
			d := Device{ID: fmt.Sprintf("dev%02d", i), User: fmt.Sprintf("u%d", rng.IntN(7)), Addr: netip.AddrFrom4([4]byte{100, 64, 0, byte(i + 1)})}
			for range rng.IntN(3) {
				d.Tags = append(d.Tags, fmt.Sprintf("d%d", rng.IntN(3)))
			}
			if rng.IntN(3) == 0 {
				d.IdP = []IdPRef{{Claim: "groups", Value: fmt.Sprintf("G%d", rng.IntN(3))}}
			}
			devices = append(devices, d)
		}
		c, err := pol.Compile("", devices)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for range 300 {
			d := devices[rng.IntN(len(devices))]
			at := base.Add(time.Duration(rng.IntN(7*24*60)) * time.Minute)
			sess := policy.Session{Groups: pol.GroupsOf(d.User, d.IdP), Tags: d.Tags}
			if rng.IntN(3) > 0 {
				sess.MFAAt = at.Add(-time.Duration(rng.IntN(120)) * time.Minute)
			}
			for i := range 3 {
				if rng.IntN(2) == 0 {
					sess.Posture = append(sess.Posture, fmt.Sprintf("p%d", i))
				}
			}
			if rng.IntN(2) == 0 {
				sess.PublicAddr = netip.AddrFrom4([4]byte{198, 51, 100, byte(rng.IntN(256))})
			}
			dst := netip.AddrFrom4([4]byte{10, byte(20 + 10*rng.IntN(2)), 0, byte(rng.IntN(20))})
			proto := []policy.Proto{policy.ProtoTCP, policy.ProtoUDP, policy.ProtoICMP, 50}[rng.IntN(4)]
			port := uint16(rng.IntN(30))
			if proto != policy.ProtoTCP && proto != policy.ProtoUDP {
				port = 0
			}
			got := c.DecideSession(d.Addr, dst, proto, port, &sess, at)
			want := pol.Evaluate(Request{User: d.User, IdP: d.IdP, Tags: d.Tags, Session: sess, At: at, Dst: dst, Proto: proto, Port: port})
			var gotID policy.RuleID
			if got.Rule != nil {
				gotID = got.Rule.ID
			}
			// A device with no rule at all is not a peer: the compiled
			// policy says unknown-source where the reference says no rule.
			if got.Reason == policy.ReasonUnknownPeer && want.Reason == policy.ReasonNoRule {
				continue
			}
			if got.Verdict != want.Verdict || got.Reason != want.Reason || gotID != want.WireID {
				t.Fatalf("round %d: %s (%s, tags %v) → %s %v/%d at %v:\ncompiled  %v %v %s\nreference %v %v %s\npolicy:\n%s",
					round, d.ID, d.User, d.Tags, dst, proto, port, at, got.Verdict, got.Reason, gotID, want.Verdict, want.Reason, want.WireID, src)
			}
			checked++
			reasons[got.Reason]++
		}
	}
	t.Logf("%d decisions agreed: %v", checked, reasons)
	for r := policy.ReasonAllowed; r <= policy.ReasonExpression; r++ {
		if r != policy.ReasonUnknownPeer && reasons[r] == 0 {
			t.Errorf("no decision exercised %v", r)
		}
	}
}
