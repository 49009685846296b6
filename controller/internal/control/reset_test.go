package control_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/cordonhq/cordon/controller/internal/control"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// A controller that died without closing its connections (kill -9) and
// came back with the same reset key tells an agent at its next packet that
// its connection is gone (a stateless reset), so the agent reconnects at
// once instead of waiting out the idle timeout. Without the key the old
// connection hangs until then.
func TestRestartedControllerResetsOldConnections(t *testing.T) {
	for _, withKey := range []bool{true, false} {
		h := newHarness(t)
		h.world(t)
		_, tc := h.enrollDevice(t, "dev-reset", "nurse")
		cert, err := h.ca.ServerCertificate([]string{"127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		var key *quic.StatelessResetKey
		if withKey {
			key = &quic.StatelessResetKey{1, 2, 3}
		}
		serve := func(pc net.PacketConn) context.CancelFunc {
			srv := control.New(control.Config{Store: h.store, CA: h.ca, ServerCert: cert, ResetKey: key, Logger: slog.New(slog.DiscardHandler)})
			ctx, cancel := context.WithCancel(h.ctx)
			go srv.Serve(ctx, pc)
			return cancel
		}
		pc1, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc1.LocalAddr().String()
		stop1 := serve(pc1)

		tc = tc.Clone()
		tc.ServerName = "127.0.0.1"
		ctx, cancel := context.WithTimeout(h.ctx, waitTimeout)
		conn, err := quic.DialAddr(ctx, addr, tc, &quic.Config{MaxIdleTimeout: 3 * time.Second, KeepAlivePeriod: 100 * time.Millisecond})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		s, err := conn.OpenStreamSync(h.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := controlproto.WriteFrame(s, &controlproto.Frame{Type: controlproto.TypeHello, Hello: &controlproto.Hello{
			Kind: controlproto.KindClient, CapabilityVersion: controlproto.CapabilityVersion,
		}}); err != nil {
			t.Fatal(err)
		}
		if _, err := controlproto.ReadFrame(s); err != nil {
			t.Fatalf("first map: %v", err)
		}

		// kill -9: the socket goes, nothing is sent on the connection.
		pc1.Close()
		pc2, err := net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		stop2 := serve(pc2)
		select {
		case <-conn.Context().Done():
		case <-time.After(waitTimeout):
			t.Fatal("the old connection never ended")
		}
		took := time.Since(start)
		var reset *quic.StatelessResetError
		gotReset := errors.As(context.Cause(conn.Context()), &reset)
		if gotReset != withKey {
			t.Errorf("reset key %v: connection ended after %v with %v; want a stateless reset: %v", withKey, took, context.Cause(conn.Context()), withKey)
		}
		if withKey && took > time.Second {
			t.Errorf("the reset took %v, want about one keep-alive (100 ms)", took)
		}
		stop1()
		stop2()
		pc2.Close()
	}
}
