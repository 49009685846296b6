// Package dns is the gateway's split-horizon DNS server. It answers on the
// gateway's overlay address (UDP and TCP port 53) and identifies the asker
// by the overlay source address, which WireGuard's cryptokey routing
// guarantees.
//
// A name in an internal zone resolves (A, AAAA, CNAME to the app's name,
// SRV, PTR for app addresses) only if the current compiled policy lets the
// asking device reach the app: the flow authorizer's own decision, made per
// query, so a revoked entitlement hides the name at once (and a cached
// positive answer lives at most the zone TTL, 5 s by default). Every other
// name in the internal zones gets NXDOMAIN built by [dnszone.NXDomain] from
// the query and the zone alone, so a hidden name and a name that never
// existed get the same bytes. Names outside the internal zones are REFUSED:
// the gateway is not a recursive resolver.
//
// Untrusted input is bounded: queries over 4 KiB or without a readable
// header are dropped, malformed ones get FORMERR, each source address has a
// token bucket (over it, queries are dropped), UDP answers are truncated to
// the asker's EDNS0 size (at most 1232 bytes), TCP connections are capped in
// number, idle time and queries.
//
// Denied lookups (NXDOMAIN) become dns-deny flow events for the audit trail,
// limited per device so an enumerating device is recorded without flooding
// it.
//
// Lifecycle: New → Serve* (each call owns goroutines until Close) → Close,
// which closes the listeners and waits for them. Close is idempotent.
package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
)

// Port is the DNS port.
const Port = 53

const (
	maxQuerySize   = 4096
	maxTCPConns    = 256
	tcpIdle        = 10 * time.Second
	maxTCPQueries  = 128
	udpReadBufSize = 4096
)

// Decider is the flow authorizer's decision for a new flow. *policy.Compiled
// satisfies it.
type Decider interface {
	Decide(src, dst netip.Addr, proto policy.Proto, dport uint16) policy.Decision
	Peer(src netip.Addr) (*policy.Peer, bool)
}

// Config configures a Server.
type Config struct {
	// Addr is the gateway's overlay address (recorded as the destination
	// of dns-deny events).
	Addr netip.Addr

	// Policy returns the current policy; required. It is called once per
	// query and must be cheap (an atomic load).
	Policy func() Decider

	// Events receives dns-deny events. Sends never block: a full channel
	// drops the event and counts it. Nil disables events.
	Events chan<- controlproto.FlowEvent

	// QueriesPerSecond and Burst bound each source address (defaults 200
	// and 400); queries over the limit are dropped.
	QueriesPerSecond float64
	Burst            int

	// DenyEventsPerSecond and DenyEventBurst bound dns-deny events per
	// source (defaults 1 and 20).
	DenyEventsPerSecond float64
	DenyEventBurst      int

	// UDPWorkers is how many goroutines read each UDP socket; default 4.
	UDPWorkers int

	Logger *slog.Logger
	Now    func() time.Time // for tests; default time.Now
}

// Stats are the server's counters.
type Stats struct {
	Answered, NXDomain, Refused, FormErr, NotImp uint64
	Dropped, RateLimited                         uint64
	EventsDropped, EventsSuppressed              uint64
}

type counters struct {
	answered, nxdomain, refused, formErr, notImp atomic.Uint64
	dropped, rateLimited                         atomic.Uint64
	eventsDropped, eventsSuppressed              atomic.Uint64
}

// Server is a split-horizon DNS server. Safe for concurrent use.
type Server struct {
	cfg        Config
	log        *slog.Logger
	now        func() time.Time
	view       atomic.Pointer[view]
	queryLimit *limiter
	auditLimit *limiter
	stats      counters

	mu      sync.Mutex
	closed  bool
	closers []io.Closer
	tcp     map[net.Conn]struct{}
	wg      sync.WaitGroup
}

// ErrClosed is returned by Serve* after Close.
var ErrClosed = errors.New("dns server closed")

// New returns a server that answers nothing but REFUSED until SetMap.
func New(cfg Config) (*Server, error) {
	if cfg.Policy == nil {
		return nil, errors.New("dns server: Config.Policy is required")
	}
	if cfg.QueriesPerSecond <= 0 {
		cfg.QueriesPerSecond = 200
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 400
	}
	if cfg.DenyEventsPerSecond <= 0 {
		cfg.DenyEventsPerSecond = 1
	}
	if cfg.DenyEventBurst <= 0 {
		cfg.DenyEventBurst = 20
	}
	if cfg.UDPWorkers <= 0 {
		cfg.UDPWorkers = 4
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: cfg, log: log, now: cfg.Now,
		queryLimit: newLimiter(cfg.QueriesPerSecond, cfg.Burst),
		auditLimit: newLimiter(cfg.DenyEventsPerSecond, cfg.DenyEventBurst),
		tcp:        map[net.Conn]struct{}{},
	}
	s.view.Store(emptyView)
	return s, nil
}

// SetMap replaces the zones and apps the server answers for, whole or not at
// all.
func (s *Server) SetMap(zones []controlproto.DNSZone, apps []controlproto.App) error {
	v, err := newView(zones, apps)
	if err != nil {
		return err
	}
	s.view.Store(v)
	return nil
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Answered: c.answered.Load(), NXDomain: c.nxdomain.Load(), Refused: c.refused.Load(),
		FormErr: c.formErr.Load(), NotImp: c.notImp.Load(), Dropped: c.dropped.Load(),
		RateLimited: c.rateLimited.Load(), EventsDropped: c.eventsDropped.Load(),
		EventsSuppressed: c.eventsSuppressed.Load(),
	}
}

func (s *Server) track(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closers = append(s.closers, c)
	return true
}

// ServeUDP answers queries on pc until Close. It returns at once; the
// server owns pc from now on.
func (s *Server) ServeUDP(pc net.PacketConn) error {
	if !s.track(pc) {
		pc.Close()
		return ErrClosed
	}
	for range s.cfg.UDPWorkers {
		s.wg.Go(func() { s.udpLoop(pc) })
	}
	return nil
}

func (s *Server) udpLoop(pc net.PacketConn) {
	buf := make([]byte, udpReadBufSize)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.isClosed() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Warn("dns: read udp", "err", err)
			return
		}
		src, ok := addrPort(from)
		if !ok {
			continue
		}
		if !s.queryLimit.allow(src.Addr(), s.now()) {
			s.stats.rateLimited.Add(1)
			continue
		}
		if resp := s.Handle(src, buf[:n], false); resp != nil {
			pc.WriteTo(resp, from)
		}
	}
}

// ServeTCP answers queries on ln until Close. It returns at once; the
// server owns ln from now on.
func (s *Server) ServeTCP(ln net.Listener) error {
	if !s.track(ln) {
		ln.Close()
		return ErrClosed
	}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) || s.isClosed() {
					return
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				s.log.Warn("dns: accept tcp", "err", err)
				return
			}
			s.mu.Lock()
			if s.closed || len(s.tcp) >= maxTCPConns {
				s.mu.Unlock()
				c.Close()
				continue
			}
			s.tcp[c] = struct{}{}
			s.wg.Add(1)
			s.mu.Unlock()
			go func() {
				defer s.wg.Done()
				s.serveConn(c)
				s.mu.Lock()
				delete(s.tcp, c)
				s.mu.Unlock()
				c.Close()
			}()
		}
	})
	return nil
}

func (s *Server) serveConn(c net.Conn) {
	src, ok := addrPort(c.RemoteAddr())
	if !ok {
		return
	}
	var hdr [2]byte
	buf := make([]byte, maxQuerySize)
	for range maxTCPQueries {
		c.SetDeadline(s.now().Add(tcpIdle))
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		if n > maxQuerySize {
			return
		}
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return
		}
		if !s.queryLimit.allow(src.Addr(), s.now()) {
			s.stats.rateLimited.Add(1)
			return
		}
		resp := s.Handle(src, buf[:n], true)
		if resp == nil {
			return
		}
		out := make([]byte, 2+len(resp))
		binary.BigEndian.PutUint16(out, uint16(len(resp)))
		copy(out[2:], resp)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops every listener and connection and waits for their
// goroutines. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	closers := s.closers
	for c := range s.tcp {
		closers = append(closers, c)
	}
	s.mu.Unlock()
	for _, c := range closers {
		c.Close()
	}
	s.wg.Wait()
	return nil
}

// Listen opens UDP and TCP listeners with listen (net.ListenConfig in tun
// mode, the netstack in userspace mode) on addr:53 and serves them.
func (s *Server) Listen(ctx context.Context, addr netip.Addr,
	listenUDP func(netip.AddrPort) (net.PacketConn, error),
	listenTCP func(netip.AddrPort) (net.Listener, error),
) error {
	ap := netip.AddrPortFrom(addr, Port)
	pc, err := listenUDP(ap)
	if err != nil {
		return err
	}
	ln, err := listenTCP(ap)
	if err != nil {
		pc.Close()
		return err
	}
	if err := s.ServeUDP(pc); err != nil {
		ln.Close()
		return err
	}
	return s.ServeTCP(ln)
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort(), true
	case *net.TCPAddr:
		return a.AddrPort(), true
	}
	if a == nil {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap, err == nil
}

// limiter is a token bucket per source address. Its memory is bounded: when
// it holds maxSources buckets, full (idle) ones are forgotten.
type limiter struct {
	mu      sync.Mutex
	rate    float64 // tokens per second
	burst   float64
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

const maxSources = 1 << 18

func newLimiter(rate float64, burst int) *limiter {
	return &limiter{rate: rate, burst: float64(burst), buckets: map[netip.Addr]*bucket{}}
}

func (l *limiter) allow(a netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[a]
	if b == nil {
		if len(l.buckets) >= maxSources {
			l.pruneLocked(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[a] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// pruneLocked forgets buckets that have refilled; if none has, it forgets
// all (a flood of distinct sources, which WireGuard already bounds to the
// gateway's peers).
func (l *limiter) pruneLocked(now time.Time) {
	for a, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, a)
		}
	}
	if len(l.buckets) >= maxSources {
		clear(l.buckets)
	}
}
