package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

var (
	nurse   = netip.MustParseAddr("100.64.0.2")
	clerk   = netip.MustParseAddr("100.64.0.3")
	ehr     = netip.MustParseAddr("10.20.0.10")
	billing = netip.MustParseAddr("10.20.0.11")
)

func hospital(t testing.TB) *Compiled {
	t.Helper()
	c, err := Compile([]Rule{
		{ID: "clinicians-ehr", App: "ehr", Dst: []netip.Prefix{netip.PrefixFrom(ehr, 32)}, Proto: ProtoTCP, Ports: []PortRange{{443, 443}, {8000, 8099}}},
		{ID: "ops-segment", App: "lan", Dst: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/24")}, Proto: ProtoICMP},
	}, []Peer{
		{DeviceID: "dev-nurse", User: "nurse", Addr: nurse, Rules: []RuleID{"clinicians-ehr", "ops-segment"}},
		{DeviceID: "dev-clerk", User: "clerk", Addr: clerk},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Who must NOT reach what, as much as who may.
func TestDecide(t *testing.T) {
	c := hospital(t)
	for _, tc := range []struct {
		name   string
		src    netip.Addr
		dst    netip.Addr
		proto  Proto
		port   uint16
		want   Verdict
		reason Reason
		rule   RuleID
	}{
		{"nurse reaches ehr https", nurse, ehr, ProtoTCP, 443, Allow, ReasonAllowed, "clinicians-ehr"},
		{"nurse reaches ehr port range", nurse, ehr, ProtoTCP, 8050, Allow, ReasonAllowed, "clinicians-ehr"},
		{"nurse not ehr ssh", nurse, ehr, ProtoTCP, 22, Deny, ReasonNoRule, ""},
		{"nurse not ehr over udp", nurse, ehr, ProtoUDP, 443, Deny, ReasonNoRule, ""},
		{"nurse not billing", nurse, billing, ProtoTCP, 443, Deny, ReasonNoRule, ""},
		{"nurse pings billing via the wider rule", nurse, billing, ProtoICMP, 0, Allow, ReasonAllowed, "ops-segment"},
		{"nurse pings ehr: shorter prefix still applies", nurse, ehr, ProtoICMP, 0, Allow, ReasonAllowed, "ops-segment"},
		{"clerk with no rules reaches nothing", clerk, ehr, ProtoTCP, 443, Deny, ReasonNoRule, ""},
		{"unknown source", netip.MustParseAddr("100.64.9.9"), ehr, ProtoTCP, 443, Deny, ReasonUnknownPeer, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := c.Decide(tc.src, tc.dst, tc.proto, tc.port)
			if d.Verdict != tc.want || d.Reason != tc.reason {
				t.Fatalf("got %v/%v, want %v/%v", d.Verdict, d.Reason, tc.want, tc.reason)
			}
			if tc.rule != "" && (d.Rule == nil || d.Rule.ID != tc.rule) {
				t.Fatalf("rule = %v, want %s", d.Rule, tc.rule)
			}
		})
	}
}

func TestCompileRejects(t *testing.T) {
	r := Rule{ID: "r", Dst: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	for name, tc := range map[string]struct {
		rules []Rule
		peers []Peer
	}{
		"duplicate rule": {[]Rule{r, r}, nil},
		"empty id":       {[]Rule{{}}, nil},
		"unknown rule":   {[]Rule{r}, []Peer{{DeviceID: "d", Addr: nurse, Rules: []RuleID{"x"}}}},
		"duplicate addr": {[]Rule{r}, []Peer{{DeviceID: "a", Addr: nurse}, {DeviceID: "b", Addr: nurse}}},
		"invalid addr":   {nil, []Peer{{DeviceID: "a"}}},
		"reversed ports": {[]Rule{{ID: "p", Ports: []PortRange{{9, 1}}}}, nil},
		"invalid prefix": {[]Rule{{ID: "p", Dst: []netip.Prefix{{}}}}, nil},
	} {
		if _, err := Compile(tc.rules, tc.peers); err == nil {
			t.Errorf("%s: compiled without error", name)
		}
	}
}

// reference is the obviously correct evaluator: a linear scan. A matching
// deny rule wins; an allow rule needing MFA admits only a session with MFA.
func reference(rules []Rule, peers []Peer, src, dst netip.Addr, proto Proto, port uint16, mfa bool) Verdict {
	allow := false
	for _, p := range peers {
		if p.Addr != src {
			continue
		}
		for _, id := range p.Rules {
			for _, r := range rules {
				if r.ID != id || (r.Proto != ProtoAny && r.Proto != proto) {
					continue
				}
				in := false
				for _, d := range r.Dst {
					in = in || d.Contains(dst)
				}
				if in && portAllowed(r.Ports, proto, port) {
					if r.Deny {
						return Deny
					}
					if r.When == nil || !r.When.MFA || mfa {
						allow = true
					}
				}
			}
		}
	}
	if allow {
		return Allow
	}
	return Deny
}

func TestDifferentialAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	addr := func() netip.Addr { return netip.AddrFrom4([4]byte{10, 20, byte(rng.IntN(4)), byte(rng.IntN(8))}) }
	for round := range 200 {
		var rules []Rule
		for i := range 1 + rng.IntN(8) {
			r := Rule{ID: RuleID(fmt.Sprint("r", i)), Proto: []Proto{ProtoAny, ProtoTCP, ProtoUDP, ProtoICMP}[rng.IntN(4)]}
			for range 1 + rng.IntN(3) {
				r.Dst = append(r.Dst, netip.PrefixFrom(addr(), []int{24, 28, 30, 32, 16}[rng.IntN(5)]).Masked())
			}
			for range rng.IntN(3) {
				lo := uint16(rng.IntN(20))
				r.Ports = append(r.Ports, PortRange{lo, lo + uint16(rng.IntN(5))})
			}
			switch rng.IntN(5) {
			case 0:
				r.Deny = true
			case 1:
				r.When = &Conditions{MFA: true}
			}
			rules = append(rules, r)
		}
		var peers []Peer
		for i := range 4 {
			p := Peer{DeviceID: fmt.Sprint("d", i), Addr: netip.AddrFrom4([4]byte{100, 64, 0, byte(i + 1)})}
			for _, r := range rules {
				if rng.IntN(2) == 0 {
					p.Rules = append(p.Rules, r.ID)
				}
			}
			peers = append(peers, p)
		}
		c, err := Compile(rules, peers)
		if err != nil {
			t.Fatal(err)
		}
		for range 200 {
			src := netip.AddrFrom4([4]byte{100, 64, 0, byte(rng.IntN(5) + 1)})
			dst := addr()
			proto := []Proto{ProtoTCP, ProtoUDP, ProtoICMP, 50}[rng.IntN(4)]
			port := uint16(rng.IntN(25))
			mfa := rng.IntN(2) == 0
			sess := &Session{}
			if mfa {
				sess.MFAAt = time.Unix(1e9, 0)
			}
			got := c.DecideSession(src, dst, proto, port, sess, time.Unix(1e9+60, 0)).Verdict
			if want := reference(rules, peers, src, dst, proto, port, mfa); got != want {
				t.Fatalf("round %d: %s→%s %v/%d: compiled %v, reference %v\nrules %+v", round, src, dst, proto, port, got, want, rules)
			}
		}
	}
}

func TestDecideDoesNotAllocate(t *testing.T) {
	c := hospital(t)
	// A peer carrying a session, with a time-window and MFA-age rule: Decide
	// reads the clock and the peer's session without allocating.
	withSession, err := Compile([]Rule{
		{ID: "day", App: "ehr", Dst: []netip.Prefix{netip.PrefixFrom(ehr, 32)}, Proto: ProtoTCP,
			When: &Conditions{MFAMaxAge: time.Hour, Windows: []TimeWindow{{Days: 0x7f, Start: 0, End: 1440, Zone: "Europe/Berlin"}}}},
	}, []Peer{{DeviceID: "n", User: "nurse", Addr: nurse, Rules: []RuleID{"day"},
		Session: &Session{MFAAt: time.Now(), PublicAddr: netip.MustParseAddr("198.51.100.7")}}})
	if err != nil {
		t.Fatal(err)
	}
	if d := withSession.Decide(nurse, ehr, ProtoTCP, 443); d.Verdict != Allow {
		t.Fatalf("session peer: %v/%v", d.Verdict, d.Reason)
	}
	n := testing.AllocsPerRun(1000, func() {
		c.Decide(nurse, ehr, ProtoTCP, 443)
		c.Decide(clerk, billing, ProtoTCP, 22)
		withSession.Decide(nurse, ehr, ProtoTCP, 443)
	})
	if n != 0 {
		t.Fatalf("Decide allocates %v times per run", n)
	}
}

// Conditions other than CEL are evaluated without allocating: MFA age,
// posture, a time window in an IANA zone, source networks, deny rules.
func TestDecideSessionWithConditionsDoesNotAllocate(t *testing.T) {
	c, err := Compile([]Rule{
		{ID: "deny-ssh", Deny: true, Dst: []netip.Prefix{netip.PrefixFrom(ehr, 32)}, Proto: ProtoTCP, Ports: []PortRange{{22, 22}}},
		{ID: "ehr", App: "ehr", Dst: []netip.Prefix{netip.PrefixFrom(ehr, 32)}, Proto: ProtoTCP, Ports: []PortRange{{443, 443}},
			When: &Conditions{MFA: true, MFAMaxAge: 12 * time.Hour, Posture: []string{"disk-encrypted"},
				Windows:    []TimeWindow{{Days: 0b0111110, Start: 6 * 60, End: 20 * 60, Zone: "America/New_York"}},
				SourceNets: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}},
	}, []Peer{{DeviceID: "n", User: "nurse", Addr: nurse, Rules: []RuleID{"deny-ssh", "ehr"}}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 2, 15, 0, 0, 0, time.UTC) // Monday 10:00 in New York
	s := &Session{MFAAt: now.Add(-time.Hour), Posture: []string{"disk-encrypted"}, PublicAddr: netip.MustParseAddr("198.51.100.7")}
	for _, tc := range []struct {
		port   uint16
		s      *Session
		at     time.Time
		want   Verdict
		reason Reason
	}{
		{443, s, now, Allow, ReasonAllowed},
		{22, s, now, Deny, ReasonDenyRule},
		{443, nil, now, Deny, ReasonMFARequired},
		{443, s, now.Add(12 * time.Hour), Deny, ReasonMFAStale},
		{443, &Session{MFAAt: now}, now, Deny, ReasonPosture},
		{443, s, now.Add(-11 * time.Hour), Deny, ReasonOutsideHours},
		{443, &Session{MFAAt: now, Posture: []string{"disk-encrypted"}}, now, Deny, ReasonSourceNetwork},
	} {
		if d := c.DecideSession(nurse, ehr, ProtoTCP, tc.port, tc.s, tc.at); d.Verdict != tc.want || d.Reason != tc.reason {
			t.Errorf("port %d at %v: %v/%v, want %v/%v", tc.port, tc.at, d.Verdict, d.Reason, tc.want, tc.reason)
		}
	}
	n := testing.AllocsPerRun(1000, func() {
		c.DecideSession(nurse, ehr, ProtoTCP, 443, s, now)
		c.DecideSession(nurse, ehr, ProtoTCP, 22, s, now)
	})
	if n != 0 {
		t.Fatalf("DecideSession allocates %v times per run", n)
	}
}

func TestCompileRejectsBadConditions(t *testing.T) {
	dst := []netip.Prefix{netip.PrefixFrom(ehr, 32)}
	for name, w := range map[string]*Conditions{
		"unknown zone":   {Windows: []TimeWindow{{Days: 1, Start: 0, End: 60, Zone: "Mars/Olympus"}}},
		"empty window":   {Windows: []TimeWindow{{Days: 1, Start: 60, End: 60, Zone: "UTC"}}},
		"cel not bool":   {CEL: "port + 1"},
		"cel bad syntax": {CEL: "port >"},
	} {
		if _, err := Compile([]Rule{{ID: "r", Dst: dst, When: w}}, nil); err == nil {
			t.Errorf("%s: compiled", name)
		}
	}
	if _, err := Compile([]Rule{{ID: "r", Dst: dst, Deny: true, When: &Conditions{MFA: true}}}, nil); err == nil {
		t.Error("deny rule with conditions compiled")
	}
}

func BenchmarkDecideSessionConditions(b *testing.B) {
	c, err := Compile([]Rule{
		{ID: "ehr", App: "ehr", Dst: []netip.Prefix{netip.PrefixFrom(ehr, 32)}, Proto: ProtoTCP, Ports: []PortRange{{443, 443}},
			When: &Conditions{MFA: true, MFAMaxAge: 12 * time.Hour, Posture: []string{"disk-encrypted"},
				Windows: []TimeWindow{{Days: 0x7f, Start: 0, End: 1440, Zone: "America/New_York"}}}},
	}, []Peer{{DeviceID: "n", User: "nurse", Addr: nurse, Rules: []RuleID{"ehr"}}})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	s := &Session{MFAAt: now.Add(-time.Hour), Posture: []string{"disk-encrypted"}}
	b.ReportAllocs()
	for b.Loop() {
		if c.DecideSession(nurse, ehr, ProtoTCP, 443, s, now).Verdict != Allow {
			b.Fatal("deny")
		}
	}
}

func TestParsePortRange(t *testing.T) {
	for in, want := range map[string]PortRange{"443": {443, 443}, "8000-8099": {8000, 8099}, "*": AllPorts} {
		if got, err := ParsePortRange(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	for _, bad := range []string{"x", "99999", "10-5", "1-", "-1", "01"} {
		if _, err := ParsePortRange(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func BenchmarkDecide(b *testing.B) {
	var rules []Rule
	var peers []Peer
	for i := range 1000 {
		rules = append(rules, Rule{ID: RuleID(fmt.Sprint("r", i)), Proto: ProtoTCP,
			Dst: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 10}), 32)}, Ports: []PortRange{{443, 443}}})
	}
	for i := range 10000 {
		p := Peer{DeviceID: fmt.Sprint("d", i), Addr: netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)})}
		for j := range 20 {
			p.Rules = append(p.Rules, rules[(i+j*37)%len(rules)].ID)
		}
		peers = append(peers, p)
	}
	c, err := Compile(rules, peers)
	if err != nil {
		b.Fatal(err)
	}
	src := peers[77].Addr
	dst := rules[(77+5*37)%len(rules)].Dst[0].Addr()
	b.ReportAllocs()
	for b.Loop() {
		if c.Decide(src, dst, ProtoTCP, 443).Verdict != Allow {
			b.Fatal("deny")
		}
	}
}

// A peer's own session (as the controller sends it to gateways) is what
// Decide and DecideAt evaluate conditions against: time windows, MFA age
// and source networks work at the gateway without a caller-supplied
// context, and without allocating.
func TestDecidePeerSession(t *testing.T) {
	dst := []netip.Prefix{netip.PrefixFrom(ehr, 32)}
	office := netip.MustParsePrefix("198.51.100.0/24")
	now := time.Date(2026, 3, 2, 15, 0, 0, 0, time.UTC) // Monday 10:00 in New York
	sess := &Session{MFAAt: now.Add(-time.Hour), PublicAddr: netip.MustParseAddr("198.51.100.7"), Posture: []string{"screen-lock", "disk-encrypted"}}
	c, err := Compile([]Rule{
		{ID: "day", App: "ehr", Dst: dst, Proto: ProtoTCP, Ports: []PortRange{{443, 443}},
			When: &Conditions{Windows: []TimeWindow{{Days: 0b0111110, Start: 6 * 60, End: 20 * 60, Zone: "America/New_York"}}}},
		{ID: "fresh-mfa", App: "pacs", Dst: dst, Proto: ProtoTCP, Ports: []PortRange{{8443, 8443}},
			When: &Conditions{MFAMaxAge: 2 * time.Hour}},
		{ID: "office", App: "billing", Dst: dst, Proto: ProtoTCP, Ports: []PortRange{{9000, 9000}},
			When: &Conditions{SourceNets: []netip.Prefix{office}}},
		{ID: "posture", App: "lab", Dst: dst, Proto: ProtoTCP, Ports: []PortRange{{7000, 7000}},
			When: &Conditions{Posture: []string{"disk-encrypted", "screen-lock"}}},
	}, []Peer{
		{DeviceID: "n", User: "nurse", Addr: nurse, Rules: []RuleID{"day", "fresh-mfa", "office", "posture"}, Session: sess},
		{DeviceID: "c", User: "clerk", Addr: clerk, Rules: []RuleID{"day", "fresh-mfa", "office", "posture"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if sess.Posture[0] != "screen-lock" {
		t.Fatal("Compile reordered the caller's posture list")
	}
	for _, tc := range []struct {
		name   string
		src    netip.Addr
		port   uint16
		at     time.Time
		want   Verdict
		reason Reason
	}{
		{"inside the window", nurse, 443, now, Allow, ReasonAllowed},
		{"outside the window (Monday 04:00)", nurse, 443, now.Add(-6 * time.Hour), Deny, ReasonOutsideHours},
		{"outside the window (Saturday)", nurse, 443, now.Add(5 * 24 * time.Hour), Deny, ReasonOutsideHours},
		{"window needs no session", clerk, 443, now, Allow, ReasonAllowed},
		{"fresh MFA", nurse, 8443, now, Allow, ReasonAllowed},
		{"MFA too old", nurse, 8443, now.Add(90 * time.Minute), Deny, ReasonMFAStale},
		{"no session: no MFA", clerk, 8443, now, Deny, ReasonMFARequired},
		{"from the office network", nurse, 9000, now, Allow, ReasonAllowed},
		{"no public address known", clerk, 9000, now, Deny, ReasonSourceNetwork},
		{"posture given unsorted", nurse, 7000, now, Allow, ReasonAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := c.DecideAt(tc.src, ehr, ProtoTCP, tc.port, tc.at); d.Verdict != tc.want || d.Reason != tc.reason {
				t.Fatalf("DecideAt: %v/%v, want %v/%v", d.Verdict, d.Reason, tc.want, tc.reason)
			}
			// DecideSession takes the context from its caller alone.
			var s *Session
			if tc.src == nurse {
				s = &Session{MFAAt: sess.MFAAt, PublicAddr: sess.PublicAddr, Posture: []string{"disk-encrypted", "screen-lock"}}
			}
			if d := c.DecideSession(tc.src, ehr, ProtoTCP, tc.port, s, tc.at); d.Verdict != tc.want || d.Reason != tc.reason {
				t.Fatalf("DecideSession: %v/%v, want %v/%v", d.Verdict, d.Reason, tc.want, tc.reason)
			}
		})
	}
	if d := c.DecideSession(nurse, ehr, ProtoTCP, 8443, nil, now); d.Reason != ReasonMFARequired {
		t.Fatalf("DecideSession(nil) used the peer's session: %v", d.Reason)
	}
	// Decide reads the clock: the MFA-age rule holds now only if MFA was
	// recent, which it is for a session made just now.
	fresh, err := Compile([]Rule{{ID: "fresh-mfa", App: "pacs", Dst: dst, Proto: ProtoTCP, When: &Conditions{MFAMaxAge: time.Hour}}},
		[]Peer{{DeviceID: "n", User: "nurse", Addr: nurse, Rules: []RuleID{"fresh-mfa"}, Session: &Session{MFAAt: time.Now()}}})
	if err != nil {
		t.Fatal(err)
	}
	if d := fresh.Decide(nurse, ehr, ProtoTCP, 443); d.Verdict != Allow {
		t.Fatalf("Decide with a fresh MFA: %v/%v", d.Verdict, d.Reason)
	}
}

func TestConditional(t *testing.T) {
	if hospital(t).Conditional() || Empty.Conditional() {
		t.Fatal("a policy without conditions reports Conditional")
	}
	c, err := Compile([]Rule{{ID: "r", App: "a", Dst: []netip.Prefix{netip.PrefixFrom(ehr, 32)}, When: &Conditions{MFA: true}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Conditional() {
		t.Fatal("a policy with an MFA rule is not Conditional")
	}
}
