package flow

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/packet"
	"github.com/cordonhq/cordon/pkg/packet/packettest"
	"github.com/cordonhq/cordon/pkg/policy"
)

// A 4,000-byte UDP datagram in 1,400-byte fragments: three fragments.
func bigUDP(src, dst netip.AddrPort, id uint32) [][]byte {
	return packettest.Fragment(packettest.UDP(src, dst, make([]byte, 4000)), 1400, id)
}

// A UDP app whose datagrams fragment works both ways: the first fragment
// is decided by its ports, the later ones follow it.
func TestFragmentedDatagramsPassBothWays(t *testing.T) {
	h := newHarness(t, fullPolicy(t))
	q := bigUDP(aliceP, dnsP, 7)
	if got := h.fromClient(q...); len(got) != 3 {
		t.Fatalf("%d of 3 fragments reached the app", len(got))
	}
	for _, f := range bigUDP(dnsP, aliceP, 9) {
		h.returns(f)
	}
	// IPv6, TCP: alice6's rule admits ehr6:443.
	seg := packettest.TCP(alice6P, ehr6P, syn, 1, 0, make([]byte, 3000))
	if got := h.fromClient(packettest.Fragment(seg, 1232, 0xabcdef01)...); len(got) != 3 {
		t.Fatalf("%d of 3 IPv6 fragments reached the app", len(got))
	}
	s := h.a.Stats()
	if s.FragmentsPassed != 6 || s.FragmentsDropped != 0 || s.FlowsOpened != 2 {
		t.Errorf("stats = %+v, want 6 later fragments passed, none dropped, 2 flows", s)
	}
}

// Nothing of a denied datagram passes, and a later fragment passes only
// after its first (it is dropped, counted, if it overtakes it).
func TestFragmentsOfDeniedOrUnknownDatagramsDropped(t *testing.T) {
	h := newHarness(t, fullPolicy(t))
	labP := netip.AddrPortFrom(lab, 53)
	if got := h.fromClient(bigUDP(aliceP, labP, 1)...); len(got) != 0 {
		t.Fatalf("%d fragments of a denied datagram reached the app", len(got))
	}
	// mallory is no peer: her fragments, first or later, stay out.
	if got := h.fromClient(bigUDP(netip.AddrPortFrom(mallory, 1), dnsP, 2)...); len(got) != 0 {
		t.Fatalf("%d fragments from an unknown source reached the app", len(got))
	}
	// Out of order: the later fragments come before the first.
	q := bigUDP(aliceP, dnsP, 3)
	if got := h.fromClient(q[1], q[2], q[0]); len(got) != 1 {
		t.Fatalf("%d packets reached the app, want only the first fragment", len(got))
	}
	// The app side sends fragments of a datagram toward a client that
	// belongs to no flow.
	for _, f := range bigUDP(netip.AddrPortFrom(lab, 53), aliceP, 4) {
		h.returnDropped(f)
	}
	s := h.a.Stats()
	if s.FragmentsDropped != 3+3+2+3 || s.FragmentsPassed != 0 || s.PacketsDenied != 2 {
		t.Errorf("stats = %+v", s)
	}
	// Denied fragments are one denied flow each, not one event per fragment.
	for range 2 {
		if ev := h.event(); ev.Action != controlproto.FlowDeny {
			t.Errorf("event %+v, want a deny", ev)
		}
	}
	if ev := h.event(); ev.Action != controlproto.FlowAllow {
		t.Errorf("event %+v, want the allow of alice's datagram", ev)
	}
	h.noEvent()
}

// A later fragment that would overwrite the first fragment's bytes (the
// transport header the policy decided on: RFC 1858's overlapping fragment
// attack) is dropped and counted; one that starts after them passes.
func TestOverlappingFragmentDropped(t *testing.T) {
	h := newHarness(t, fullPolicy(t))
	q := bigUDP(aliceP, dnsP, 5)
	h.passes(q[0])
	// A fragment at offset 8, inside the first fragment's 1,400 bytes.
	// (One at offset 0 is a first fragment, decided by its own header.)
	evil := rawFrag(alice, dnsHost, policy.ProtoUDP, 5, 8, true, make([]byte, 64))
	h.blocked(evil)
	h.passes(q[1])
	h.passes(q[2])
	s := h.a.Stats()
	if s.FragmentsOverlapping != 1 || s.FragmentsDropped != 1 || s.FragmentsPassed != 2 {
		t.Errorf("stats = %+v, want 1 overlapping dropped, 2 passed", s)
	}
}

// A first fragment from the client does not open its datagram to later
// fragments from the app side that claim the client's source.
func TestFragmentsFollowTheirDirection(t *testing.T) {
	h := newHarness(t, fullPolicy(t))
	q := bigUDP(aliceP, dnsP, 6)
	h.passes(q[0])
	h.returnDropped(q[1])
	h.passes(q[1])
}

// Later fragments stop passing when their flow is cut, and when their
// datagram's timeout passes.
func TestFragmentsEndWithTheirFlowAndTimeout(t *testing.T) {
	h := newHarness(t, fullPolicy(t), func(c *Config) { c.FragmentTimeout = 5 * time.Second })
	q := bigUDP(aliceP, dnsP, 10)
	h.passes(q[0])
	h.advance(6 * time.Second)
	h.blocked(q[1])

	q = bigUDP(aliceP, dnsP, 11)
	h.passes(q[0])
	h.passes(q[1])
	h.a.SetPolicy(compile(t, "r-ehr")) // no more DNS
	h.blocked(q[2])
	if s := h.a.Stats(); s.FragmentsDropped != 2 {
		t.Errorf("FragmentsDropped = %d, want 2", s.FragmentsDropped)
	}

	// The janitor's sweep forgets expired datagrams.
	h.a.SetPolicy(fullPolicy(t))
	h.passes(bigUDP(aliceP, dnsP, 12)[0])
	if n := h.a.frags.len(); n == 0 {
		t.Fatal("no datagram remembered")
	}
	h.advance(6 * time.Second)
	h.sweep()
	if n := h.a.frags.len(); n != 0 {
		t.Errorf("%d datagrams remembered after their timeout and a sweep", n)
	}
}

// A client that floods first fragments (each a new datagram) cannot make
// the gateway remember more than MaxFragmentedDatagrams: the oldest make
// room, counted, and the newest datagrams still get through.
func TestFragmentFloodKeepsMemoryBounded(t *testing.T) {
	const limit, flood = 64, 20000
	h := newHarness(t, fullPolicy(t), func(c *Config) { c.MaxFragmentedDatagrams = limit })
	first := func(id uint32) []byte {
		return rawFrag(alice, dnsHost, policy.ProtoUDP, id, 0, true, packettest.UDP(aliceP, dnsP, make([]byte, 32))[20:])
	}
	batch := make([][]byte, 0, 128)
	for id := range uint32(flood) {
		batch = append(batch, first(id))
		if len(batch) == cap(batch) {
			h.fromClient(batch...)
			batch = batch[:0]
		}
	}
	h.fromClient(batch...)
	if n := h.a.frags.len(); n != limit || len(h.a.frags.ring) != limit {
		t.Fatalf("remembers %d datagrams in a ring of %d, want %d", n, len(h.a.frags.ring), limit)
	}
	// Later fragments of unknown datagrams remember nothing.
	for id := range uint32(1000) {
		h.a.filterIn(rawFrag(alice, dnsHost, policy.ProtoUDP, flood+id, 64, false, make([]byte, 8)), h.a.clock.Load(), &batchCounts{})
	}
	if n := h.a.frags.len(); n != limit {
		t.Fatalf("remembers %d datagrams after a flood of later fragments, want %d", n, limit)
	}
	s := h.a.Stats()
	if s.FragmentDatagramsEvicted != flood-limit {
		t.Errorf("FragmentDatagramsEvicted = %d, want %d", s.FragmentDatagramsEvicted, flood-limit)
	}
	h.blocked(rawFrag(alice, dnsHost, policy.ProtoUDP, 0, 40, false, make([]byte, 8)))          // evicted
	h.passes(rawFrag(alice, dnsHost, policy.ProtoUDP, flood-1, 40, false, make([]byte, 8)))     // newest
	h.passes(rawFrag(alice, dnsHost, policy.ProtoUDP, flood-limit, 40, false, make([]byte, 8))) // oldest kept
}

// Path MTU signals about open flows pass both ways and are counted.
func TestPacketTooBigCounted(t *testing.T) {
	h := newHarness(t, fullPolicy(t))
	q := packettest.UDP(aliceP, dnsP, []byte("query"))
	h.passes(q)
	router := netip.MustParseAddr("10.20.0.1")
	h.returns(packettest.FragNeeded(router, alice, 1280, q))
	h.passes(packettest.FragNeeded(alice, dnsHost, 1380, packettest.UDP(dnsP, aliceP, make([]byte, 1400))))
	// Not about a flow: dropped, not counted.
	h.returnDropped(packettest.FragNeeded(router, alice, 1280, packettest.UDP(netip.AddrPortFrom(alice, 1), dnsP, nil)))
	// A port unreachable is an error, not a path MTU signal.
	h.returns(packettest.Unreachable(router, alice, q))
	s := h.a.Stats()
	if s.PacketTooBigToClients != 1 || s.PacketTooBigToApps != 1 {
		t.Errorf("PacketTooBigToClients, ToApps = %d, %d; want 1, 1", s.PacketTooBigToClients, s.PacketTooBigToApps)
	}
}

// rawFrag builds an IPv4 or IPv6 fragment of datagram id carrying data at
// offset off (bytes, a multiple of 8) of the fragmentable part.
func rawFrag(src, dst netip.Addr, proto policy.Proto, id uint32, off uint16, more bool, data []byte) []byte {
	if src.Is4() {
		b := packettest.IP(src, dst, proto, data, -1)
		binary.BigEndian.PutUint16(b[4:], uint16(id))
		v := off / 8
		if more {
			v |= 0x2000
		}
		binary.BigEndian.PutUint16(b[6:], v)
		return b
	}
	b := make([]byte, 48+len(data))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(data)))
	b[6], b[7] = 44, 64
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	b[40] = byte(proto)
	v := off &^ 7
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(b[42:], v)
	binary.BigEndian.PutUint32(b[44:], id)
	copy(b[48:], data)
	return b
}

// FuzzFragments drives the authorizer with fragments and whole datagrams
// from both sides, built from the fuzzer's bytes, and checks against a
// naive model that a later fragment passes only after a first fragment of
// its datagram passed the same way, never overlapping it, and that the
// table of datagrams stays within its bound.
func FuzzFragments(f *testing.F) {
	f.Add([]byte{0, 0, 1, 0, 20, 0, 8, 0, 1, 25, 10, 0})
	f.Add([]byte{1, 0, 1, 0, 20, 0, 9, 0, 1, 1, 10, 0, 2, 0, 1, 0, 20, 0})
	f.Add([]byte{4, 0, 2, 0, 40, 0, 12, 0, 2, 5, 8, 0, 13, 0, 2, 2, 8, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		const bound = 8
		a, err := New(newNopDev(1), Config{Policy: fullPolicy(t), MaxFragmentedDatagrams: bound, JanitorInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		type dgram struct {
			key        fragKey
			fromClient bool
		}
		firstEnd := map[dgram]uint16{} // the longest first fragment that passed
		// Endpoints: alice↔dns (udp, allowed), alice↔ehr (tcp, allowed),
		// alice↔lab (udp, denied), alice6↔ehr6 (tcp, allowed).
		type pair struct {
			client, app netip.AddrPort
			proto       policy.Proto
		}
		pairs := []pair{
			{aliceP, dnsP, policy.ProtoUDP},
			{aliceP, ehrP, policy.ProtoTCP},
			{aliceP, netip.AddrPortFrom(lab, 53), policy.ProtoUDP},
			{alice6P, ehr6P, policy.ProtoTCP},
		}
		for len(ops) >= 6 {
			op, id, off, n := ops[0], uint32(ops[1]&3), uint16(ops[2])*8, int(ops[3])
			more, portBump := ops[4]&1 != 0, uint16(ops[5]&1)
			ops = ops[6:]
			pr := pairs[int(op>>2)%len(pairs)]
			fromClient := op&1 == 0
			src, dst := netip.AddrPortFrom(pr.client.Addr(), pr.client.Port()+portBump), pr.app
			if !fromClient {
				src, dst = dst, src
			}
			var pkt []byte
			switch {
			case op&2 == 0 && off == 0: // a first fragment, or a whole datagram
				var l4 []byte
				if pr.proto == policy.ProtoTCP {
					l4 = packettest.TCP(src, dst, psh, 1, 1, make([]byte, n))
				} else {
					l4 = packettest.UDP(src, dst, make([]byte, n))
				}
				hl := 20
				if !src.Addr().Is4() {
					hl = 40
				}
				pkt = rawFrag(src.Addr(), dst.Addr(), pr.proto, id, 0, more, l4[hl:])
			default: // a later fragment (or, at offset 0, a headerless first)
				pkt = rawFrag(src.Addr(), dst.Addr(), pr.proto, id, off, more, make([]byte, n&^7+8))
			}
			p, perr := packet.Parse(pkt)
			var c batchCounts
			var passed bool
			if fromClient {
				passed = a.filterIn(pkt, a.clock.Load(), &c)
			} else {
				passed = a.filterOut(pkt, a.clock.Load(), &c)
			}
			if perr != nil {
				if passed {
					t.Fatalf("malformed packet passed: %v", perr)
				}
				continue
			}
			d := dgram{fragKeyOf(&p), fromClient}
			switch p.Frag {
			case packet.FragFirst:
				if passed {
					firstEnd[d] = max(firstEnd[d], p.FragLen)
				}
			case packet.FragLater:
				end, ok := firstEnd[d]
				if passed && !ok {
					t.Fatalf("later fragment passed with no first fragment before it: %+v", p)
				}
				if passed && p.FragOffset < end {
					t.Fatalf("later fragment at %d passed over a first fragment of %d bytes", p.FragOffset, end)
				}
			}
			if n := a.frags.len(); n > bound {
				t.Fatalf("%d datagrams remembered, bound %d", n, bound)
			}
		}
	})
}

// FuzzFragTable checks the datagram table against a naive model: a map of
// datagrams, each with the number of the insertion that created it; the
// table forgets a datagram when bound newer ones have been inserted after
// it, when a sweep finds it expired, and answers every lookup as the model
// does.
func FuzzFragTable(f *testing.F) {
	f.Add([]byte{0, 1, 0, 8, 1, 1, 9, 0, 2, 1, 0, 1})
	f.Add([]byte{0, 1, 0, 8, 0, 2, 0, 8, 0, 3, 0, 8, 0, 4, 0, 8, 0, 5, 0, 8, 1, 1, 1, 0, 3, 0, 0, 0, 1, 5, 16, 1})
	f.Fuzz(func(t *testing.T, ops []byte) {
		const bound, ttl = 4, 10
		tb := newFragTable(bound, ttl)
		flows := []*flow{{}, {}}
		type entry struct {
			seq        int
			f          *flow
			fromClient bool
			firstEnd   uint16
			expires    int64
		}
		model := map[fragKey]*entry{}
		var now int64
		seq := 0
		for len(ops) >= 4 {
			op, id, off, x := ops[0]%4, uint32(ops[1]%8), uint16(ops[2])*8, ops[3]
			ops = ops[4:]
			p := packet.Packet{Tuple: packet.Tuple{Src: alice, Dst: dnsHost, Proto: policy.ProtoUDP}, Version: 4, FragID: id, FragOffset: off, FragLen: uint16(x) * 8}
			fromClient := x&1 == 0
			switch op {
			case 0: // a first fragment passes
				fl := flows[int(x>>1)%2]
				got := tb.add(&p, fl, fromClient, now)
				k := fragKeyOf(&p)
				want := false
				if e, ok := model[k]; ok {
					if e.expires < now {
						e.firstEnd = 0
					}
					e.f, e.fromClient, e.firstEnd, e.expires = fl, fromClient, max(e.firstEnd, p.FragLen), now+ttl
				} else {
					for ok, e := range model {
						if e.seq == seq-bound {
							delete(model, ok)
							want = e.expires >= now
						}
					}
					model[k] = &entry{seq: seq, f: fl, fromClient: fromClient, firstEnd: p.FragLen, expires: now + ttl}
					seq++
				}
				if got != want {
					t.Fatalf("add evicted = %v, model %v", got, want)
				}
			case 1: // a later fragment
				gotF, got := tb.later(&p, fromClient, now)
				want, wantF := fragUnknown, (*flow)(nil)
				if e, ok := model[fragKeyOf(&p)]; ok && e.expires >= now && e.fromClient == fromClient {
					want = fragOverlap
					if p.FragOffset >= e.firstEnd {
						want, wantF = fragPass, e.f
					}
				}
				if got != want || gotF != wantF {
					t.Fatalf("later(id %d, offset %d) = %d, %p; model %d, %p", id, off, got, gotF, want, wantF)
				}
			case 2: // time passes
				now += int64(x % 16)
			case 3: // the janitor sweeps
				tb.sweep(now)
				for k, e := range model {
					if e.expires < now {
						delete(model, k)
					}
				}
			}
			if tb.len() != len(model) || len(model) > bound {
				t.Fatalf("table holds %d datagrams, model %d, bound %d", tb.len(), len(model), bound)
			}
		}
	})
}
