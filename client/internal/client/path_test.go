package client

import (
	"log/slog"
	"testing"
	"time"

	"github.com/cordonhq/cordon/client/internal/pathsel"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/wgstream"
)

// TestPathsFallBackAndReturn drives one gateway's path from the bind's
// counters with injected times: initiations unanswered over UDP for
// pathsel.FallbackAfter move it to the TLS endpoint; probes copied to UDP
// and answered move it back; a gateway without a TCP endpoint stays on
// UDP whatever happens.
func TestPathsFallBackAndReturn(t *testing.T) {
	p := newPaths(wgstream.NewBind(nil, wgstream.Options{}), slog.New(slog.DiscardHandler))
	gw := controlproto.ClientGateway{GatewayID: "gw-1", Endpoint: "192.0.2.1:51820", TCPEndpoint: "192.0.2.1:443"}
	udpOnly := controlproto.ClientGateway{GatewayID: "gw-2", Endpoint: "192.0.2.2:51820"}
	m := &controlproto.ClientMap{Gateways: []controlproto.ClientGateway{gw, udpOnly}}
	p.sync(m)
	st := p.gws["gw-1"].stats
	if st == nil || p.gws["gw-2"].stats != nil {
		t.Fatal("watching: want gw-1 (offers TCP) only")
	}
	if ep := p.endpoint(gw); ep != gw.Endpoint {
		t.Fatalf("first endpoint %q, want UDP %q", ep, gw.Endpoint)
	}

	t0 := time.Unix(1_000_000, 0)
	st.Initiations.Add(1) // a handshake initiation goes out over UDP
	for _, d := range []time.Duration{0, time.Second, pathsel.FallbackAfter - time.Millisecond} {
		if c := p.tick(t0.Add(d)); len(c) != 0 {
			t.Fatalf("moved after %v: %+v", d, c)
		}
	}
	c := p.tick(t0.Add(pathsel.FallbackAfter))
	if len(c) != 1 || c[0].id != "gw-1" || c[0].path != pathsel.TCP || c[0].tcp != "192.0.2.1:443" {
		t.Fatalf("after %v without an answer: changes %+v, want gw-1 to tcp", pathsel.FallbackAfter, c)
	}
	if ep := p.endpoint(gw); ep != "tls://192.0.2.1:443" {
		t.Fatalf("endpoint on TCP %q", ep)
	}
	if id, ok := p.gatewayFor("192.0.2.1:443"); !ok || id != "gw-1" {
		t.Fatalf("gatewayFor = %q, %v", id, ok)
	}

	// On TCP: one probe answered is not enough, two are.
	t1 := t0.Add(pathsel.FallbackAfter)
	for i := 1; i <= pathsel.ReturnAfterOK; i++ {
		st.Probes.Add(1)
		st.Received.Add(3)
		c = p.tick(t1.Add(time.Duration(i) * time.Second))
		if back := len(c) == 1 && c[0].path == pathsel.UDP; back != (i == pathsel.ReturnAfterOK) {
			t.Fatalf("after %d answered probes: changes %+v", i, c)
		}
	}
	if ep := p.endpoint(gw); ep != gw.Endpoint {
		t.Fatalf("endpoint back on UDP %q", ep)
	}
	if u, tc := p.switchCounts(); u != 1 || tc != 1 {
		t.Fatalf("switches to udp %d, to tcp %d; want 1 and 1", u, tc)
	}

	// A DNS probe unanswered counts on UDP too.
	t2 := t1.Add(time.Minute)
	p.probeSent("gw-1", t2)
	p.probeSent("gw-2", t2)
	if c = p.tick(t2.Add(pathsel.FallbackAfter)); len(c) != 1 || c[0].id != "gw-1" {
		t.Fatalf("after an unanswered DNS probe: %+v, want gw-1 to tcp (gw-2 offers no TCP)", c)
	}
	if cur := p.current(); cur["gw-1"] != pathsel.TCP || cur["gw-2"] != pathsel.UDP {
		t.Fatalf("current %v", cur)
	}

	// The map withdraws the TCP endpoint: back to UDP at once, unwatched.
	gw.TCPEndpoint = ""
	p.sync(&controlproto.ClientMap{Gateways: []controlproto.ClientGateway{gw}})
	if c = p.tick(t2.Add(time.Hour)); len(c) != 1 || c[0].path != pathsel.UDP {
		t.Fatalf("after the TCP endpoint was withdrawn: %+v, want back to udp", c)
	}
	if p.gws["gw-1"].stats != nil || p.gws["gw-2"] != nil {
		t.Fatal("still watching a gateway without TCP, or keeping one no longer in the map")
	}
}
