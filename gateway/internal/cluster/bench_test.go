package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Figures for docs/benchmarks.md, in-process gateways on loopback:
//
//	go test -run XXX -bench . -benchtime 5x ./gateway/internal/cluster/
//
// Each reports its own time (ms) as a metric; ns/op includes setup.

var sizes = []int{3, 20}

// Convergence: n gateways get their first map at once; until each sees
// every other alive.
func BenchmarkConverge(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprintf("gateways=%d", n), func(b *testing.B) {
			var total time.Duration
			for b.Loop() {
				w := newWorld(b)
				var nodes []*node
				for i := range n {
					nodes = append(nodes, w.add(fmt.Sprintf("gw%02d", i), nil))
				}
				v := w.view("s1", nodes...)
				start := time.Now()
				w.update(v, nodes...)
				total += waitFor(b, 30*time.Second, "converge", func() bool { return allSee(nodes, controlproto.MemberAlive, nodes...) })
				_ = start
				for _, nd := range nodes {
					nd.c.Close()
				}
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-converge")
		})
	}
}

// Dead detection: a member is closed without a goodbye (as kill -9); until
// every other sees it dead.
func BenchmarkDeadDetection(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprintf("gateways=%d", n), func(b *testing.B) {
			w := newWorld(b)
			nodes := w.form(n - 1)
			var total, worst time.Duration
			i := 0
			for b.Loop() {
				i++
				x := w.add(fmt.Sprintf("x%02d", i), nil)
				all := append(append([]*node(nil), nodes...), x)
				w.update(w.view("s1", all...), all...)
				waitFor(b, 30*time.Second, "join", func() bool { return allSee(all, controlproto.MemberAlive, all...) })
				x.c.Close()
				d := waitFor(b, 30*time.Second, "dead", func() bool { return allSee(nodes, controlproto.MemberDead, x) })
				total += d
				worst = max(worst, d)
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-dead-mean")
			b.ReportMetric(float64(worst.Milliseconds()), "ms-dead-max")
		})
	}
}

// Revocation: a notice handed to one gateway; until every other acted on
// it.
func BenchmarkRevocation(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprintf("gateways=%d", n), func(b *testing.B) {
			w := newWorld(b)
			nodes := w.form(n)
			var total, worst time.Duration
			i := 0
			for b.Loop() {
				i++
				id := fmt.Sprintf("n%d", i)
				r, err := controlproto.SignRevocation(w.ctl, controlproto.RevocationNotice{ID: id, DeviceID: "d", IssuedAt: w.clock.Now()})
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				if err := nodes[0].c.Revoke(r); err != nil {
					b.Fatal(err)
				}
				var last time.Duration
				for _, nd := range nodes {
					for got := false; !got; {
						select {
						case x := <-nd.notices:
							got = x.ID == id
						case <-time.After(10 * time.Second):
							b.Fatalf("%s: notice %s not received", nd.id, id)
						}
					}
					last = max(last, time.Since(start))
				}
				total += last
				worst = max(worst, last)
			}
			b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms-all-notified-mean")
			b.ReportMetric(float64(worst.Microseconds())/1000, "ms-all-notified-max")
		})
	}
}

// Gossip bandwidth of a steady cluster (probes and acks, no payload): UDP
// bytes each gateway sends per second.
func BenchmarkGossipBandwidth(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprintf("gateways=%d", n), func(b *testing.B) {
			w := newWorld(b)
			nodes := w.form(n)
			time.Sleep(2 * time.Second) // past the join traffic
			var sent0 uint64
			for _, nd := range nodes {
				sent0 += nd.c.Stats().PacketBytesSent
			}
			start := time.Now()
			for b.Loop() {
				time.Sleep(time.Second)
			}
			var sent uint64
			for _, nd := range nodes {
				sent += nd.c.Stats().PacketBytesSent
			}
			b.ReportMetric(float64(sent-sent0)/float64(n)/time.Since(start).Seconds(), "bytes/s-per-gateway")
		})
	}
}
