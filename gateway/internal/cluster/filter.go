package cluster

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// filterTransport wraps memberlist's NetTransport so that only the members
// the controller lists exchange anything with this node: packets must come
// from a listed member's address (memberlist sends UDP from its bound
// port), streams from a listed member's IP (their source port is
// ephemeral), and nothing is sent or dialled elsewhere. A member the
// controller stops listing can neither answer probes nor refute being
// suspected: it is declared dead and stays out.
//
// One goroutine forwards what passes from the inner transport's channels
// to ours; Shutdown stops it and the inner transport.
type filterTransport struct {
	inner   *memberlist.NetTransport
	auth    *atomic.Pointer[authSet]
	packets chan *memberlist.Packet
	streams chan net.Conn
	closing chan struct{} // closed first on Shutdown: forward stops handing on
	done    chan struct{} // closed once the inner transport stopped
	once    sync.Once
	wg      sync.WaitGroup
	dropped atomic.Uint64 // packets and streams from unlisted sources
	// Packet bytes sent and received (UDP: probes, gossip, notices);
	// streams (joins, push/pull every 15 s, activity) are not counted.
	sentBytes, recvBytes atomic.Uint64
}

var _ memberlist.NodeAwareTransport = (*filterTransport)(nil)

func newFilterTransport(inner *memberlist.NetTransport, auth *atomic.Pointer[authSet]) *filterTransport {
	t := &filterTransport{inner: inner, auth: auth, packets: make(chan *memberlist.Packet),
		streams: make(chan net.Conn), closing: make(chan struct{}), done: make(chan struct{})}
	t.wg.Go(t.forward)
	return t
}

func (t *filterTransport) forward() {
	for {
		select {
		case <-t.done:
			return
		case p := <-t.inner.PacketCh():
			if !t.allowPacket(p.From) {
				t.dropped.Add(1)
				continue
			}
			t.recvBytes.Add(uint64(len(p.Buf)))
			select {
			case t.packets <- p:
			case <-t.closing: // dropped: nobody may read any more
			}
		case conn := <-t.inner.StreamCh():
			if !t.allowStream(conn.RemoteAddr()) {
				t.dropped.Add(1)
				conn.Close()
				continue
			}
			select {
			case t.streams <- conn:
			case <-t.closing:
				conn.Close()
			}
		}
	}
}

func netAddrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

func (t *filterTransport) allowPacket(from net.Addr) bool {
	return t.auth.Load().addrs[netAddrPort(from)]
}

func (t *filterTransport) allowStream(from net.Addr) bool {
	return t.auth.Load().ips[netAddrPort(from).Addr()]
}

func (t *filterTransport) allowTo(addr string) bool {
	ap, ok := parseAddr(addr)
	return ok && t.auth.Load().addrs[ap]
}

func (t *filterTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

func (t *filterTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress sends nothing to an unlisted address, and says it did:
// the probe of a member just dropped from the list then simply fails.
func (t *filterTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if !t.allowTo(a.Addr) {
		return time.Now(), nil
	}
	t.sentBytes.Add(uint64(len(b)))
	return t.inner.WriteToAddress(b, a)
}

func (t *filterTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *filterTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *filterTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if !t.allowTo(a.Addr) {
		return nil, fmt.Errorf("cluster: %s is not a listed member's address", a.Addr)
	}
	return t.inner.DialAddressTimeout(a, timeout)
}

func (t *filterTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown stops the inner transport and the forwarder; idempotent. The
// forwarder keeps draining (and dropping) while the inner listeners stop:
// one blocked handing over a packet would never see its socket close.
func (t *filterTransport) Shutdown() error {
	var err error
	t.once.Do(func() {
		close(t.closing)
		err = t.inner.Shutdown()
		close(t.done)
		t.wg.Wait()
	})
	return err
}
