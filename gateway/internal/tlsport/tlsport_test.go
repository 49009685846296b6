package tlsport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn/bindtest"

	"github.com/cordonhq/cordon/pkg/wgstream"
)

func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gw"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// serve runs a port in front of a real bind and returns its address.
func serve(t *testing.T, cfg Config) (*Port, *wgstream.Bind, string) {
	t.Helper()
	b := wgstream.NewBind(bindtest.NewChannelBinds()[0], wgstream.Options{})
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	cfg.TLS, cfg.Streams = selfSigned(t), b
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { p.Serve(ctx, ln) })
	t.Cleanup(func() { cancel(); wg.Wait(); b.Close() })
	return p, b, ln.Addr().String()
}

func dialTLS(t *testing.T, addr string) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{ALPN}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s within 10 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPlaintextGetsNothing: a host that is not enrolled completes TLS,
// sends an HTTP request, and gets no answer: the stream is closed and the
// drop counted.
func TestPlaintextGetsNothing(t *testing.T) {
	p, b, addr := serve(t, Config{})
	c := dialTLS(t, addr)
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: gw\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 512)); err == nil || n > 0 {
		t.Fatalf("read %d bytes (err %v) from the TCP port, want a closed stream", n, err)
	}
	waitFor(t, "the drop counted", func() bool { return b.Drops.Load() == 1 })
	waitFor(t, "the slot freed", func() bool { return p.Stats().Open == 0 })
	if s := p.Stats(); s.Accepted != 1 {
		t.Fatalf("stats %+v, want 1 accepted", s)
	}
}

// TestBoundsPerSource: streams over the per-source bound are refused and
// counted; a closed stream frees its slot.
func TestBoundsPerSource(t *testing.T) {
	p, b, addr := serve(t, Config{PerSource: 2})
	c1, c2 := dialTLS(t, addr), dialTLS(t, addr)
	defer c2.Close()
	waitFor(t, "two streams open", func() bool { return b.Streams() == 2 })
	c3, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	c3.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c3.Read(make([]byte, 1)); err == nil {
		t.Fatal("a third stream from one source was served")
	}
	if s := p.Stats(); s.RefusedSource != 1 || s.Open != 2 {
		t.Fatalf("stats %+v, want 1 refused for its source and 2 open", s)
	}
	// The bind notices c1's end and frees its slot.
	c1.Close()
	waitFor(t, "the slot freed", func() bool { return p.Stats().Open == 1 })
	c4 := dialTLS(t, addr)
	defer c4.Close()
	waitFor(t, "a new stream taking the slot", func() bool { return b.Streams() == 2 })
}

// TestHandshakeTimeout: a connection that never says hello is closed
// after the timeout, and counted.
func TestHandshakeTimeout(t *testing.T) {
	p, _, addr := serve(t, Config{HandshakeTimeout: 50 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a silent connection got data")
	}
	waitFor(t, "the failure counted and the slot freed", func() bool {
		s := p.Stats()
		return s.HandshakeFailed == 1 && s.Open == 0
	})
}
