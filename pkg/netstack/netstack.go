// Package netstack is Cordon's userspace data plane: a gVisor TCP/IP stack
// that sits under wireguard-go as its tun.Device, so neither the client nor
// the gateway needs root or CAP_NET_ADMIN.
//
// On a client the stack originates connections (DialContext) that leave
// through the WireGuard tunnel; the local SOCKS5/HTTP proxy dials with it.
//
// On a gateway the stack runs in forwarding mode (Config.Forward): it accepts
// TCP connections and UDP flows addressed to any destination, dials the real
// destination with ordinary sockets and splices the two together. The flow
// authorizer is a tun.Device wrapper around the Stack, so by the time a packet
// reaches gVisor it has already been allowed.
//
// wireguard-go's own tun/netstack does not expose its gVisor stack, so it
// cannot forward arbitrary destinations; this package uses gVisor directly.
//
// Lifecycle:
//
//	New ──► running ──Close──► closed
//
// New starts no goroutines of its own (gVisor starts its protocol workers).
// Forwarded flows run in goroutines owned by the Stack; Close cancels them,
// tears down gVisor, waits for all of them and then closes the Events channel.
// Close is idempotent.
package netstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// ErrClosed is returned by every method of a closed Stack, and is the cause
// of the Stack's context after Close.
var ErrClosed = fmt.Errorf("netstack: %w", os.ErrClosed)

const (
	// DefaultMTU matches wireguard-go's default interface MTU.
	DefaultMTU = 1420

	// nicID is the only NIC of the stack.
	nicID tcpip.NICID = 1

	// queueLen is how many outbound packets the channel endpoint buffers
	// before gVisor sees ErrNoBufferSpace (TCP then retransmits).
	queueLen = 1024

	// batchSize is the most packets Read returns at once.
	batchSize = 64
)

// Config configures a Stack.
type Config struct {
	// Addrs are the stack's own addresses (the device's overlay addresses).
	// At least one is required. Each is added as a single-address prefix.
	Addrs []netip.Addr

	// MTU of the device. Zero means DefaultMTU.
	MTU int

	// Name is what the tun.Device reports as its name. Zero means "cordon".
	Name string

	// AllowLoopback makes the stack accept packets whose source or
	// destination is a loopback address (127.0.0.0/8, ::1) arriving through
	// the tunnel. gVisor drops such "martian" packets by default.
	//
	// A client needs it to reach apps published at 127.0.0.x (the no-root
	// demo, where apps live on the gateway host's loopback): the replies come
	// back with a loopback source. A gateway needs it to accept flows to
	// 127.0.0.x and forward them to the host's real loopback. Leave it off in
	// production: with it on, a gateway forwards to services on its own
	// host's loopback whenever the flow authorizer in front allows it.
	AllowLoopback bool

	// Forward, when set, turns on gateway forwarding: the stack accepts TCP
	// and UDP to any destination and hands each flow to Forward.Dial.
	Forward *ForwardConfig

	// Logger receives debug and warning records. Nil discards them.
	Logger *slog.Logger
}

// Stack is a gVisor TCP/IP stack attached to a channel link endpoint. It is a
// tun.Device: wireguard-go writes decrypted packets into it and reads the
// packets it emits.
type Stack struct {
	cfg    Config
	log    *slog.Logger
	ns     *stack.Stack
	ep     *channel.Endpoint
	events chan tun.Event
	local  map[netip.Addr]bool // own addresses; read-only after New

	ctx    context.Context
	cancel context.CancelCauseFunc

	// writeMu is held for reading while packets are injected, and for
	// writing by Close, so no packet enters gVisor during or after teardown.
	writeMu sync.RWMutex
	closed  atomic.Bool

	// lifeMu guards stopping and orders flows.Add before flows.Wait.
	lifeMu   sync.Mutex
	stopping bool
	flows    sync.WaitGroup

	closeOnce sync.Once

	stats counters
}

var _ tun.Device = (*Stack)(nil)

// New builds a stack with the given addresses and MTU. The returned Stack has
// already queued tun.EventUp on its Events channel.
func New(cfg Config) (*Stack, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("netstack: no local address configured")
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.MTU < 576 || cfg.MTU > 65535 {
		return nil, fmt.Errorf("netstack: MTU %d out of range [576, 65535]", cfg.MTU)
	}
	if cfg.Name == "" {
		cfg.Name = "cordon"
	}
	if cfg.Forward != nil {
		fc := cfg.Forward.withDefaults()
		cfg.Forward = &fc
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	ns := stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocolWithOptions(ipv4.Options{AllowExternalLoopbackTraffic: cfg.AllowLoopback}),
			ipv6.NewProtocolWithOptions(ipv6.Options{AllowExternalLoopbackTraffic: cfg.AllowLoopback}),
		},
		TransportProtocols: []stack.TransportProtocolFactory{
			tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6,
		},
		// HandleLocal makes gVisor drop inbound packets whose source is one
		// of its own addresses. In forwarding mode the NIC is promiscuous, so
		// every address counts as its own and every packet would be dropped.
		HandleLocal: cfg.Forward == nil,
	})
	ctx, cancel := context.WithCancelCause(context.Background())
	s := &Stack{
		cfg:    cfg,
		log:    logger,
		ns:     ns,
		ep:     channel.New(queueLen, uint32(cfg.MTU), ""),
		events: make(chan tun.Event, 1),
		local:  make(map[netip.Addr]bool, len(cfg.Addrs)),
		ctx:    ctx,
		cancel: cancel,
	}
	if err := s.setup(); err != nil {
		s.teardown(err)
		close(s.events)
		return nil, err
	}
	s.events <- tun.EventUp
	return s, nil
}

func (s *Stack) setup() error {
	sack := tcpip.TCPSACKEnabled(true) // off by default in gVisor
	if err := s.ns.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return fmt.Errorf("netstack: enable TCP SACK: %v", err)
	}
	if err := s.ns.CreateNIC(nicID, s.ep); err != nil {
		return fmt.Errorf("netstack: create NIC: %v", err)
	}
	for _, a := range s.cfg.Addrs {
		a = a.Unmap()
		if !a.IsValid() {
			return errors.New("netstack: invalid local address")
		}
		pa := tcpip.ProtocolAddress{
			Protocol:          protoOf(a),
			AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix(),
		}
		if err := s.ns.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fmt.Errorf("netstack: add address %v: %v", a, err)
		}
		s.local[a] = true
	}
	// Everything not local leaves through the tunnel. Both families get a
	// route even without an address of that family: a forwarding gateway
	// answers from spoofed addresses of either family.
	s.ns.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	if s.cfg.Forward != nil {
		s.enableForwarding()
	}
	return nil
}

// teardown stops everything New and the stack started. Callers guarantee it
// runs once.
func (s *Stack) teardown(cause error) {
	s.writeMu.Lock()
	s.closed.Store(true)
	s.writeMu.Unlock()

	s.lifeMu.Lock()
	s.stopping = true
	s.lifeMu.Unlock()

	// Cancelling the context aborts pending upstream dials and closes both
	// sides of every spliced flow. Aborting every registered endpoint
	// unblocks forwarded handshakes (gVisor's CreateEndpoint blocks until the
	// peer's final ACK, which will now never arrive). A handshake can start
	// just after a sweep, so sweep again until every flow goroutine is gone.
	s.cancel(cause)
	s.ep.Close()
	s.abortEndpoints()
	done := make(chan struct{})
	go func() {
		s.flows.Wait()
		close(done)
	}()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-tick.C:
			s.abortEndpoints()
		}
	}
	s.ns.Close()
	s.ns.Wait()
}

func (s *Stack) abortEndpoints() {
	for _, e := range s.ns.RegisteredEndpoints() {
		e.Abort()
	}
}

// Close stops the stack: every connection on it is aborted, forwarded flows
// are closed and their goroutines waited for, and Events is closed.
// It is safe to call more than once and concurrently with Read and Write.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		s.teardown(ErrClosed)
		close(s.events)
	})
	return nil
}

// File implements tun.Device. A userspace stack has no file.
func (s *Stack) File() *os.File { return nil }

// Name implements tun.Device.
func (s *Stack) Name() (string, error) { return s.cfg.Name, nil }

// MTU implements tun.Device.
func (s *Stack) MTU() (int, error) { return s.cfg.MTU, nil }

// BatchSize implements tun.Device.
func (s *Stack) BatchSize() int { return batchSize }

// Events implements tun.Device. It yields tun.EventUp once and is closed by
// Close.
func (s *Stack) Events() <-chan tun.Event { return s.events }

// Read implements tun.Device: it blocks until the stack emits at least one
// packet, then returns up to len(bufs) packets, each copied to
// bufs[i][offset:]. A packet that does not fit its buffer is dropped and
// counted. After Close it returns ErrClosed.
func (s *Stack) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	limit := min(len(bufs), len(sizes))
	if limit == 0 {
		return 0, nil
	}
	for {
		pkt := s.ep.ReadContext(s.ctx)
		if pkt == nil {
			return 0, ErrClosed
		}
		n := 0
		for pkt != nil {
			if copyPacket(bufs[n], offset, pkt, &sizes[n]) {
				n++
			} else {
				s.stats.oversize.Add(1)
			}
			pkt.DecRef()
			if n == limit {
				break
			}
			pkt = s.ep.Read()
		}
		if n > 0 {
			return n, nil
		}
	}
}

func copyPacket(buf []byte, offset int, pkt *stack.PacketBuffer, size *int) bool {
	if offset > len(buf) || pkt.Size() > len(buf)-offset {
		return false
	}
	n := offset
	for _, sl := range pkt.AsSlices() {
		n += copy(buf[n:], sl)
	}
	*size = n - offset
	return true
}

// Write implements tun.Device: each bufs[i][offset:] is one IP packet, copied
// into the stack. Packets that are empty or not IPv4/IPv6 are dropped and
// counted; they do not fail the batch. After Close it returns ErrClosed.
func (s *Stack) Write(bufs [][]byte, offset int) (int, error) {
	s.writeMu.RLock()
	defer s.writeMu.RUnlock()
	if s.closed.Load() {
		return 0, ErrClosed
	}
	for _, b := range bufs {
		if offset > len(b) {
			s.stats.badPackets.Add(1)
			continue
		}
		pkt := b[offset:]
		var proto tcpip.NetworkProtocolNumber
		switch {
		case len(pkt) >= header.IPv4MinimumSize && pkt[0]>>4 == 4:
			proto = header.IPv4ProtocolNumber
		case len(pkt) >= header.IPv6MinimumSize && pkt[0]>>4 == 6:
			proto = header.IPv6ProtocolNumber
		default:
			s.stats.badPackets.Add(1)
			continue
		}
		pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
		s.ep.InjectInbound(proto, pb)
		pb.DecRef()
	}
	return len(bufs), nil
}

// Stats is a snapshot of the stack's counters.
type Stats struct {
	TCPFlows     uint64 // TCP connections forwarded (upstream dial succeeded)
	UDPFlows     uint64 // UDP flows forwarded (upstream dial succeeded)
	DialFailures uint64 // forwarded flows whose upstream dial failed
	Refused      uint64 // flows refused without a dial (own address, limits, closing)
	ActiveFlows  int64  // forwarded flows open now
	BadPackets   uint64 // packets from the tunnel that were not IP
	Oversize     uint64 // outbound packets that did not fit the reader's buffer
}

type counters struct {
	tcpFlows, udpFlows, dialFailures, refused atomic.Uint64
	badPackets, oversize                      atomic.Uint64
	active                                    atomic.Int64
}

// Stats returns the stack's counters.
func (s *Stack) Stats() Stats {
	return Stats{
		TCPFlows:     s.stats.tcpFlows.Load(),
		UDPFlows:     s.stats.udpFlows.Load(),
		DialFailures: s.stats.dialFailures.Load(),
		Refused:      s.stats.refused.Load(),
		ActiveFlows:  s.stats.active.Load(),
		BadPackets:   s.stats.badPackets.Load(),
		Oversize:     s.stats.oversize.Load(),
	}
}

// startFlow registers a flow goroutine; it reports false once Close began.
func (s *Stack) startFlow() bool {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	if s.stopping {
		return false
	}
	s.flows.Add(1)
	return true
}

func protoOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	a := ap.Addr().Unmap()
	return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(a.AsSlice()), Port: ap.Port()}, protoOf(a)
}

func addrPort(a tcpip.Address, port uint16) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(ip.Unmap(), port)
}
