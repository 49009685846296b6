// Package tlsport is the gateway's TCP port for UDP-blocked clients
// (--tcp-listen, usually :443): it accepts TCP connections, completes the
// TLS handshake with the gateway's certificate, and hands each connection
// to the WireGuard device's bind (wgstream.Bind), which carries its frames
// into the same wireguard-go device as UDP. The port serves nothing else:
// a host that is not enrolled can complete TLS, but every frame it sends
// must be WireGuard-shaped (else the stream is dropped and counted) and
// then authenticate to wireguard-go like a UDP packet would.
//
// Bounds, each refusal counted: streams per source address (a source
// behind one NAT may carry several devices, so more than one), streams
// in all, and the time a connection may take to finish its handshake.
//
// Ownership: Serve owns the accept loop and one goroutine per handshake in
// progress, and returns after they all ended. A stream handed to the bind
// is the bind's; its slot is freed when the bind closes it.
package tlsport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cordonhq/cordon/pkg/wgstream"
)

// ALPN is the application protocol of the stream.
const ALPN = wgstream.ALPN

// Defaults for the bounds.
const (
	DefaultPerSource        = 16
	DefaultMaxStreams       = 4096
	DefaultHandshakeTimeout = 5 * time.Second
)

// Streams is where accepted streams go (*wgstream.Bind). AddStream owns c
// from the call on, also when it fails.
type Streams interface {
	AddStream(c net.Conn) error
}

// Config configures a port.
type Config struct {
	TLS              *tls.Config // the gateway's certificate; TLS 1.3
	Streams          Streams
	PerSource        int           // 0: DefaultPerSource
	MaxStreams       int           // 0: DefaultMaxStreams
	HandshakeTimeout time.Duration // 0: DefaultHandshakeTimeout
	Logger           *slog.Logger
}

// Stats counts what the port did.
type Stats struct {
	Accepted        uint64 // streams handed to the bind
	Open            int    // streams open (handshaking or carrying frames)
	RefusedSource   uint64 // over the per-source bound
	RefusedFull     uint64 // over the total bound
	HandshakeFailed uint64 // TLS failed or timed out
}

// Port accepts streams.
type Port struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	open     int
	bySource map[netip.Addr]int

	accepted, refusedSource, refusedFull, handshakeFailed atomic.Uint64
}

// New returns a port; Serve runs it.
func New(cfg Config) (*Port, error) {
	if cfg.TLS == nil || cfg.Streams == nil {
		return nil, errors.New("tlsport: TLS and Streams are required")
	}
	if cfg.PerSource <= 0 {
		cfg.PerSource = DefaultPerSource
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tc := cfg.TLS.Clone()
	tc.MinVersion = tls.VersionTLS13
	tc.NextProtos = []string{ALPN}
	cfg.TLS = tc
	return &Port{cfg: cfg, log: cfg.Logger, bySource: map[netip.Addr]int{}}, nil
}

// Stats returns the port's counters.
func (p *Port) Stats() Stats {
	p.mu.Lock()
	open := p.open
	p.mu.Unlock()
	return Stats{Accepted: p.accepted.Load(), Open: open, RefusedSource: p.refusedSource.Load(),
		RefusedFull: p.refusedFull.Load(), HandshakeFailed: p.handshakeFailed.Load()}
}

// Serve accepts on ln until ctx ends or ln fails, and closes ln. Streams
// already handed over stay with the bind.
func (p *Port) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept on the TCP port: %w", err)
		}
		src := sourceOf(c)
		if !p.take(src) {
			c.Close()
			continue
		}
		sc := &slotConn{Conn: c, release: func() { p.release(src) }}
		wg.Go(func() { p.handshake(ctx, sc) })
	}
}

// handshake finishes TLS on c within the timeout and hands it over.
func (p *Port) handshake(ctx context.Context, c *slotConn) {
	hctx, cancel := context.WithTimeout(ctx, p.cfg.HandshakeTimeout)
	defer cancel()
	tc := tls.Server(c, p.cfg.TLS)
	if err := tc.HandshakeContext(hctx); err != nil {
		p.handshakeFailed.Add(1)
		p.log.Debug("TLS handshake on the TCP port failed", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	// Counted before the hand-off: the bind may read, drop and close the
	// stream before AddStream returns.
	p.accepted.Add(1)
	if err := p.cfg.Streams.AddStream(tc); err != nil {
		return // the bind closed it (shutting down)
	}
}

// take reserves a slot for a stream from src.
func (p *Port) take(src netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open >= p.cfg.MaxStreams {
		p.refusedFull.Add(1)
		return false
	}
	if p.bySource[src] >= p.cfg.PerSource {
		p.refusedSource.Add(1)
		return false
	}
	p.open++
	p.bySource[src]++
	return true
}

func (p *Port) release(src netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open--
	if p.bySource[src]--; p.bySource[src] <= 0 {
		delete(p.bySource, src)
	}
}

func sourceOf(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// slotConn frees its slot when first closed.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
