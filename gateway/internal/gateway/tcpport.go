package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/cordonhq/cordon/gateway/internal/tlsport"
	"github.com/cordonhq/cordon/pkg/agentstate"
	"github.com/cordonhq/cordon/pkg/wgstream"
)

// The TCP path (--tcp-listen). The WireGuard device's bind is a
// wgstream.Bind around the ordinary UDP bind; the TCP port (package
// tlsport) hands it every stream whose TLS handshake completed. Replies go
// back down the stream a client's packets last came from (WireGuard's
// roaming), and to UDP again once the client moves back.

// streamIdle closes a stream that carried nothing for this long: clients
// send a keepalive every 25 s.
const streamIdle = 2 * time.Minute

// tcpPath is the TCP port, if configured (ln nil: UDP only).
type tcpPath struct {
	ln       net.Listener
	wgBind   *wgstream.Bind
	port     uint16 // listened on; 0: none
	endpoint string // host:port clients dial (Hello.TCPEndpoint)
	srv      *tlsport.Port
}

// listenTCP opens --tcp-listen. The endpoint clients dial is the host of
// --endpoint with the port listened on.
func listenTCP(cfg Config, st *agentstate.State, log *slog.Logger) (*tcpPath, error) {
	t := &tcpPath{}
	if cfg.TCPListen == "" {
		return t, nil
	}
	host, _, err := net.SplitHostPort(cfg.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("--endpoint %q: want HOST:PORT: %w", cfg.Endpoint, err)
	}
	tlsConf, err := st.ServerTLS(tlsport.ALPN)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.TCPListen)
	if err != nil {
		return nil, fmt.Errorf("--tcp-listen %s (a port under 1024 needs CAP_NET_BIND_SERVICE): %w", cfg.TCPListen, err)
	}
	if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil {
		t.port = ap.Port()
	}
	t.ln = ln
	t.endpoint = net.JoinHostPort(host, strconv.Itoa(int(t.port)))
	t.wgBind = wgstream.NewBind(nil, wgstream.Options{IdleTimeout: streamIdle})
	t.srv, err = tlsport.New(tlsport.Config{TLS: tlsConf, Streams: t.wgBind, Logger: log.With("component", "tcpport")})
	if err != nil {
		ln.Close()
		return nil, err
	}
	log.Info("TCP path listening: WireGuard over TLS for UDP-blocked clients", "listen", ln.Addr().String(), "endpoint", t.endpoint)
	return t, nil
}

// bind is the WireGuard device's bind: nil (the default UDP bind) without
// a TCP port.
func (t *tcpPath) bind() conn.Bind {
	if t.wgBind == nil {
		return nil
	}
	return t.wgBind
}

// serve accepts streams until ctx ends.
func (t *tcpPath) serve(ctx context.Context, log *slog.Logger) {
	if err := t.srv.Serve(ctx, t.ln); err != nil {
		log.Error("TCP path stopped; clients whose UDP is blocked cannot connect", "err", err)
	}
}

func (t *tcpPath) close() {
	if t.ln != nil {
		t.ln.Close()
	}
}

// stats is the port's counters and the bind's framing drops, for metrics
// (zero without a TCP port).
func (t *tcpPath) stats() (tlsport.Stats, uint64) {
	if t == nil || t.srv == nil {
		return tlsport.Stats{}, 0
	}
	return t.srv.Stats(), t.wgBind.Drops.Load()
}
