// Package dnsstub is the client's stub resolver. It decides where each query
// goes from the network map alone and never lets an internal name reach the
// system's resolver:
//
//   - a name outside the internal zones goes to the upstream resolvers (the
//     ones the system had before Cordon), or is refused if there are none;
//   - a name in an internal zone that belongs to an app of an entitled
//     segment (the app's name, an alias, an SRV name under it, an empty
//     non-terminal above it, its reverse name) goes through the tunnel to
//     the DNS server of the gateway serving that app, which decides;
//   - any other name in an internal zone gets NXDOMAIN here, built by
//     [dnszone.NXDomain] exactly as a gateway builds it, so it is the same
//     answer whether the name is hidden or never existed;
//   - before the first map arrives every query gets SERVFAIL (the stub does
//     not yet know which names are internal, so it forwards nothing).
//
// In userspace mode the local proxy resolves names with [Stub.LookupHost];
// in tun mode [Stub.Serve] answers DNS on the device's overlay address and
// the system is pointed at it (see the sysdns package).
package dnsstub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/dnszone"
)

// Dialer opens connections; *netstack.Stack and *net.Dialer satisfy it.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Config configures a Stub.
type Config struct {
	// Tunnel dials the gateways' DNS servers (through the tunnel).
	Tunnel Dialer
	// Upstream are the resolvers for names outside the internal zones
	// (host:port). Empty: such names are refused.
	Upstream []netip.AddrPort
	// UpstreamDialer dials Upstream; default a net.Dialer.
	UpstreamDialer Dialer
	// Timeout bounds one exchange; default 2 s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Stub is the client's stub resolver. Safe for concurrent use.
type Stub struct {
	cfg      Config
	log      *slog.Logger
	table    atomic.Pointer[table]
	upstream atomic.Pointer[[]netip.AddrPort]
	stats    counters

	mu      sync.Mutex
	servers []*dns.Server
}

// New returns a stub that answers SERVFAIL until SetMap.
func New(cfg Config) *Stub {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.UpstreamDialer == nil {
		cfg.UpstreamDialer = &net.Dialer{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Stub{cfg: cfg, log: cfg.Logger}
	s.SetUpstream(cfg.Upstream)
	return s
}

// SetUpstream replaces the resolvers for names outside the internal zones.
func (s *Stub) SetUpstream(up []netip.AddrPort) {
	up = append([]netip.AddrPort(nil), up...)
	s.upstream.Store(&up)
}

// table is the immutable routing of one client map.
type table struct {
	zones *dnszone.Set
	// route maps every internal name the device may ask a gateway about
	// to that gateway's overlay address.
	route map[string]netip.Addr
	first netip.Addr // some gateway, for zone apexes
}

// SetMap replaces the routing with that of m, whole or not at all.
func (s *Stub) SetMap(m *controlproto.ClientMap) error {
	r, err := s.Prepare(m)
	if err != nil {
		return err
	}
	s.Install(r)
	return nil
}

// Routing is the stub's routing of one client map, built and checked but
// not necessarily in effect: the client prepares it with the rest of a map
// and installs it once everything that can fail has been checked.
type Routing struct{ t *table }

// Prepare builds and checks the routing of m without putting it in effect.
func (s *Stub) Prepare(m *controlproto.ClientMap) (Routing, error) {
	t, err := newTable(m)
	if err != nil {
		return Routing{}, err
	}
	return Routing{t}, nil
}

// Install puts r in effect; it cannot fail. The zero Routing is the stub's
// state before its first map (SERVFAIL for everything internal).
func (s *Stub) Install(r Routing) { s.table.Store(r.t) }

// Current returns the routing in effect, to install again on a rollback.
func (s *Stub) Current() Routing { return Routing{s.table.Load()} }

// Zones returns the internal zones of the current map (nil before one).
func (s *Stub) Zones() []dnszone.Zone {
	return s.table.Load().zonesList()
}

func (t *table) zonesList() []dnszone.Zone {
	if t == nil {
		return nil
	}
	return t.zones.Zones()
}

func newTable(m *controlproto.ClientMap) (*table, error) {
	zs := make([]dnszone.Zone, len(m.DNSZones))
	for i, z := range m.DNSZones {
		zs[i] = dnszone.Zone{Name: z.Name, TTL: z.TTL}
	}
	set, err := dnszone.NewSet(zs)
	if err != nil {
		return nil, err
	}
	t := &table{zones: set, route: map[string]netip.Addr{}}
	add := func(name string, gw netip.Addr) {
		z, ok := set.Match(name)
		if !ok {
			return
		}
		if name == z.Name { // an app named like its zone
			if _, seen := t.route[name]; !seen {
				t.route[name] = gw
			}
			return
		}
		for off, end := 0, false; !end; off, end = dns.NextLabel(name, off) {
			n := name[off:]
			if n == z.Name {
				break
			}
			if _, seen := t.route[n]; !seen {
				t.route[n] = gw
			}
		}
	}
	for _, g := range m.Gateways {
		if !g.OverlayAddr.IsValid() {
			continue
		}
		// The zone's own name goes to the first gateway carrying apps: with
		// every gateway of a segment as a peer (capability 9), the others
		// may be ones this client moved away from because they died.
		if !t.first.IsValid() && len(g.Apps) > 0 {
			t.first = g.OverlayAddr
		}
		for _, a := range g.Apps {
			if a.DNSName != "" {
				add(dnszone.Canonical(a.DNSName), g.OverlayAddr)
			}
			for _, al := range a.DNSAliases {
				add(dnszone.Canonical(al), g.OverlayAddr)
			}
			if a.Addr.IsSingleIP() {
				if rev, err := dns.ReverseAddr(a.Addr.Addr().Unmap().String()); err == nil {
					add(rev, g.OverlayAddr)
				}
			}
		}
	}
	if !t.first.IsValid() {
		for _, g := range m.Gateways {
			if g.OverlayAddr.IsValid() {
				t.first = g.OverlayAddr
				break
			}
		}
	}
	return t, nil
}

// decision is where one query goes.
type decision int

const (
	toUpstream decision = iota
	toGateway
	answerLocally
)

func (t *table) decide(name string) (decision, netip.Addr, dnszone.Zone) {
	z, ok := t.zones.Match(name)
	if !ok {
		return toUpstream, netip.Addr{}, z
	}
	if gw, ok := t.route[name]; ok {
		return toGateway, gw, z
	}
	if name == z.Name {
		if t.first.IsValid() {
			return toGateway, t.first, z
		}
		return answerLocally, netip.Addr{}, z
	}
	// SRV and other service names: _svc._proto.<app name>.
	rest := name
	for strings.HasPrefix(rest, "_") {
		off, end := dns.NextLabel(rest, 0)
		if end {
			break
		}
		rest = rest[off:]
		if gw, ok := t.route[rest]; ok {
			return toGateway, gw, z
		}
	}
	return answerLocally, netip.Addr{}, z
}

// Stats counts the answers the stub gave, by response code.
type Stats struct {
	Answer, NXDomain, ServFail, Refused, FormErr, Other uint64
}

type counters struct {
	answer, nxdomain, servfail, refused, formerr, other atomic.Uint64
}

// Stats returns the answer counts since New.
func (s *Stub) Stats() Stats {
	c := &s.stats
	return Stats{Answer: c.answer.Load(), NXDomain: c.nxdomain.Load(), ServFail: c.servfail.Load(),
		Refused: c.refused.Load(), FormErr: c.formerr.Load(), Other: c.other.Load()}
}

func (c *counters) count(rcode int) {
	switch rcode {
	case dns.RcodeSuccess:
		c.answer.Add(1)
	case dns.RcodeNameError:
		c.nxdomain.Add(1)
	case dns.RcodeServerFailure:
		c.servfail.Add(1)
	case dns.RcodeRefused:
		c.refused.Add(1)
	case dns.RcodeFormatError:
		c.formerr.Add(1)
	default:
		c.other.Add(1)
	}
}

// Resolve answers one query and counts the answer (Stats). It never
// returns nil.
func (s *Stub) Resolve(ctx context.Context, q *dns.Msg) *dns.Msg {
	r := s.resolve(ctx, q)
	s.stats.count(r.Rcode)
	return r
}

func (s *Stub) resolve(ctx context.Context, q *dns.Msg) *dns.Msg {
	if len(q.Question) != 1 || q.Opcode != dns.OpcodeQuery {
		r := new(dns.Msg)
		r.SetRcode(q, dns.RcodeFormatError)
		return r
	}
	t := s.table.Load()
	if t == nil {
		r := new(dns.Msg)
		r.SetRcode(q, dns.RcodeServerFailure)
		return r
	}
	name := dnszone.Canonical(q.Question[0].Name)
	d, gw, z := t.decide(name)
	switch d {
	case answerLocally:
		if name == z.Name {
			return dnszone.Apex(q, z)
		}
		return dnszone.NXDomain(q, z)
	case toGateway:
		r, err := s.exchange(ctx, s.cfg.Tunnel, netip.AddrPortFrom(gw, 53), q)
		if err != nil {
			s.log.Debug("dns: gateway did not answer", "gateway", gw, "err", err)
			r = new(dns.Msg)
			r.SetRcode(q, dns.RcodeServerFailure)
		}
		return r
	}
	ups := *s.upstream.Load()
	for _, up := range ups {
		r, err := s.exchange(ctx, s.cfg.UpstreamDialer, up, q)
		if err == nil {
			return r
		}
		s.log.Debug("dns: upstream did not answer", "upstream", up, "err", err)
	}
	r := new(dns.Msg)
	if len(ups) == 0 {
		r.SetRcode(q, dns.RcodeRefused)
	} else {
		r.SetRcode(q, dns.RcodeServerFailure)
	}
	r.RecursionAvailable = true
	return r
}

// exchange sends q to server over UDP, and again over TCP if the answer was
// truncated.
func (s *Stub) exchange(ctx context.Context, d Dialer, server netip.AddrPort, q *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	r, err := s.exchangeOver(ctx, d, "udp", server, q)
	if err == nil && r.Truncated {
		r, err = s.exchangeOver(ctx, d, "tcp", server, q)
	}
	return r, err
}

func (s *Stub) exchangeOver(ctx context.Context, d Dialer, network string, server netip.AddrPort, q *dns.Msg) (*dns.Msg, error) {
	nc, err := d.DialContext(ctx, network, server.String())
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	c := &dns.Client{Net: network, Timeout: s.cfg.Timeout, UDPSize: dnszone.MaxUDPSize}
	// Keep the asker's ID: the exchange is ours, the answer theirs.
	out := q.Copy()
	r, _, err := c.ExchangeWithConnContext(ctx, out, &dns.Conn{Conn: nc, UDPSize: dnszone.MaxUDPSize})
	if err != nil {
		return nil, err
	}
	r.Id = q.Id
	return r, nil
}

// ErrNotFound says a name does not resolve.
var ErrNotFound = errors.New("name not found")

// LookupHost resolves an internal name to one address through the gateway
// serving it: IPv4 first, then IPv6. A name outside the internal zones is
// not looked up at all (ok false), so the local proxy never leaks a name to
// any resolver.
func (s *Stub) LookupHost(ctx context.Context, name string) (netip.Addr, error) {
	fq := dnszone.Canonical(name)
	if t := s.table.Load(); t == nil {
		return netip.Addr{}, errors.New("no network map yet")
	} else if _, ok := t.zones.Match(fq); !ok {
		return netip.Addr{}, fmt.Errorf("%s: %w (not an internal name)", name, ErrNotFound)
	}
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		q := new(dns.Msg)
		q.SetQuestion(fq, qt)
		r := s.Resolve(ctx, q)
		if r.Rcode == dns.RcodeNameError {
			return netip.Addr{}, fmt.Errorf("%s: %w", name, ErrNotFound)
		}
		if r.Rcode != dns.RcodeSuccess {
			return netip.Addr{}, fmt.Errorf("%s: lookup failed: %s", name, dns.RcodeToString[r.Rcode])
		}
		for _, rr := range r.Answer {
			switch rr := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(rr.A.To4()); ok {
					return a, nil
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(rr.AAAA); ok {
					return a, nil
				}
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("%s: %w", name, ErrNotFound)
}

// localTimeout bounds one query to the stub's own listeners.
const localTimeout = 5 * time.Second

// Serve answers DNS on pc and ln (either may be nil) until Close.
func (s *Stub) Serve(pc net.PacketConn, ln net.Listener) {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		ctx, cancel := context.WithTimeout(context.Background(), localTimeout)
		defer cancel()
		r := s.Resolve(ctx, q)
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			size := 512
			if o := q.IsEdns0(); o != nil {
				size = max(512, int(o.UDPSize()))
			}
			r.Truncate(size)
		}
		w.WriteMsg(r)
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: h, ReadTimeout: localTimeout},
		{Listener: ln, Handler: h, ReadTimeout: localTimeout, WriteTimeout: localTimeout, MaxTCPQueries: 128},
	} {
		if srv.PacketConn == nil && srv.Listener == nil {
			continue
		}
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		s.servers = append(s.servers, srv)
		errc := make(chan error, 1)
		go func() { errc <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-errc:
			s.log.Warn("dns: stub listener stopped", "err", err)
		}
	}
}

// Close stops the listeners Serve started.
func (s *Stub) Close() {
	s.mu.Lock()
	servers := s.servers
	s.servers = nil
	s.mu.Unlock()
	for _, srv := range servers {
		srv.Shutdown()
	}
}
