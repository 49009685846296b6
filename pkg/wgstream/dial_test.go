package wgstream

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn/bindtest"
)

// TestDialDoesNotBlockSend: wireguard-go calls Send from its TUN reader,
// so a slow dial must not hold it. Packets sent while the stream is being
// dialed wait and arrive first, in order; a failed dial is reported and
// not retried at once; Close ends a dial in progress.
func TestDialDoesNotBlockSend(t *testing.T) {
	release := make(chan struct{})
	gates := map[string]chan struct{}{"192.0.2.1:443": release, "192.0.2.2:443": make(chan struct{})} // the second never opens
	server := make(chan net.Conn, 1)
	var dials atomic.Int32
	var dialErrs atomic.Int32
	fail := errors.New("refused")
	b := NewBind(bindtest.NewChannelBinds()[0], Options{
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			dials.Add(1)
			if addr == "192.0.2.9:443" {
				return nil, fail
			}
			select {
			case <-gates[addr]:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			c1, c2 := net.Pipe()
			server <- c2
			return c1, nil
		},
		DialTimeout: time.Minute,
		DialBackoff: time.Hour,
		OnDialError: func(addr string, err error) {
			if errors.Is(err, fail) {
				dialErrs.Add(1)
			}
		},
	})
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ep, err := b.ParseEndpoint("tls://192.0.2.1:443")
	if err != nil {
		t.Fatal(err)
	}
	pkts := [][]byte{wgMsg(1, 148), wgMsg(4, 32), wgMsg(4, 64)}
	for _, p := range pkts {
		if err := b.Send([][]byte{p}, ep); err != nil { // returns while the dial hangs
			t.Fatalf("Send while dialing: %v", err)
		}
	}
	waitFor(t, "the dial to start", func() bool { return dials.Load() >= 1 })
	close(release)
	srv := <-server
	r := NewReader(srv, 0)
	buf := make([]byte, MaxFrame)
	for i, want := range pkts {
		srv.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := r.ReadFrame(buf)
		if err != nil || !bytes.Equal(buf[:n], want) {
			t.Fatalf("frame %d: %d bytes, %v; want the packet sent while dialing", i, n, err)
		}
	}

	// A refused dial is reported once and not retried within the backoff.
	bad, _ := b.ParseEndpoint("tls://192.0.2.9:443")
	b.Send([][]byte{pkts[0]}, bad)
	waitFor(t, "the failed dial reported", func() bool { return dialErrs.Load() == 1 })
	if err := b.Send([][]byte{pkts[0]}, bad); err == nil {
		t.Fatal("Send within the backoff after a failed dial succeeded")
	}
	if n := dials.Load(); n != 2 {
		t.Fatalf("%d dials, want 2 (one per endpoint: three Sends while dialing share one; none within the backoff)", n)
	}

	// Close ends a dial in progress.
	slow, _ := b.ParseEndpoint("tls://192.0.2.2:443")
	b.Send([][]byte{pkts[0]}, slow)
	done := make(chan struct{})
	go func() { b.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for a dial")
	}
}
