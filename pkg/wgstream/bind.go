package wgstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// Bind is a conn.Bind that carries packets over the wrapped UDP bind and,
// for stream endpoints, over TLS streams with this package's framing.
//
// A stream endpoint is written "tls://host:port" wherever wireguard-go
// takes an endpoint (UAPI endpoint=, so a client switches a peer's path
// with an ordinary reconfiguration). The client side dials it on the first
// Send through Options.Dial (which does the TLS handshake with the pinned
// CA and verifies the gateway's identity). The gateway side hands every
// accepted, handshaken connection to AddStream; packets from it carry an
// endpoint of that connection, so wireguard-go's roaming sends the replies
// back down the same stream.
//
// Ownership: the Bind owns every stream (dialed or added) and one reading
// goroutine per stream; Close closes them all and waits for the readers.
// Open may follow Close (wireguard-go rebinds on port or mark changes).
type Bind struct {
	inner conn.Bind
	opts  Options

	mu      sync.Mutex
	open    bool
	closed  chan struct{} // closed by Close; replaced by Open
	streams map[string]*stream
	recv    chan inbound
	wg      sync.WaitGroup

	// watch is the UDP endpoints whose path the owner watches (Watch),
	// copied on write: the data path reads it without a lock.
	watch atomic.Pointer[watchSet]

	// Drops counts frames and streams dropped for bad framing (the stream
	// is closed after the first). Exported for metrics and tests.
	Drops atomic.Uint64
}

// Options configures a Bind.
type Options struct {
	// Dial opens a stream to addr (host:port). It must return a connection
	// that is already authenticated (TLS with the pinned CA). nil: this
	// Bind dials nothing (gateway side).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// DialTimeout bounds one dial; 0 means 2 s.
	DialTimeout time.Duration
	// FrameLimit bounds a received frame; 0 means MaxFrame.
	FrameLimit int
	// IdleTimeout closes a stream that delivered no frame for this long
	// (0: never). A gateway sets it so a silent connection does not hold
	// a slot; clients send a keepalive at least every 25 s.
	IdleTimeout time.Duration
	// WriteTimeout bounds one write to a stream; a stream whose peer stops
	// reading is closed instead of stalling WireGuard's sender. 0 means 5 s.
	WriteTimeout time.Duration
}

// Scheme prefixes a stream endpoint.
const Scheme = "tls://"

// ALPN is the TLS application protocol of a stream.
const ALPN = "cordon-wg/1"

var _ conn.Bind = (*Bind)(nil)

// NewBind wraps inner (nil: conn.NewDefaultBind()).
func NewBind(inner conn.Bind, opts Options) *Bind {
	if inner == nil {
		inner = conn.NewDefaultBind()
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 2 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 5 * time.Second
	}
	b := &Bind{inner: inner, opts: opts, closed: make(chan struct{}), streams: map[string]*stream{}, recv: make(chan inbound, 256)}
	close(b.closed)
	return b
}

type inbound struct {
	buf *[]byte // from bufPool; the receive function returns it
	n   int
	ep  *Endpoint
}

// bufPool holds frame buffers, so a reader allocates none per packet.
var bufPool = sync.Pool{New: func() any { b := make([]byte, MaxFrame); return &b }}

// take copies in into pkt and returns in's buffer to the pool.
func (in inbound) take(pkt []byte) int {
	n := copy(pkt, (*in.buf)[:in.n])
	bufPool.Put(in.buf)
	return n
}

// stream is one TLS connection carrying frames.
type stream struct {
	key string
	c   net.Conn
	wmu sync.Mutex
	out []byte
}

// Endpoint is a stream endpoint: a peer reached over a TLS stream.
type Endpoint struct {
	key  string // "tls://host:port" (dialed) or "tls-in://remote" (accepted)
	addr string // dial address; empty for accepted streams
	dst  netip.AddrPort
}

var _ conn.Endpoint = (*Endpoint)(nil)

func (e *Endpoint) ClearSrc()           {}
func (e *Endpoint) SrcToString() string { return "" }

// DstToString is what the UAPI "get" reports as the peer's endpoint. It is
// the stream's address (host:port) when that is an address, because UAPI
// readers (wgctrl, wg show) parse the endpoint as one; the key otherwise.
func (e *Endpoint) DstToString() string {
	if e.dst.IsValid() {
		return e.dst.String()
	}
	return e.key
}

// Key is the stream's name: "tls://host:port" (dialed) or
// "tls-in://remote" (accepted).
func (e *Endpoint) Key() string        { return e.key }
func (e *Endpoint) DstToBytes() []byte { b, _ := e.dst.MarshalBinary(); return b }
func (e *Endpoint) DstIP() netip.Addr  { return e.dst.Addr() }
func (e *Endpoint) SrcIP() netip.Addr  { return netip.Addr{} }

// Open opens the wrapped bind and adds one receive function for streams.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	fns, actual, err := b.inner.Open(port)
	if err != nil {
		return nil, 0, err
	}
	for i, fn := range fns {
		fns[i] = b.countReceived(fn)
	}
	b.open = true
	closed := make(chan struct{})
	b.closed = closed
	recv := b.recv
	fns = append(fns, func(pkts [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n := 0
		select {
		case in := <-recv:
			sizes[n] = in.take(pkts[n])
			eps[n] = in.ep
			n++
		case <-closed:
			return 0, net.ErrClosed
		}
		for n < len(pkts) {
			select {
			case in := <-recv:
				sizes[n] = in.take(pkts[n])
				eps[n] = in.ep
				n++
			default:
				return n, nil
			}
		}
		return n, nil
	})
	return fns, actual, nil
}

// Close closes the wrapped bind and every stream, and waits for the
// stream readers.
func (b *Bind) Close() error {
	b.mu.Lock()
	err := b.inner.Close()
	if b.open {
		close(b.closed)
		b.open = false
	}
	for k, s := range b.streams {
		s.c.Close()
		delete(b.streams, k)
	}
	b.mu.Unlock()
	b.wg.Wait()
	return err
}

func (b *Bind) SetMark(mark uint32) error { return b.inner.SetMark(mark) }
func (b *Bind) BatchSize() int            { return b.inner.BatchSize() }

// ParseEndpoint parses "tls://host:port" as a stream endpoint and hands
// anything else to the wrapped bind.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	addr, ok := strings.CutPrefix(s, Scheme)
	if !ok {
		return b.inner.ParseEndpoint(s)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return nil, fmt.Errorf("parse stream endpoint %q: want tls://host:port", s)
	}
	ep := &Endpoint{key: Scheme + addr, addr: addr}
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		ep.dst = ap
	}
	return ep, nil
}

// Send writes bufs to ep: over its stream for a stream endpoint (dialing
// it first if needed), else over the wrapped bind.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	sep, ok := ep.(*Endpoint)
	if !ok {
		b.countSent(bufs, ep)
		err := b.inner.Send(bufs, ep)
		if err != nil && ep.SrcIP().IsValid() {
			// wireguard-go clears a sticky source address that a route
			// change made stale only for its own bind type (its route
			// listener does not run for a wrapped bind): a send from an
			// address this host no longer has fails, so clear it and
			// send once more from whatever the routes pick now.
			ep.ClearSrc()
			err = b.inner.Send(bufs, ep)
		}
		return err
	}
	b.probe(bufs, sep)
	s, err := b.streamFor(sep)
	if err != nil {
		return err
	}
	s.wmu.Lock()
	out := s.out[:0]
	for _, p := range bufs {
		if out, err = AppendFrame(out, p); err != nil {
			break
		}
	}
	if err == nil {
		s.c.SetWriteDeadline(time.Now().Add(b.opts.WriteTimeout))
		_, err = s.c.Write(out)
	}
	s.out = out
	s.wmu.Unlock()
	if err != nil {
		b.drop(s)
		return fmt.Errorf("send to %s: %w", sep.key, err)
	}
	return nil
}

// streamFor returns ep's stream, dialing it when it is a dial endpoint
// without one.
func (b *Bind) streamFor(ep *Endpoint) (*stream, error) {
	b.mu.Lock()
	s, ok := b.streams[ep.key]
	open := b.open
	b.mu.Unlock()
	if ok {
		return s, nil
	}
	if !open {
		return nil, net.ErrClosed
	}
	if ep.addr == "" || b.opts.Dial == nil {
		return nil, fmt.Errorf("stream %s is gone (the peer reconnects)", ep.key)
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.DialTimeout)
	c, err := b.opts.Dial(ctx, ep.addr)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("dial stream %s: %w", ep.key, err)
	}
	return b.add(ep, c)
}

// AddStream hands an accepted, authenticated connection to the bind (the
// gateway side). The bind owns c from now on.
func (b *Bind) AddStream(c net.Conn) error {
	ep := &Endpoint{key: "tls-in://" + c.RemoteAddr().String()}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		ep.dst = ap
	}
	_, err := b.add(ep, c)
	return err
}

func (b *Bind) add(ep *Endpoint, c net.Conn) (*stream, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		c.Close()
		return nil, net.ErrClosed
	}
	if old, ok := b.streams[ep.key]; ok { // lost a dial race: keep the first
		c.Close()
		return old, nil
	}
	s := &stream{key: ep.key, c: c}
	b.streams[ep.key] = s
	closed := b.closed
	b.wg.Go(func() { b.read(s, ep, closed) })
	return s, nil
}

// read moves frames from s to the receive function until s fails or the
// bind closes.
func (b *Bind) read(s *stream, ep *Endpoint, closed <-chan struct{}) {
	defer b.drop(s)
	r := NewReader(s.c, b.opts.FrameLimit)
	for {
		if b.opts.IdleTimeout > 0 {
			s.c.SetReadDeadline(time.Now().Add(b.opts.IdleTimeout))
		}
		buf := bufPool.Get().(*[]byte)
		n, err := r.ReadFrame(*buf)
		if err != nil {
			bufPool.Put(buf)
			if errors.Is(err, ErrEmptyFrame) || errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrNotWireGuard) {
				b.Drops.Add(1)
			}
			return
		}
		select {
		case b.recv <- inbound{buf: buf, n: n, ep: ep}:
		case <-closed:
			bufPool.Put(buf)
			return
		}
	}
}

// drop closes s and forgets it (the next Send redials a dial endpoint).
func (b *Bind) drop(s *stream) {
	s.c.Close()
	b.mu.Lock()
	if b.streams[s.key] == s {
		delete(b.streams, s.key)
	}
	b.mu.Unlock()
}

// CloseStream closes the stream of endpoint (as ParseEndpoint takes it,
// "tls://host:port"), if one is open: a client that moved a gateway back
// to UDP frees the gateway's slot. The next Send to it dials again.
func (b *Bind) CloseStream(endpoint string) {
	b.mu.Lock()
	s := b.streams[endpoint]
	b.mu.Unlock()
	if s != nil {
		b.drop(s)
	}
}

// Streams returns how many streams are open.
func (b *Bind) Streams() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.streams)
}
