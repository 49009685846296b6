package main

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"
)

// startApp serves the load protocol on loopback until the test ends.
func startApp(t *testing.T) (*counters, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := net.ListenPacket("udp", l.Addr().String())
	if err != nil {
		l.Close()
		t.Skipf("udp on the same port: %v", err)
	}
	recv := &counters{}
	srv := &appServer{tcp: l, udp: p, recv: recv, log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return recv, l.Addr().String()
}

func loopbackDial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// The load protocol end to end on loopback: every test delivers bytes,
// counted at the receiver, and a finished test's counter is gone.
func TestLoadProtocol(t *testing.T) {
	recv, addr := startApp(t)
	ctx := t.Context()
	w := window{warm: 50 * time.Millisecond, dur: 200 * time.Millisecond}
	cpu := func() float64 { return 0 }
	for i, c := range []struct {
		name    string
		op      byte
		streams int
	}{{"up", opUpload, 1}, {"down", opDownload, 1}, {"up4", opUpload, 4}, {"down4", opDownload, 4}} {
		id := uint64(100 + i)
		r, err := tcpThroughput(ctx, loopbackDial, addr, c.op, c.streams, w, recv, id, cpu)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if r.bits <= 0 || r.sec <= 0 {
			t.Errorf("%s: delivered %v bits in %v s", c.name, r.bits, r.sec)
		}
		if recv.find(id) != nil {
			t.Errorf("%s: test %d's counter outlived it", c.name, id)
		}
	}
	u, err := udpRate(ctx, loopbackDial, addr, 50e6, 1200, w, recv, 200, cpu)
	if err != nil {
		t.Fatal(err)
	}
	if u.offeredBps <= 0 || u.deliveredBps <= 0 || u.deliveredBps > 1.01*u.offeredBps+1200*8/w.dur.Seconds() {
		t.Errorf("udp: offered %v, delivered %v bit/s", u.offeredBps, u.deliveredBps)
	}
	rtts, err := requestResponse(ctx, loopbackDial, addr, 50, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rtts) != 50 {
		t.Errorf("round trips: %d samples, want 50 (warm-up excluded)", len(rtts))
	}
}

// An upload for a test that is not running, a datagram of a finished test
// and an unknown operation are refused or ignored, never counted.
func TestLoadProtocolStrangers(t *testing.T) {
	recv, addr := startApp(t)
	live := recv.get(7)
	for _, h := range [][]byte{header(opUpload, 8), header('x', 7)} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(h)
		c.Write(make([]byte, 4096))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		// Closed with the sent bytes unread: EOF or a reset, not a timeout.
		if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("header %q: the server did not close the connection: %v", h[0], err)
		}
		c.Close()
	}
	u, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	stale := make([]byte, 100)
	binary.BigEndian.PutUint64(stale, 8)
	u.Write(stale)
	u.Write([]byte{1, 2, 3}) // shorter than an ID
	fresh := make([]byte, 100)
	binary.BigEndian.PutUint64(fresh, 7)
	deadline := time.Now().Add(5 * time.Second)
	for live.Load() == 0 && time.Now().Before(deadline) {
		u.Write(fresh)
		time.Sleep(10 * time.Millisecond)
	}
	if n := live.Load(); n == 0 || n%100 != 0 {
		t.Errorf("test 7 counted %d bytes, want a multiple of 100 (only its own datagrams)", n)
	}
	if recv.find(8) != nil {
		t.Error("a stale datagram or upload created a counter for test 8")
	}
}
