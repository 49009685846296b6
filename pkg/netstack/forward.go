package netstack

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Flow is one forwarded TCP connection or UDP flow, as the peer sent it.
type Flow struct {
	Network string         // "tcp" or "udp"
	Src     netip.AddrPort // the peer's overlay address and port
	Dst     netip.AddrPort // the destination the peer asked for
}

// DialFunc opens the upstream side of a forwarded flow. An error refuses the
// flow: a TCP peer gets a RST, a UDP flow is dropped. The gateway wraps the
// default to log, to meter, or to refuse; tests inject fakes. It must return
// promptly once ctx is done: Stack.Close waits for pending dials.
type DialFunc func(ctx context.Context, f Flow) (net.Conn, error)

// DirectDial returns a DialFunc that dials f.Dst with d over the host's
// ordinary sockets. A nil d means a zero net.Dialer.
func DirectDial(d *net.Dialer) DialFunc {
	if d == nil {
		d = &net.Dialer{}
	}
	return func(ctx context.Context, f Flow) (net.Conn, error) {
		return d.DialContext(ctx, f.Network, f.Dst.String())
	}
}

// ForwardConfig configures gateway forwarding. Zero fields take defaults.
type ForwardConfig struct {
	// Dial opens upstream connections. Default: DirectDial(nil).
	Dial DialFunc

	// DialTimeout bounds one upstream dial. Default 10s. The peer's TCP
	// handshake completes only after the dial succeeds.
	DialTimeout time.Duration

	// UDPIdleTimeout closes a UDP flow with no datagram either way for this
	// long. Default 60s.
	UDPIdleTimeout time.Duration

	// MaxPendingTCP caps TCP handshakes waiting on their upstream dial;
	// further SYNs are ignored (the peer retransmits). Default 1024.
	MaxPendingTCP int

	// MaxFlows caps forwarded flows open at once, TCP and UDP together;
	// new ones are refused past it. Default 65536.
	MaxFlows int
}

func (c ForwardConfig) withDefaults() ForwardConfig {
	if c.Dial == nil {
		c.Dial = DirectDial(nil)
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.UDPIdleTimeout <= 0 {
		c.UDPIdleTimeout = 60 * time.Second
	}
	if c.MaxPendingTCP <= 0 {
		c.MaxPendingTCP = 1024
	}
	if c.MaxFlows <= 0 {
		c.MaxFlows = 65536
	}
	return c
}

// enableForwarding makes the NIC accept packets for any address
// (promiscuous) and answer from any address (spoofing), and routes
// connections and datagrams no local socket claims to the forwarders.
func (s *Stack) enableForwarding() {
	s.ns.SetPromiscuousMode(nicID, true)
	s.ns.SetSpoofing(nicID, true)
	tf := tcp.NewForwarder(s.ns, 0, s.cfg.Forward.MaxPendingTCP, s.forwardTCP)
	s.ns.SetTransportProtocolHandler(tcp.ProtocolNumber, tf.HandlePacket)
	uf := udp.NewForwarder(s.ns, s.forwardUDP)
	s.ns.SetTransportProtocolHandler(udp.ProtocolNumber, uf.HandlePacket)
}

// admit decides whether a new flow may be forwarded and registers it. On
// true the caller owns one s.flows count and one s.stats.active.
func (s *Stack) admit(f Flow) bool {
	if s.local[f.Dst.Addr()] {
		// A flow to the gateway's own overlay address that no listener took:
		// never forward it to whatever the host has on that address.
		s.stats.refused.Add(1)
		return false
	}
	if s.stats.active.Add(1) > int64(s.cfg.Forward.MaxFlows) {
		s.stats.active.Add(-1)
		s.stats.refused.Add(1)
		s.log.Warn("netstack: forwarded flow limit reached", "network", f.Network, "dst", f.Dst)
		return false
	}
	if !s.startFlow() {
		s.stats.active.Add(-1)
		s.stats.refused.Add(1)
		return false
	}
	return true
}

func (s *Stack) release() {
	s.stats.active.Add(-1)
	s.flows.Done()
}

// forwardTCP runs in a goroutine gVisor starts per SYN. It dials upstream
// first and completes the peer's handshake only on success, so a refused or
// unreachable destination looks refused to the peer instead of accepted and
// then dropped.
func (s *Stack) forwardTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	f := Flow{Network: "tcp", Src: addrPort(id.RemoteAddress, id.RemotePort), Dst: addrPort(id.LocalAddress, id.LocalPort)}
	if !s.admit(f) {
		r.Complete(!s.closed.Load())
		return
	}
	defer s.release()

	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Forward.DialTimeout)
	up, err := s.cfg.Forward.Dial(ctx, f)
	cancel()
	if err != nil {
		s.stats.dialFailures.Add(1)
		s.log.Debug("netstack: upstream dial", "src", f.Src, "dst", f.Dst, "network", f.Network, "err", err)
		r.Complete(true)
		return
	}
	if s.ctx.Err() != nil {
		// Closing: do not start a handshake Close has to abort.
		up.Close()
		r.Complete(false)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	r.Complete(false)
	if terr != nil {
		// The peer went away (or reset) during the dial.
		up.Close()
		return
	}
	ep.SocketOptions().SetKeepAlive(true)
	s.stats.tcpFlows.Add(1)
	s.spliceTCP(gonet.NewTCPConn(&wq, ep), up)
}

// halfCloser is the part of *net.TCPConn and *gonet.TCPConn that lets one
// direction end while the other keeps flowing.
type halfCloser interface {
	CloseWrite() error
}

// closeTogether returns closeBoth, which closes both ends once, and
// release, which closes them and stops watching the stack: a splice defers
// release, and stack shutdown calls closeBoth meanwhile.
func (s *Stack) closeTogether(down, up net.Conn) (closeBoth, release func()) {
	var once sync.Once
	closeBoth = func() {
		once.Do(func() {
			down.Close()
			up.Close()
		})
	}
	stop := context.AfterFunc(s.ctx, closeBoth)
	return closeBoth, func() {
		stop()
		closeBoth()
	}
}

// spliceTCP copies both ways until both directions are done. EOF in one
// direction half-closes the other side's write end; an error tears down
// both. Stack shutdown closes both.
func (s *Stack) spliceTCP(down, up net.Conn) {
	closeBoth, release := s.closeTogether(down, up)
	defer release()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pipe(up, down, closeBoth)
	}()
	pipe(down, up, closeBoth)
	wg.Wait()
}

func pipe(dst, src net.Conn, abort func()) {
	if _, err := io.Copy(dst, src); err != nil {
		abort()
		return
	}
	if hc, ok := dst.(halfCloser); ok {
		if hc.CloseWrite() == nil {
			return
		}
	}
	abort()
}

// forwardUDP is called synchronously from gVisor's packet path for the first
// datagram of a flow. It creates the flow's endpoint at once (later datagrams
// of the flow queue on it instead of coming back here) and leaves the dial to
// a goroutine.
func (s *Stack) forwardUDP(r *udp.ForwarderRequest) {
	id := r.ID()
	f := Flow{Network: "udp", Src: addrPort(id.RemoteAddress, id.RemotePort), Dst: addrPort(id.LocalAddress, id.LocalPort)}
	if !s.admit(f) {
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		s.release()
		s.log.Debug("netstack: create udp endpoint", "src", f.Src, "dst", f.Dst, "err", terr)
		return
	}
	down := gonet.NewUDPConn(&wq, ep)
	go func() {
		defer s.release()
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Forward.DialTimeout)
		up, err := s.cfg.Forward.Dial(ctx, f)
		cancel()
		if err != nil {
			s.stats.dialFailures.Add(1)
			s.log.Debug("netstack: upstream dial", "src", f.Src, "dst", f.Dst, "network", f.Network, "err", err)
			down.Close()
			return
		}
		s.stats.udpFlows.Add(1)
		s.spliceUDP(down, up)
	}()
}

// maxDatagram is the largest UDP payload either side can carry.
const maxDatagram = 64 << 10

// spliceUDP relays datagrams both ways until neither direction has seen one
// for UDPIdleTimeout, either side fails, or the stack closes.
func (s *Stack) spliceUDP(down, up net.Conn) {
	closeBoth, release := s.closeTogether(down, up)
	defer release()

	idle := s.cfg.Forward.UDPIdleTimeout
	var last atomic.Int64 // unix nanoseconds of the latest datagram either way
	last.Store(time.Now().UnixNano())

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		relayDatagrams(up, down, idle, &last, closeBoth)
	}()
	relayDatagrams(down, up, idle, &last, closeBoth)
	wg.Wait()
}

func relayDatagrams(dst, src net.Conn, idle time.Duration, last *atomic.Int64, abort func()) {
	defer abort()
	buf := make([]byte, maxDatagram)
	for {
		src.SetReadDeadline(time.Unix(0, last.Load()).Add(idle))
		n, err := src.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < idle {
				continue // the other direction was active; keep waiting
			}
			return
		}
		last.Store(time.Now().UnixNano())
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}
