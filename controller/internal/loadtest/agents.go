//go:build loadtest

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// codeRevoked is the controller's QUIC close code for an agent that is no
// longer enrolled (control.codeRevoked); retrying would not help.
const codeRevoked quic.ApplicationErrorCode = 1

// agentsPerSocket is how many simulated agents share one UDP socket (one
// quic.Transport): QUIC tells their connections apart by connection ID,
// and the harness stays far below the file-descriptor limit.
const agentsPerSocket = 64

// fleet is the set of simulated agents and what they received.
type fleet struct {
	addr    string // controller host:port (UDP)
	caPool  *x509.CertPool
	dialSem chan struct{} // bounds handshakes in flight

	transports []*quic.Transport

	bytes     atomic.Int64 // control-frame bytes received, length prefixes included
	frames    atomic.Int64 // frames received
	lastFrame atomic.Int64 // UnixNano of the last frame any agent received
	dials     atomic.Int64 // connection attempts
	failures  atomic.Int64 // attempts or sessions that ended in an error
	revoked   atomic.Int64 // agents told they are not enrolled (they stop)
	badFrames atomic.Int64 // frames that did not decode

	errMu  sync.Mutex
	errors map[string]int // failures by kind, for the report

	wg sync.WaitGroup // every agent's goroutine
}

// simAgent is one simulated agent: like controlclient, it dials with its
// certificate, says hello, acknowledges every map it decodes, and
// reconnects with the same backoff when the connection drops.
type simAgent struct {
	ident identity
	tls   *tls.Config
	tr    *quic.Transport
	hello controlproto.Hello

	firstConn atomic.Int64 // UnixNano of the first hello sent, 0 before
	firstMap  atomic.Int64 // UnixNano of the first map received, 0 before
	maps      atomic.Int64 // maps received

	mu   sync.Mutex
	want *wanted // what the running change waits for, nil when nothing
}

// wanted is one agent's part of a change: the first map satisfying match
// is recorded at slot of the change's expectation.
type wanted struct {
	exp   *expectation
	slot  int
	match func(*controlproto.Frame) bool
}

// expectation collects the times at which the affected agents received a
// map showing the change.
type expectation struct {
	got  []atomic.Int64 // UnixNano per affected agent, 0 while waiting
	left atomic.Int64
	done chan struct{} // closed when left reaches 0
}

func newExpectation(n int) *expectation {
	e := &expectation{got: make([]atomic.Int64, n), done: make(chan struct{})}
	e.left.Store(int64(n))
	if n == 0 {
		close(e.done)
	}
	return e
}

func newFleet(addr string, caPool *x509.CertPool, dialConcurrency int) *fleet {
	return &fleet{addr: addr, caPool: caPool, dialSem: make(chan struct{}, dialConcurrency)}
}

// add prepares agents for identities, sharing UDP sockets.
func (f *fleet) add(ids []identity, hello controlproto.Hello) ([]*simAgent, error) {
	out := make([]*simAgent, len(ids))
	var tr *quic.Transport
	for i, id := range ids {
		if i%agentsPerSocket == 0 {
			conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				return nil, fmt.Errorf("agent socket: %w", err)
			}
			tr = &quic.Transport{Conn: conn}
			f.transports = append(f.transports, tr)
		}
		out[i] = &simAgent{
			ident: id,
			tr:    tr,
			hello: hello,
			tls: &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{id.cert},
				RootCAs:      f.caPool,
				ServerName:   "127.0.0.1",
				NextProtos:   []string{controlproto.ALPN},
			},
		}
	}
	return out, nil
}

// start runs every agent until ctx ends; close waits for them.
func (f *fleet) start(ctx context.Context, agents []*simAgent) {
	for _, a := range agents {
		f.wg.Go(func() { a.run(ctx, f) })
	}
}

// close waits for the agents (their context must have ended) and closes
// the sockets.
func (f *fleet) close() {
	f.wg.Wait()
	for _, tr := range f.transports {
		tr.Close()
		tr.Conn.Close()
	}
}

// noteError counts a failure by its kind: the error text without the
// parts that vary per connection.
func (f *fleet) noteError(err error) {
	kind := err.Error()
	var appErr *quic.ApplicationError
	var idle *quic.IdleTimeoutError
	var hs *quic.HandshakeTimeoutError
	var tErr *quic.TransportError
	switch {
	case errors.As(err, &appErr):
		kind = fmt.Sprintf("application error %d (remote %v): %s", appErr.ErrorCode, appErr.Remote, appErr.ErrorMessage)
	case errors.As(err, &idle):
		kind = "idle timeout"
	case errors.As(err, &hs):
		kind = "handshake timeout"
	case errors.As(err, &tErr):
		kind = fmt.Sprintf("transport error %s (remote %v)", tErr.ErrorCode, tErr.Remote)
	case errors.Is(err, context.DeadlineExceeded):
		kind = "dial deadline (10s) exceeded"
	}
	f.errMu.Lock()
	if f.errors == nil {
		f.errors = map[string]int{}
	}
	f.errors[kind]++
	f.errMu.Unlock()
}

// errorKinds returns the failures by kind, most frequent first.
func (f *fleet) errorKinds() string {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	kinds := slices.Collect(maps.Keys(f.errors))
	slices.SortFunc(kinds, func(a, b string) int { return f.errors[b] - f.errors[a] })
	var parts []string
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%d× %s", f.errors[k], k))
	}
	return strings.Join(parts, "; ")
}

func (a *simAgent) run(ctx context.Context, f *fleet) {
	backoff := 250 * time.Millisecond
	for {
		start := time.Now()
		err := a.session(ctx, f)
		if ctx.Err() != nil {
			return
		}
		f.failures.Add(1)
		f.noteError(err)
		var appErr *quic.ApplicationError
		if errors.As(err, &appErr) && appErr.Remote && appErr.ErrorCode == codeRevoked {
			f.revoked.Add(1)
			return
		}
		if time.Since(start) > 30*time.Second {
			backoff = 250 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 15*time.Second)
	}
}

// quicConfig is what controlclient dials with.
func quicConfig() *quic.Config {
	return &quic.Config{MaxIdleTimeout: controlproto.IdleTimeout, KeepAlivePeriod: controlproto.IdleTimeout / 2}
}

func (a *simAgent) session(ctx context.Context, f *fleet) error {
	select {
	case f.dialSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	f.dials.Add(1)
	udp, err := net.ResolveUDPAddr("udp", f.addr)
	if err != nil {
		<-f.dialSem
		return fmt.Errorf("resolve controller: %w", err)
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := a.tr.Dial(dctx, udp, a.tls, quicConfig())
	cancel()
	<-f.dialSem
	if err != nil {
		return fmt.Errorf("dial controller: %w", err)
	}
	defer conn.CloseWithError(0, "")
	stopClose := context.AfterFunc(ctx, func() { conn.CloseWithError(0, "harness stopping") })
	defer stopClose()
	stream, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return fmt.Errorf("open control stream: %w", err)
	}
	hello := a.hello
	hello.CapabilityVersion = controlproto.CapabilityVersion
	if err := controlproto.WriteFrame(stream, &controlproto.Frame{Type: controlproto.TypeHello, Hello: &hello}); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	a.firstConn.CompareAndSwap(0, time.Now().UnixNano())
	// Ping frames every KeepAlive, as controlclient sends them.
	var wmu sync.Mutex
	write := func(f *controlproto.Frame) error {
		wmu.Lock()
		defer wmu.Unlock()
		return controlproto.WriteFrame(stream, f)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	pctx, stopPings := context.WithCancel(conn.Context())
	defer stopPings()
	wg.Go(func() {
		t := time.NewTicker(controlproto.KeepAlive)
		defer t.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
				if write(&controlproto.Frame{Type: controlproto.TypePing}) != nil {
					return
				}
			}
		}
	})
	var hdr [4]byte
	var buf []byte
	var last controlproto.Maps
	for {
		if _, err := io.ReadFull(stream, hdr[:]); err != nil {
			return fmt.Errorf("read frame: %w", err)
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n > controlproto.MaxFrameSize {
			return fmt.Errorf("frame of %d bytes: %w", n, controlproto.ErrFrameTooLarge)
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(stream, buf); err != nil {
			return fmt.Errorf("read frame body: %w", err)
		}
		now := time.Now()
		f.bytes.Add(int64(4 + n))
		f.frames.Add(1)
		f.lastFrame.Store(now.UnixNano())
		fr, err := controlproto.DecodeFrame(buf)
		if err != nil {
			f.badFrames.Add(1)
			continue
		}
		// Drop big map buffers between frames: 10,000 agents holding a
		// 10 kB buffer each is fine, one gateway holding 10 MB is too.
		if cap(buf) > 64<<10 {
			buf = nil
		}
		// Deltas (capability 6) apply to the last map of this
		// connection, as controlclient does for the real agents.
		ack := &controlproto.Ack{}
		if fr.GatewayDelta != nil || fr.ClientDelta != nil {
			fr, ack.Revision, err = last.Expand(fr)
		}
		if err != nil {
			f.badFrames.Add(1)
			ack.Error, ack.Resync = err.Error(), true
		} else {
			rev, isMap := fr.MapRevision()
			if !isMap {
				continue
			}
			ack.Revision = rev
			last.Remember(fr)
			a.maps.Add(1)
			a.firstMap.CompareAndSwap(0, now.UnixNano())
			a.check(fr, now)
		}
		if err := write(&controlproto.Frame{Type: controlproto.TypeAck, Ack: ack}); err != nil {
			return fmt.Errorf("send ack: %w", err)
		}
	}
}

// check records fr against the running change's expectation.
func (a *simAgent) check(fr *controlproto.Frame, at time.Time) {
	a.mu.Lock()
	w := a.want
	if w == nil || !w.match(fr) {
		a.mu.Unlock()
		return
	}
	a.want = nil
	a.mu.Unlock()
	w.exp.got[w.slot].Store(at.UnixNano())
	if w.exp.left.Add(-1) == 0 {
		close(w.exp.done)
	}
}

func (a *simAgent) expect(w *wanted) {
	a.mu.Lock()
	a.want = w
	a.mu.Unlock()
}
