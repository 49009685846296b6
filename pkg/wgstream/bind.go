package wgstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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
// CA and verifies the gateway's identity), on a goroutine of its own:
// wireguard-go calls Send from its TUN reader too, and a dial must not
// stall every peer's traffic. Packets sent meanwhile wait (up to
// maxPending) and go first once the stream is up; after a failed dial the
// endpoint is not dialed again for DialBackoff. The gateway side hands every
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
	dials   map[string]*dialing  // streams being dialed, by key
	failed  map[string]time.Time // when a dial last failed, by key
	dialCtx context.Context      // the dials' lifetime; set by Open
	stop    context.CancelFunc   // ends dialCtx
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
	// DialBackoff is how long after a failed dial the endpoint is not
	// dialed again (packets to it are refused meanwhile); 0 means 1 s.
	DialBackoff time.Duration
	// OnDialError, if set, hears of each failed dial (to log it: a TLS
	// endpoint that presents the wrong certificate fails here).
	OnDialError func(addr string, err error)
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
	if opts.DialBackoff <= 0 {
		opts.DialBackoff = time.Second
	}
	b := &Bind{inner: inner, opts: opts, closed: make(chan struct{}), streams: map[string]*stream{},
		dials: map[string]*dialing{}, failed: map[string]time.Time{}, stop: func() {}, recv: make(chan inbound, 256)}
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
	b.dialCtx, b.stop = context.WithCancel(context.Background())
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
	b.stop()
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
		if errors.Is(err, syscall.EINVAL) && ep.SrcIP().IsValid() {
			// wireguard-go clears a sticky source address that a route
			// change made stale only for its own bind type (its route
			// listener does not run for a wrapped bind): a send from an
			// address this host no longer has fails (EINVAL), so clear
			// it and send once more from whatever the routes pick now.
			ep.ClearSrc()
			err = b.inner.Send(bufs, ep)
		}
		return err
	}
	b.probe(bufs, sep)
	s, err := b.streamFor(sep, bufs)
	if s == nil {
		return err // nil: queued for a stream being dialed
	}
	s.wmu.Lock()
	err = b.writeLocked(s, bufs)
	s.wmu.Unlock()
	if err != nil {
		b.drop(s)
		return fmt.Errorf("send to %s: %w", sep.key, err)
	}
	return nil
}

// writeLocked writes bufs to s as frames; the caller holds s.wmu.
func (b *Bind) writeLocked(s *stream, bufs [][]byte) error {
	out := s.out[:0]
	var err error
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
	return err
}

// maxPending bounds the packets waiting for a stream being dialed (the
// oldest go first): a handshake initiation and what WireGuard staged.
const maxPending = 64

// dialing is a stream being dialed and the packets sent to it meanwhile,
// in order.
type dialing struct{ pending [][]byte }

// streamFor returns ep's stream. When it is a dial endpoint without one,
// it queues bufs and starts a dial (unless one runs, or the last failed
// within DialBackoff) and returns nil and nil.
func (b *Bind) streamFor(ep *Endpoint, bufs [][]byte) (*stream, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.streams[ep.key]; s != nil {
		return s, nil
	}
	if !b.open {
		return nil, net.ErrClosed
	}
	if ep.addr == "" || b.opts.Dial == nil {
		return nil, fmt.Errorf("stream %s is gone (the peer reconnects)", ep.key)
	}
	d := b.dials[ep.key]
	if d == nil {
		if at, ok := b.failed[ep.key]; ok && time.Since(at) < b.opts.DialBackoff {
			return nil, fmt.Errorf("stream %s: the last dial failed %v ago; retrying after %v", ep.key, time.Since(at).Round(time.Millisecond), b.opts.DialBackoff)
		}
		d = &dialing{}
		b.dials[ep.key] = d
		ctx := b.dialCtx
		b.wg.Go(func() { b.dial(ctx, ep, d) })
	}
	for _, p := range bufs {
		if len(d.pending) == maxPending {
			d.pending = d.pending[1:]
		}
		d.pending = append(d.pending, bytes.Clone(p))
	}
	return nil, nil
}

// dial opens ep's stream and sends what waited for it before anything
// else can be sent on it.
func (b *Bind) dial(ctx context.Context, ep *Endpoint, d *dialing) {
	dctx, cancel := context.WithTimeout(ctx, b.opts.DialTimeout)
	c, err := b.opts.Dial(dctx, ep.addr)
	cancel()
	b.mu.Lock()
	delete(b.dials, ep.key)
	pending := d.pending
	if err != nil {
		b.failed[ep.key] = time.Now()
		b.mu.Unlock()
		if b.opts.OnDialError != nil && ctx.Err() == nil {
			b.opts.OnDialError(ep.addr, err)
		}
		return
	}
	delete(b.failed, ep.key)
	s, added := b.addLocked(ep, c)
	if !added {
		b.mu.Unlock()
		return
	}
	// Held before the stream is visible: Sends that find it wait, and the
	// queued packets go first.
	s.wmu.Lock()
	b.mu.Unlock()
	err = b.writeLocked(s, pending)
	s.wmu.Unlock()
	if err != nil {
		b.drop(s)
	}
}

// AddStream hands an accepted, authenticated connection to the bind (the
// gateway side). The bind owns c from now on.
func (b *Bind) AddStream(c net.Conn) error {
	ep := &Endpoint{key: "tls-in://" + c.RemoteAddr().String()}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		ep.dst = ap
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.addLocked(ep, c); !ok {
		return fmt.Errorf("add stream %s: the bind is closed, or has it already: %w", ep.key, net.ErrClosed)
	}
	return nil
}

// addLocked makes c ep's stream and starts its reader; it closes c and
// reports false when the bind is closed or ep has a stream already.
func (b *Bind) addLocked(ep *Endpoint, c net.Conn) (*stream, bool) {
	if !b.open || b.streams[ep.key] != nil {
		c.Close()
		return nil, false
	}
	s := &stream{key: ep.key, c: c}
	b.streams[ep.key] = s
	closed := b.closed
	b.wg.Go(func() { b.read(s, ep, closed) })
	return s, true
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
