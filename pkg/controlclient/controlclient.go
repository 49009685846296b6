// Package controlclient is the agent side of the control channel: it holds
// one QUIC connection to the controller (mutual TLS), says hello, hands every
// frame the controller pushes to the agent, sends the agent's frames up, and
// reconnects with backoff when the connection drops. Between connections the
// agent keeps its last map (fail static) until its own limits expire.
//
// Map deltas (capability 6) stop here: the client keeps the last map the
// agent accepted on this connection, applies each delta to it whole or not
// at all, and hands the agent the resulting whole map, so an agent has one
// way to take a map. A delta that does not start from that map (a gap) or
// does not fit it is acknowledged with Ack.Resync, and the controller
// sends the whole map.
package controlclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// ErrRevoked is returned by Run when the controller says this agent is no
// longer enrolled; retrying would not help.
var ErrRevoked = errors.New("controller revoked this agent's enrollment")

// codeRevoked is the controller's QUIC application error code for it.
const codeRevoked quic.ApplicationErrorCode = 1

// Config configures a Client.
type Config struct {
	Addr  string // controller host:port (UDP)
	TLS   *tls.Config
	Hello controlproto.Hello
	// OnHello, if set, fills in the parts of Hello that change between
	// connections (a gateway's held audit log size) before each is sent.
	OnHello func(*controlproto.Hello)
	// OnFrame applies one pushed frame; it is called sequentially from one
	// goroutine. For maps, its result is acknowledged to the controller
	// (an error means the agent kept its previous map). It gets whole maps
	// only (TypeGatewayMap, TypeClientMap), never deltas, and must treat
	// them as immutable: the client keeps the map to apply the next delta
	// to.
	OnFrame func(*controlproto.Frame) error
	Logger  *slog.Logger
	// OnState, if set, is told each time the connection goes up or down.
	OnState func(connected bool)
	// Renewer, if set, renews the agent's certificate over the channel
	// (certrenew.Renewer): it is asked on every connect and then when it
	// says, and gets every Certificate frame (OnFrame does not). TLS must
	// read the certificate per handshake (agentstate.State.ClientTLS does)
	// for the next connection to present the renewed one.
	Renewer Renewer
	// KeepAlive and IdleTimeout default to controlproto's (tests shorten
	// them).
	KeepAlive, IdleTimeout time.Duration
}

// Renewer keeps the agent's certificate fresh; see package certrenew.
type Renewer interface {
	// Renewal returns a Renew frame to send now, or nil, and how long to
	// wait before asking again; connected is true on the first call of a
	// new connection.
	Renewal(connected bool) (*controlproto.Frame, time.Duration)
	// Renewed applies the controller's answer.
	Renewed(*controlproto.Certificate) error
	// Expired returns an error saying what to do when the certificate has
	// expired (the controller refuses the handshake then), nil otherwise.
	Expired() error
}

// Client maintains the control connection.
type Client struct {
	cfg       Config
	log       *slog.Logger
	out       chan *controlproto.Frame
	connected atomic.Bool
	dropped   atomic.Uint64
}

// New returns a Client; call Run.
func New(cfg Config) *Client {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = controlproto.KeepAlive
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = controlproto.IdleTimeout
	}
	if cfg.TLS.ServerName == "" {
		if host, _, err := net.SplitHostPort(cfg.Addr); err == nil {
			cfg.TLS = cfg.TLS.Clone()
			cfg.TLS.ServerName = host
		}
	}
	return &Client{cfg: cfg, log: cfg.Logger, out: make(chan *controlproto.Frame, 256)}
}

// Send queues a frame for the controller without blocking; when the queue
// is full (controller unreachable for long) the frame is dropped, counted,
// and false returned.
func (c *Client) Send(f *controlproto.Frame) bool {
	select {
	case c.out <- f:
		return true
	default:
		c.dropped.Add(1)
		return false
	}
}

// Discard removes the queued frames that match selects (not yet handed to
// a connection) and returns how many; the others stay queued, in order.
// Call it while no connection is up (from OnState(false)): a frame queued
// for the connection that went down would otherwise go first on the next.
func (c *Client) Discard(match func(*controlproto.Frame) bool) int {
	var keep []*controlproto.Frame
	n := 0
	for drained := false; !drained; {
		select {
		case f := <-c.out:
			if match(f) {
				n++
			} else {
				keep = append(keep, f)
			}
		default:
			drained = true
		}
	}
	for _, f := range keep {
		c.Send(f) // room for them was just made; if not, dropped and counted
	}
	return n
}

// Dropped returns how many frames Send had to drop.
func (c *Client) Dropped() uint64 { return c.dropped.Load() }

// Connected reports whether the control connection is up.
func (c *Client) Connected() bool { return c.connected.Load() }

// Run connects and serves until ctx ends (returns nil) or the controller
// revokes the agent (returns ErrRevoked).
func (c *Client) Run(ctx context.Context) error {
	backoff := 250 * time.Millisecond
	for {
		start := time.Now()
		err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrRevoked) {
			return err
		}
		if time.Since(start) > 30*time.Second {
			backoff = 250 * time.Millisecond
		}
		if xerr := c.expired(); xerr != nil {
			// Not silent: retrying cannot help until someone acts.
			c.log.Error("control connection refused: "+xerr.Error(), "err", err, "retry_in", backoff)
		} else {
			c.log.Warn("control connection lost; retrying", "err", err, "in", backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 15*time.Second)
	}
}

func (c *Client) expired() error {
	if c.cfg.Renewer == nil {
		return nil
	}
	return c.cfg.Renewer.Expired()
}

func (c *Client) setConnected(v bool) {
	c.connected.Store(v)
	if c.cfg.OnState != nil {
		c.cfg.OnState(v)
	}
}

func (c *Client) session(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	// The writer sends ping frames, whose packets are big enough for a
	// restarted controller to answer with a stateless reset (capability
	// 7). QUIC's own PINGs, at half the idle timeout, fire only when no
	// answer came for that long: to a controller older than 7, which gets
	// no ping frames.
	conn, err := quic.DialAddr(dctx, c.cfg.Addr, c.cfg.TLS, &quic.Config{
		MaxIdleTimeout:  c.cfg.IdleTimeout,
		KeepAlivePeriod: c.cfg.IdleTimeout / 2,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("dial controller %s: %w", c.cfg.Addr, err)
	}
	defer conn.CloseWithError(0, "")
	// Reads on the stream do not watch ctx: closing the connection is what
	// ends a session when Run's context ends.
	stopClose := context.AfterFunc(ctx, func() { conn.CloseWithError(0, "agent stopping") })
	defer stopClose()
	stream, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return revokedOr(fmt.Errorf("open control stream: %w", err))
	}
	hello := c.cfg.Hello
	hello.CapabilityVersion = controlproto.CapabilityVersion
	if c.cfg.OnHello != nil {
		c.cfg.OnHello(&hello)
	}
	if err := controlproto.WriteFrame(stream, &controlproto.Frame{Type: controlproto.TypeHello, Hello: &hello}); err != nil {
		return revokedOr(fmt.Errorf("send hello: %w", err))
	}
	c.setConnected(true)
	defer c.setConnected(false)
	c.log.Info("control connection up", "controller", c.cfg.Addr)

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var pings atomic.Bool // the controller takes ping frames
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		defer stop()
		// A ping when nothing else was sent for KeepAlive, once the
		// controller said it takes them.
		idle := time.NewTimer(c.cfg.KeepAlive)
		defer idle.Stop()
		ping := &controlproto.Frame{Type: controlproto.TypePing}
		for {
			var f *controlproto.Frame
			select {
			case <-sctx.Done():
				return
			case <-conn.Context().Done():
				return
			case f = <-c.out:
			case <-idle.C:
				if !pings.Load() {
					idle.Reset(c.cfg.KeepAlive)
					continue
				}
				f = ping
			}
			if err := controlproto.WriteFrame(stream, f); err != nil {
				c.log.Warn("send to controller", "err", err)
				conn.CloseWithError(0, "write failed")
				return
			}
			idle.Reset(c.cfg.KeepAlive)
		}
	})
	var maps mapState // a delta applies only to a map of this connection
	renewed := make(chan struct{}, 1)
	if r := c.cfg.Renewer; r != nil {
		wg.Go(func() { c.renewLoop(sctx, conn, r, renewed) })
	}
	for {
		f, err := controlproto.ReadFrame(stream)
		if err != nil {
			stop()
			return revokedOr(fmt.Errorf("read control frame: %w", err))
		}
		if f.Type == controlproto.TypeError {
			c.log.Warn("controller reported an error", "error", f.Error)
			continue
		}
		if f.Type == controlproto.TypeCertificate && c.cfg.Renewer != nil {
			if err := c.cfg.Renewer.Renewed(f.Certificate); err != nil {
				c.log.Error("certificate renewal", "err", err)
			}
			select {
			case renewed <- struct{}{}:
			default:
			}
			continue
		}
		if f.Capability >= controlproto.MinPingCapability {
			pings.Store(true)
		}
		if ack := maps.handle(f, c.cfg.OnFrame, c.log); ack != nil {
			c.Send(&controlproto.Frame{Type: controlproto.TypeAck, Ack: ack})
		}
	}
}

// mapState is the last map the agent accepted on this connection: what the
// next delta applies to.
type mapState struct{ controlproto.Maps }

// handle passes f to apply, a delta as the whole map it makes, and returns
// the ack to send for a map or delta (nil for other frames).
func (s *mapState) handle(f *controlproto.Frame, apply func(*controlproto.Frame) error, log *slog.Logger) *controlproto.Ack {
	switch f.Type {
	case controlproto.TypeGatewayDelta, controlproto.TypeClientDelta:
		full, to, err := s.Expand(f)
		if err != nil {
			log.Warn("map delta not applicable; asking for the whole map", "revision", to, "err", err)
			return &controlproto.Ack{Revision: to, Error: err.Error(), Resync: true}
		}
		f = full
	}
	rev, isMap := f.MapRevision()
	err := apply(f)
	if !isMap {
		return nil
	}
	if err != nil {
		return &controlproto.Ack{Revision: rev, Error: err.Error()}
	}
	s.Remember(f)
	return &controlproto.Ack{Revision: rev}
}

// renewLoop asks r whether the certificate is due, on connect and then
// when r says or an answer arrived, and sends its requests.
func (c *Client) renewLoop(ctx context.Context, conn *quic.Conn, r Renewer, renewed <-chan struct{}) {
	connected := true
	for {
		f, wait := r.Renewal(connected)
		connected = false
		if f != nil && !c.Send(f) {
			c.log.Warn("certificate renewal request dropped: send queue full")
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-conn.Context().Done():
		case <-renewed:
		case <-t.C:
		}
		t.Stop()
		if ctx.Err() != nil || conn.Context().Err() != nil {
			return
		}
	}
}

func revokedOr(err error) error {
	var appErr *quic.ApplicationError
	if errors.As(err, &appErr) && appErr.Remote && appErr.ErrorCode == codeRevoked {
		return fmt.Errorf("%w: %s", ErrRevoked, appErr.ErrorMessage)
	}
	return err
}
