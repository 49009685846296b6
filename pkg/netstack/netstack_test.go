package netstack_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/netstack"
	"github.com/cordonhq/cordon/pkg/netstack/netstacktest"
	"golang.zx2c4.com/wireguard/tun"
)

// listenLoopback listens on host loopback address ip (the no-root demo puts
// apps at 127.0.0.2, 127.0.0.3, ...); it skips if the host refuses.
func listenLoopback(t *testing.T, network, ip string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Skipf("cannot listen on %s here: %v", ip, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serveHTTP serves a body naming the app on ln until the test ends.
func serveHTTP(t *testing.T, ln net.Listener, app string) {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s %s", app, r.URL.Path)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

func httpVia(st *netstack.Stack) *http.Client {
	return &http.Client{
		Transport: &http.Transport{DialContext: st.DialContext, DisableKeepAlives: true},
		Timeout:   10 * time.Second,
	}
}

func TestForwardTCPToHostLoopbackThroughWireGuard(t *testing.T) {
	for _, ip := range []string{"127.0.0.2", "::1"} {
		t.Run(ip, func(t *testing.T) {
			netstacktest.LeakCheck(t)
			ln := listenLoopback(t, "tcp", ip)
			serveHTTP(t, ln, "ehr")
			p := netstacktest.NewPair(t, netstacktest.PairConfig{})

			resp, err := httpVia(p.Client).Get("http://" + ln.Addr().String() + "/chart")
			if err != nil {
				t.Fatalf("GET through tunnel: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(body), "hello from ehr /chart"; got != want {
				t.Fatalf("body = %q, want %q", got, want)
			}
			if st := p.Gateway.Stats(); st.TCPFlows != 1 || st.DialFailures != 0 {
				t.Errorf("gateway stats = %+v, want 1 TCP flow and no dial failure", st)
			}
		})
	}
}

func TestForwardTCPRefusedUpstreamIsRefusedNotHung(t *testing.T) {
	netstacktest.LeakCheck(t)
	// A port on 127.0.0.2 where nothing listens.
	ln := listenLoopback(t, "tcp", "127.0.0.2")
	dead := ln.Addr().String()
	ln.Close()
	p := netstacktest.NewPair(t, netstacktest.PairConfig{})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := p.Client.DialContext(ctx, "tcp", dead)
	if err == nil {
		c.Close()
		t.Fatal("dial to a closed port succeeded")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial error = %v, want connection refused", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("refusal took %v", d)
	}
	if st := p.Gateway.Stats(); st.DialFailures != 1 || st.TCPFlows != 0 {
		t.Errorf("gateway stats = %+v, want 1 dial failure", st)
	}
}

// Regression guard for gVisor's default: without AllowLoopback, packets to
// 127.0.0.x arriving from the tunnel are martians and silently dropped.
func TestLoopbackDroppedWithoutAllowLoopback(t *testing.T) {
	netstacktest.LeakCheck(t)
	ln := listenLoopback(t, "tcp", "127.0.0.2")
	p := netstacktest.NewPair(t, netstacktest.PairConfig{NoLoopback: true})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	c, err := p.Client.DialContext(ctx, "tcp", ln.Addr().String())
	if err == nil {
		c.Close()
		t.Fatal("loopback destination reached with AllowLoopback off")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial error = %v, want a timeout (dropped SYN)", err)
	}
}

func TestForwardTCPHalfClose(t *testing.T) {
	netstacktest.LeakCheck(t)
	ln := listenLoopback(t, "tcp", "127.0.0.3")
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// Read the whole request (until the client's FIN), then answer.
		req, _ := io.ReadAll(c)
		fmt.Fprintf(c, "got %d bytes", len(req))
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	p := netstacktest.NewPair(t, netstacktest.PairConfig{})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := p.Client.DialContext(ctx, "tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	payload := strings.Repeat("x", 200_000) // many segments, more than one window
	if _, err := io.WriteString(c, payload); err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(resp), "got 200000 bytes"; got != want {
		t.Fatalf("response = %q, want %q", got, want)
	}
}

func TestForwardUDPAndIdleTimeout(t *testing.T) {
	netstacktest.LeakCheck(t)
	pc, err := net.ListenPacket("udp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	p := netstacktest.NewPair(t, netstacktest.PairConfig{
		Forward: &netstack.ForwardConfig{UDPIdleTimeout: 300 * time.Millisecond},
	})

	c, err := p.Client.DialContext(context.Background(), "udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2048)
	// The first datagram may race the WireGuard handshake; retry a few times.
	var got string
	for i := 0; i < 20 && got == ""; i++ {
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, err := c.Read(buf); err == nil {
			got = string(buf[:n])
		}
	}
	if got != "echo:ping" {
		t.Fatalf("UDP reply = %q, want echo:ping", got)
	}
	if st := p.Gateway.Stats(); st.UDPFlows != 1 {
		t.Errorf("gateway stats = %+v, want 1 UDP flow", st)
	}
	netstacktest.Eventually(t, 5*time.Second, func() bool { return p.Gateway.Stats().ActiveFlows == 0 },
		"UDP flow not closed after idle timeout: %+v", p.Gateway.Stats())
}

func TestForwardUsesInjectedDialerAndSkipsOwnAddress(t *testing.T) {
	netstacktest.LeakCheck(t)
	var calls atomic.Int32
	var seen atomic.Value
	p := netstacktest.NewPair(t, netstacktest.PairConfig{Forward: &netstack.ForwardConfig{
		Dial: func(ctx context.Context, f netstack.Flow) (net.Conn, error) {
			calls.Add(1)
			seen.Store(f)
			a, b := net.Pipe()
			go func() {
				defer b.Close()
				r := bufio.NewReader(b)
				line, _ := r.ReadString('\n')
				fmt.Fprintf(b, "fake upstream saw %s", line)
			}()
			return a, nil
		},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The gateway's own overlay address is never forwarded to the host.
	own := netip.AddrPortFrom(netstacktest.GatewayAddr, 22).String()
	if c, err := p.Client.DialContext(ctx, "tcp", own); err == nil {
		c.Close()
		t.Fatal("dial to the gateway's own address was forwarded")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial own address: %v, want refused", err)
	}
	if calls.Load() != 0 {
		t.Fatal("dialer called for the gateway's own address")
	}

	c, err := p.Client.DialContext(ctx, "tcp", "10.20.0.5:443")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "hi\n")
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(out), "fake upstream saw hi\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	f := seen.Load().(netstack.Flow)
	if f.Network != "tcp" || f.Dst.String() != "10.20.0.5:443" || f.Src.Addr() != netstacktest.ClientAddr {
		t.Errorf("flow = %+v", f)
	}
}

func TestCloseStopsActiveFlows(t *testing.T) {
	netstacktest.LeakCheck(t)
	ln := listenLoopback(t, "tcp", "127.0.0.2")
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	p := netstacktest.NewPair(t, netstacktest.PairConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := p.Client.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	up := <-accepted
	defer up.Close()
	if p.Gateway.Stats().ActiveFlows != 1 {
		t.Fatalf("active flows = %d, want 1", p.Gateway.Stats().ActiveFlows)
	}
	// Closing the gateway tears the idle flow down; the upstream side sees EOF.
	p.Gateway.Close()
	up.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := up.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("upstream read after gateway close: %v, want EOF", err)
	}
	if n := p.Gateway.Stats().ActiveFlows; n != 0 {
		t.Fatalf("active flows after Close = %d", n)
	}
}

func TestDeviceContract(t *testing.T) {
	netstacktest.LeakCheck(t)
	st, err := netstack.New(netstack.Config{Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.9")}, MTU: 1280})
	if err != nil {
		t.Fatal(err)
	}
	if ev := <-st.Events(); ev != tun.EventUp {
		t.Fatalf("first event = %v, want EventUp", ev)
	}
	if mtu, _ := st.MTU(); mtu != 1280 {
		t.Errorf("MTU = %d", mtu)
	}
	// Garbage is counted and dropped, not an error.
	if n, err := st.Write([][]byte{{0, 0, 0xff}, {}, make([]byte, 30)}, 0); n != 3 || err != nil {
		t.Errorf("Write(garbage) = %d, %v", n, err)
	}
	if st.Stats().BadPackets != 3 {
		t.Errorf("BadPackets = %d, want 3", st.Stats().BadPackets)
	}

	// A UDP send from the stack comes out of Read at the requested offset.
	c, err := st.DialContext(context.Background(), "udp", "192.0.2.1:53")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	const off = 16
	bufs := [][]byte{make([]byte, 2000), make([]byte, 2000)}
	sizes := make([]int, 2)
	n, err := st.Read(bufs, sizes, off)
	if err != nil || n != 1 {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if sizes[0] != 20+8+1 || bufs[0][off]>>4 != 4 {
		t.Errorf("packet size %d, version byte %#x", sizes[0], bufs[0][off])
	}
	c.Close()

	if _, err := st.DialContext(context.Background(), "tcp", "ehr.example.internal:443"); !errors.Is(err, netstack.ErrNeedIP) {
		t.Errorf("dial by name: %v, want ErrNeedIP", err)
	}
	if _, err := st.DialContext(context.Background(), "tcp6", "192.0.2.1:443"); err == nil {
		t.Error("tcp6 dial to an IPv4 address succeeded")
	}

	// Read blocked in another goroutine returns on Close.
	readErr := make(chan error, 1)
	go func() {
		_, err := st.Read(bufs, sizes, off)
		readErr <- err
	}()
	st.Close()
	st.Close() // idempotent
	if err := <-readErr; !errors.Is(err, netstack.ErrClosed) {
		t.Errorf("Read after Close = %v", err)
	}
	if _, err := st.Write([][]byte{make([]byte, 40)}, 0); !errors.Is(err, netstack.ErrClosed) {
		t.Errorf("Write after Close = %v", err)
	}
	if _, ok := <-st.Events(); ok {
		t.Error("Events not closed by Close")
	}
	if _, err := st.DialContext(context.Background(), "tcp", "192.0.2.1:1"); !errors.Is(err, netstack.ErrClosed) {
		t.Errorf("dial after Close = %v", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := netstack.New(netstack.Config{}); err == nil {
		t.Error("New with no address succeeded")
	}
	if _, err := netstack.New(netstack.Config{Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.1")}, MTU: 100}); err == nil {
		t.Error("New with MTU 100 succeeded")
	}
}
