package flow

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cordonhq/cordon/pkg/packet/packettest"
	"github.com/cordonhq/cordon/pkg/policy"
)

// benchPolicy: 10,000 devices, 1,000 apps (one /32 each, 10 rules per
// device), alice among them with a rule for the whole segment.
func benchPolicy(b *testing.B) *policy.Compiled {
	b.Helper()
	var rules []policy.Rule
	for i := range 1000 {
		rules = append(rules, policy.Rule{
			ID:    policy.RuleID(fmt.Sprintf("r-%d", i)),
			App:   fmt.Sprintf("app-%d", i),
			Dst:   []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 30, byte(i >> 8), byte(i)}), 32)},
			Proto: policy.ProtoTCP,
			Ports: []policy.PortRange{{First: 443, Last: 443}},
		})
	}
	rules = append(rules, policy.Rule{ID: "r-seg", App: "seg", Dst: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")}, Proto: policy.ProtoTCP})
	peers := []policy.Peer{{DeviceID: "dev-alice", User: "alice", Addr: alice, Rules: []policy.RuleID{"r-seg", "r-1", "r-2"}}}
	for i := range 10000 {
		ids := make([]policy.RuleID, 10)
		for j := range ids {
			ids[j] = policy.RuleID(fmt.Sprintf("r-%d", (i+j*97)%1000))
		}
		peers = append(peers, policy.Peer{DeviceID: fmt.Sprintf("dev-%d", i), Addr: netip.AddrFrom4([4]byte{100, 65, byte(i >> 8), byte(i)}), Rules: ids})
	}
	c, err := policy.Compile(rules, peers)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkNewFlow measures a new flow: parse, miss in the table, Decide,
// insert (no event consumer configured).
func BenchmarkNewFlow(b *testing.B) { benchNewFlow(b, nil) }

// BenchmarkNewFlowObserved is BenchmarkNewFlow with the decision latency
// histogram the gateway serves (Config.ObserveDecision): compare the two
// in one run.
func BenchmarkNewFlowObserved(b *testing.B) {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "bench_decision_seconds", Buckets: prometheus.ExponentialBuckets(1e-7, 4, 10)})
	benchNewFlow(b, func(d time.Duration) { h.Observe(d.Seconds()) })
}

func benchNewFlow(b *testing.B, observe func(time.Duration)) {
	d := newNopDev(1)
	a, err := New(d, Config{Policy: benchPolicy(b), ObserveDecision: observe})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	pkt := tcp(aliceP, ehrP, syn, 1, 0, "")
	bufs := [][]byte{pkt}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i&(1<<20-1) == 0 && i > 0 {
			b.StopTimer() // keep the table at most 1M flows
			a.SetPolicy(policy.Empty)
			a.SetPolicy(benchPolicy(b))
			b.StartTimer()
		}
		// Distinct tuple per iteration; Parse does not check checksums.
		binary.BigEndian.PutUint16(pkt[20:], uint16(i))
		pkt[18], pkt[19] = byte(i>>16), byte(i>>24)
		a.Write(bufs, 0)
	}
	b.StopTimer()
	if s := a.Stats(); s.PacketsAllowed != uint64(b.N) {
		b.Fatalf("allowed %d of %d", s.PacketsAllowed, b.N)
	}
}

func establishedBench(b *testing.B) (*Authorizer, *nopDev) {
	d := newNopDev(1)
	a, err := New(d, Config{Policy: benchPolicy(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.Close() })
	// 100,000 other flows in the table.
	other := tcp(aliceP, ehrP, syn, 1, 0, "")
	for i := range 100000 {
		binary.BigEndian.PutUint16(other[20:], uint16(i))
		other[18] = byte(i >> 16)
		other[19] = 99
		a.Write([][]byte{other}, 0)
	}
	a.Write([][]byte{tcp(aliceP, ehrP, syn, 1000, 0, "")}, 0)
	d.in <- tcp(ehrP, aliceP, synack, 5000, 1001, "")
	a.Read([][]byte{make([]byte, 1500)}, []int{0}, 0)
	return a, d
}

// BenchmarkEstablishedWrite measures one packet of an established flow,
// client → app, through Write (batch of one).
func BenchmarkEstablishedWrite(b *testing.B) {
	a, _ := establishedBench(b)
	bufs := [][]byte{packettest.TCP(aliceP, ehrP, psh, 1001, 5001, make([]byte, 1200))}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		a.Write(bufs, 0)
	}
}

// BenchmarkEstablishedWriteBatch128 is the same with wireguard-go's batch
// size on Linux (ns/op is per batch of 128).
func BenchmarkEstablishedWriteBatch128(b *testing.B) {
	a, _ := establishedBench(b)
	bufs := make([][]byte, 128)
	for i := range bufs {
		bufs[i] = packettest.TCP(aliceP, ehrP, psh, 1001+uint32(i)*1200, 5001, make([]byte, 1200))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		a.Write(bufs, 0)
	}
}

// BenchmarkEstablishedWriteParallel runs one established flow per
// goroutine, as wireguard-go does with one receiver goroutine per peer.
func BenchmarkEstablishedWriteParallel(b *testing.B) {
	a, _ := establishedBench(b)
	var port atomic.Uint32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		src := netip.AddrPortFrom(alice, 20000+uint16(port.Add(1)))
		a.Write([][]byte{tcp(src, ehrP, syn, 1, 0, "")}, 0)
		bufs := [][]byte{packettest.TCP(src, ehrP, psh, 2, 1, make([]byte, 1200))}
		for pb.Next() {
			a.Write(bufs, 0)
		}
	})
}

// BenchmarkEstablishedFilterOut is the return-path decision alone: parse
// and one table lookup, without the reader hand-off.
func BenchmarkEstablishedFilterOut(b *testing.B) {
	a, _ := establishedBench(b)
	pkt := packettest.TCP(ehrP, aliceP, psh, 5001, 1001, make([]byte, 1200))
	var c batchCounts
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if !a.filterOut(pkt, 1, &c) {
			b.Fatal("dropped")
		}
	}
}

// BenchmarkEstablishedRead is the whole return path with a device of batch
// size one: reader goroutine, hand-off, filter, copy.
func BenchmarkEstablishedRead(b *testing.B) {
	a, d := establishedBench(b)
	pkt := packettest.TCP(ehrP, aliceP, psh, 5001, 1001, make([]byte, 1200))
	rb, sizes := [][]byte{make([]byte, 1500)}, []int{0}
	go func() {
		for range b.N {
			d.in <- pkt
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if n, err := a.Read(rb, sizes, 0); n != 1 || err != nil {
			b.Fatal(n, err)
		}
	}
}

func BenchmarkDecide(b *testing.B) {
	pol := benchPolicy(b)
	dst := netip.MustParseAddr("10.30.0.1")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		pol.Decide(alice, dst, policy.ProtoTCP, 443)
	}
}

// BenchmarkFragmentedDatagram is a 4,000-byte datagram of an established
// flow in three fragments, client → app, written as one batch: the first
// fragment is decided by its flow and remembered, the two later ones pass
// by its datagram (ns/op is per datagram). Each datagram has its own IP
// identification, so the table of datagrams keeps turning over.
func BenchmarkFragmentedDatagram(b *testing.B) {
	a, _ := establishedBench(b)
	bufs := packettest.Fragment(packettest.TCP(aliceP, ehrP, psh, 1001, 5001, make([]byte, 4000)), 1400, 0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for _, f := range bufs {
			binary.BigEndian.PutUint16(f[4:], uint16(i))
		}
		a.Write(bufs, 0)
	}
	b.StopTimer()
	if s := a.Stats(); s.FragmentsPassed != 2*uint64(b.N) {
		b.Fatalf("passed %d later fragments, want %d", s.FragmentsPassed, 2*b.N)
	}
}
