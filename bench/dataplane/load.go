package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The load protocol between the bench's clients and its app server: a TCP
// connection opens with one operation byte and an 8-byte test ID.
//
//	opUpload   client → app: the server reads and counts into the test's counter
//	opDownload app → client: the server writes until the connection breaks; the client counts
//	opEcho     request/response: the server echoes every rrSize-byte message
//
// UDP datagrams to the app's UDP port start with the test ID; the server
// counts their bytes into the test's counter. Throughput is measured at the
// receiver over a window after a warm-up (counter sampled at both ends of
// the window), so socket and proxy buffers never count as delivered.
const (
	opUpload   = 'u'
	opDownload = 'd'
	opEcho     = 'r'

	headerLen = 9
	chunk     = 128 << 10
	rrSize    = 64
)

// counters holds one byte counter per test ID, shared by the app server
// and the bench, which run in one process.
type counters struct {
	mu sync.Mutex
	m  map[uint64]*atomic.Int64
}

func (c *counters) get(id uint64) *atomic.Int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[uint64]*atomic.Int64)
	}
	n, ok := c.m[id]
	if !ok {
		n = new(atomic.Int64)
		c.m[id] = n
	}
	return n
}

// find returns the counter of a running test, nil for an unknown ID (a
// late packet of a finished test).
func (c *counters) find(id uint64) *atomic.Int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[id]
}

// drop forgets a finished test's counter.
func (c *counters) drop(id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}

// appServer is the app behind the gateway: it serves the load protocol on a
// TCP and a UDP socket until its context ends. serve owns every goroutine
// it starts and returns when all have stopped.
type appServer struct {
	tcp  net.Listener
	udp  net.PacketConn
	recv *counters
	log  *slog.Logger
}

func (s *appServer) serve(ctx context.Context) {
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer wg.Wait()
	defer cancel()
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Go(func() {
		<-ctx.Done()
		s.tcp.Close()
		s.udp.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	wg.Go(func() { s.serveUDP() })
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("app server: accept", "err", err)
			}
			return
		}
		mu.Lock()
		if ctx.Err() != nil { // the closer may have run already
			mu.Unlock()
			c.Close()
			return
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			if err := s.handle(c); err != nil && ctx.Err() == nil {
				s.log.Debug("app server: connection", "err", err)
			}
		})
	}
}

func (s *appServer) handle(c net.Conn) error {
	var hdr [headerLen]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return fmt.Errorf("read header: %w", err)
	}
	id := binary.BigEndian.Uint64(hdr[1:])
	switch hdr[0] {
	case opUpload:
		n := s.recv.find(id)
		if n == nil {
			return fmt.Errorf("upload for unknown test %d", id)
		}
		buf := make([]byte, chunk)
		for {
			k, err := c.Read(buf)
			n.Add(int64(k))
			if err != nil {
				return nil
			}
		}
	case opDownload:
		buf := make([]byte, chunk)
		for {
			if _, err := c.Write(buf); err != nil {
				return nil
			}
		}
	case opEcho:
		buf := make([]byte, rrSize)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return nil
			}
			if _, err := c.Write(buf); err != nil {
				return nil
			}
		}
	default:
		return fmt.Errorf("unknown operation %q", hdr[0])
	}
}

func (s *appServer) serveUDP() {
	buf := make([]byte, 65536)
	for {
		k, _, err := s.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		if k < 8 {
			continue
		}
		if n := s.recv.find(binary.BigEndian.Uint64(buf[:8])); n != nil {
			n.Add(int64(k))
		}
	}
}

// dialFunc opens a connection to the app from a client's side.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// window is when a test counts: from warm after its start, for dur.
type window struct{ warm, dur time.Duration }

// sample reads a counter and the tunnel's CPU at the start and the end of
// the window (the caller's load already running) and returns what was
// delivered in it.
func (w window) sample(ctx context.Context, n *atomic.Int64, cpu func() float64) (tcpResult, error) {
	if err := sleep(ctx, w.warm); err != nil {
		return tcpResult{}, err
	}
	t0, n0, c0 := time.Now(), n.Load(), cpu()
	if err := sleep(ctx, w.dur); err != nil {
		return tcpResult{}, err
	}
	t1, n1, c1 := time.Now(), n.Load(), cpu()
	return tcpResult{bits: float64(n1-n0) * 8, sec: t1.Sub(t0).Seconds(), cpuSec: c1 - c0}, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func header(op byte, id uint64) []byte {
	h := make([]byte, headerLen)
	h[0] = op
	binary.BigEndian.PutUint64(h[1:], id)
	return h
}

// tcpResult is one throughput test's window.
type tcpResult struct {
	bits   float64 // delivered, counted at the receiver
	sec    float64 // the window's length
	cpuSec float64 // of the tunnel's processes, in the window
}

func (r tcpResult) bps() float64 { return r.bits / r.sec }

// cpuPerGbit is the tunnel's CPU seconds per Gbit delivered.
func (r tcpResult) cpuPerGbit() float64 { return r.cpuSec / (r.bits / 1e9) }

// tcpThroughput runs streams TCP connections to addr (op opUpload or
// opDownload) and measures the delivered rate in w.
func tcpThroughput(ctx context.Context, dial dialFunc, addr string, op byte, streams int, w window, recv *counters, id uint64, cpu func() float64) (tcpResult, error) {
	defer recv.drop(id)
	n := recv.get(id)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conns := make([]net.Conn, 0, streams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range streams {
		c, err := dial(ctx, "tcp", addr)
		if err != nil {
			return tcpResult{}, fmt.Errorf("dial %s: %w", addr, err)
		}
		conns = append(conns, c)
		if _, err := c.Write(header(op, id)); err != nil {
			return tcpResult{}, fmt.Errorf("write header: %w", err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for _, c := range conns {
		wg.Go(func() {
			buf := make([]byte, chunk)
			for ctx.Err() == nil {
				var k int
				var err error
				if op == opUpload {
					k, err = c.Write(buf)
				} else {
					k, err = c.Read(buf)
					n.Add(int64(k))
				}
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
			}
		})
	}
	res, err := w.sample(ctx, n, cpu)
	cancel()
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	close(errs)
	if err != nil {
		return tcpResult{}, err
	}
	if err := <-errs; err != nil {
		return tcpResult{}, fmt.Errorf("stream broke during the test: %w", err)
	}
	return res, nil
}

// udpResult is one fixed-rate UDP test.
type udpResult struct {
	offeredBps, deliveredBps float64
	cpuSec                   float64
}

// udpRate sends size-byte datagrams to addr at rateBps and measures what
// the app receives in w.
func udpRate(ctx context.Context, dial dialFunc, addr string, rateBps float64, size int, w window, recv *counters, id uint64, cpu func() float64) (udpResult, error) {
	defer recv.drop(id)
	n := recv.get(id)
	c, err := dial(ctx, "udp", addr)
	if err != nil {
		return udpResult{}, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	var sent atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // runs before wg.Wait: stops the sender
	wg.Go(func() {
		buf := make([]byte, size)
		binary.BigEndian.PutUint64(buf, id)
		// Send in bursts every millisecond, each catching up to the
		// rate since the start.
		const tick = time.Millisecond
		t := time.NewTicker(tick)
		defer t.Stop()
		start := time.Now()
		var done int64
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				due := int64(now.Sub(start).Seconds() * rateBps / 8 / float64(size))
				for ; done < due; done++ {
					// A full socket buffer (ENOBUFS) is a loss like any other.
					if _, err := c.Write(buf); err == nil {
						sent.Add(int64(size))
					}
				}
			}
		}
	})
	// The offered rate is sampled in the same window as the delivered one.
	if err := sleep(ctx, w.warm); err != nil {
		return udpResult{}, err
	}
	t0, n0, s0, c0 := time.Now(), n.Load(), sent.Load(), cpu()
	if err := sleep(ctx, w.dur); err != nil {
		return udpResult{}, err
	}
	t1, n1, s1, c1 := time.Now(), n.Load(), sent.Load(), cpu()
	cancel()
	sec := t1.Sub(t0).Seconds()
	return udpResult{offeredBps: float64(s1-s0) * 8 / sec, deliveredBps: float64(n1-n0) * 8 / sec, cpuSec: c1 - c0}, nil
}

// requestResponse sends count rrSize-byte requests on one TCP connection,
// one at a time with gap between them (an idle round trip, not a
// pipelined one), and returns the round-trip times of all but the first
// few.
func requestResponse(ctx context.Context, dial dialFunc, addr string, count int, gap time.Duration) ([]time.Duration, error) {
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if _, err := c.Write(header(opEcho, 0)); err != nil {
		return nil, fmt.Errorf("write header: %w", err)
	}
	const warmup = 20
	buf := make([]byte, rrSize)
	rtts := make([]time.Duration, 0, count)
	for i := range count + warmup {
		if err := sleep(ctx, gap); err != nil {
			return nil, err
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		t0 := time.Now()
		if _, err := c.Write(buf); err != nil {
			return nil, fmt.Errorf("request %d: %w", i, err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return nil, fmt.Errorf("response %d: %w", i, err)
		}
		if i >= warmup {
			rtts = append(rtts, time.Since(t0))
		}
	}
	return rtts, nil
}
