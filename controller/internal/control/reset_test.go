package control_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/control"
	"github.com/cordonhq/cordon/pkg/controlclient"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// A controller that died without closing its connections (kill -9) and
// came back with the same reset key tells an agent at its next keep-alive
// that its connection is gone (a stateless reset), so the agent reconnects
// at once instead of waiting out the idle timeout. Without the key the old
// connection hangs until then. The agent is the real one (controlclient):
// its keep-alive must be a packet the controller can answer with a reset,
// which QUIC's own PING packets are not.
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

		lost := make(chan error, 1)
		up := make(chan struct{}, 1)
		cc := controlclient.New(controlclient.Config{
			Addr: addr, TLS: tc, Hello: helloOf(ca.KindClient),
			KeepAlive: 100 * time.Millisecond, IdleTimeout: 3 * time.Second,
			OnFrame: func(*controlproto.Frame) error {
				select {
				case up <- struct{}{}:
				default:
				}
				return nil
			},
			Logger: slog.New(&lostHandler{lost: lost}),
		})
		ctx, stopAgent := context.WithCancel(h.ctx)
		done := make(chan struct{})
		go func() { defer close(done); cc.Run(ctx) }()
		select {
		case <-up:
		case <-time.After(waitTimeout):
			t.Fatal("the agent never got its map")
		}

		// Let the map's ack be acknowledged first: a retransmission of
		// it would draw the reset even from an agent that sends no
		// keep-alives (a loopback round trip is well under this).
		time.Sleep(300 * time.Millisecond)
		// kill -9: the socket goes, nothing is sent on the connection.
		pc1.Close()
		pc2, err := net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		stop2 := serve(pc2)
		var cause error
		select {
		case cause = <-lost:
		case <-time.After(waitTimeout):
			t.Fatal("the old connection never ended")
		}
		var reset *quic.StatelessResetError
		if got := errors.As(cause, &reset); got != withKey {
			t.Errorf("reset key %v: connection ended with %v; want a stateless reset: %v", withKey, cause, withKey)
		}
		stopAgent()
		<-done
		stop1()
		stop2()
		pc2.Close()
	}
}

// lostHandler passes on the error of the agent's first "connection lost"
// log record.
type lostHandler struct{ lost chan error }

func (h *lostHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *lostHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *lostHandler) WithGroup(string) slog.Handler            { return h }
func (h *lostHandler) Handle(_ context.Context, r slog.Record) error {
	if !strings.HasPrefix(r.Message, "control connection lost") {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && a.Key == "err" {
			select {
			case h.lost <- err:
			default:
			}
			return false
		}
		return true
	})
	return nil
}
