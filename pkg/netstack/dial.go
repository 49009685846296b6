package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// ErrNeedIP is returned by DialContext for an address that is not an IP
// literal: names are resolved above this package (the client's resolver
// knows only entitled app names), never by the stack.
var ErrNeedIP = errors.New("netstack: address must be IP:port; resolve names before dialing")

// DialContext opens a connection through the stack (so through the tunnel).
// network is "tcp", "tcp4", "tcp6", "udp", "udp4" or "udp6"; address is an
// IP literal and port ("10.20.0.5:443", "[fd00::5]:443").
//
// TCP errors carry the errno a kernel socket would give, so callers can
// test errors.Is(err, syscall.ECONNREFUSED) and similar.
func (s *Stack) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("%w: %q", ErrNeedIP, address)}
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if err := checkFamily(network, ap.Addr()); err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	if s.closed.Load() {
		return nil, &net.OpError{Op: "dial", Net: network, Err: ErrClosed}
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
		return s.dialTCP(ctx, network, ap)
	default:
		return s.dialUDP(network, ap)
	}
}

func checkFamily(network string, a netip.Addr) error {
	switch network {
	case "tcp", "udp":
		return nil
	case "tcp4", "udp4":
		if a.Is4() {
			return nil
		}
	case "tcp6", "udp6":
		if a.Is6() {
			return nil
		}
	default:
		return net.UnknownNetworkError(network)
	}
	return fmt.Errorf("netstack: address %v does not match network %s", a, network)
}

func (s *Stack) dialTCP(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error) {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: network, Addr: net.TCPAddrFromAddrPort(dst), Err: err}
	}
	fa, proto := fullAddr(dst)
	var wq waiter.Queue
	ep, terr := s.ns.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, opErr(tcpipError(terr))
	}
	// Register before Connect: the connection may complete (or be refused)
	// before we start waiting.
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)

	terr = ep.Connect(fa)
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-notify:
			terr = ep.LastError()
		case <-ctx.Done():
			ep.Close()
			return nil, opErr(ctx.Err())
		case <-s.ctx.Done():
			ep.Close()
			return nil, opErr(ErrClosed)
		}
	}
	if terr != nil {
		ep.Close()
		return nil, opErr(tcpipError(terr))
	}
	return gonet.NewTCPConn(&wq, ep), nil
}

func (s *Stack) dialUDP(network string, dst netip.AddrPort) (net.Conn, error) {
	fa, proto := fullAddr(dst)
	c, err := gonet.DialUDP(s.ns, nil, &fa, proto)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: net.UDPAddrFromAddrPort(dst), Err: err}
	}
	return c, nil
}

// ListenTCP listens on one of the stack's own addresses (a gateway serving
// DNS on its overlay address, for example). Connections to a listener are
// delivered to it rather than forwarded.
func (s *Stack) ListenTCP(addr netip.AddrPort) (net.Listener, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	fa, proto := fullAddr(addr)
	l, err := gonet.ListenTCP(s.ns, fa, proto)
	if err != nil {
		return nil, fmt.Errorf("netstack: listen tcp %v: %w", addr, err)
	}
	return l, nil
}

// ListenUDP binds a UDP socket on one of the stack's own addresses.
func (s *Stack) ListenUDP(addr netip.AddrPort) (net.PacketConn, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	fa, proto := fullAddr(addr)
	c, err := gonet.DialUDP(s.ns, &fa, nil, proto)
	if err != nil {
		return nil, fmt.Errorf("netstack: listen udp %v: %w", addr, err)
	}
	return c, nil
}

// tcpipError turns a gVisor error into the errno a kernel socket would
// report, so callers branch with errors.Is instead of matching strings.
func tcpipError(e tcpip.Error) error {
	switch e.(type) {
	case *tcpip.ErrConnectionRefused:
		return syscall.ECONNREFUSED
	case *tcpip.ErrConnectionReset:
		return syscall.ECONNRESET
	case *tcpip.ErrConnectionAborted:
		return syscall.ECONNABORTED
	case *tcpip.ErrHostUnreachable:
		return syscall.EHOSTUNREACH
	case *tcpip.ErrNetworkUnreachable, *tcpip.ErrNoNet:
		return syscall.ENETUNREACH
	case *tcpip.ErrTimeout:
		return syscall.ETIMEDOUT
	case *tcpip.ErrBadLocalAddress:
		return syscall.EADDRNOTAVAIL
	case *tcpip.ErrPortInUse:
		return syscall.EADDRINUSE
	default:
		return errors.New(e.String())
	}
}
