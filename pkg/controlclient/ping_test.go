package controlclient

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// An agent sends ping frames only to a controller that said it takes them
// (capability 7): an older controller closes the connection on a frame
// type it does not know.
func TestPingsOnlyToControllersThatTakeThem(t *testing.T) {
	for _, capability := range []int{0, controlproto.MinPingCapability} {
		got := pingsFrom(t, capability)
		if want := capability >= controlproto.MinPingCapability; got != want {
			t.Errorf("controller of capability %d: agent sent pings %v, want %v", capability, got, want)
		}
	}
}

// pingsFrom serves one agent a whole map marked with capability, then
// watches what the agent sends for 20 keep-alive intervals.
func pingsFrom(t *testing.T, capability int) bool {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ln, err := quic.ListenAddr("127.0.0.1:0", serverTLS(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const keepAlive = 10 * time.Millisecond
	c := New(Config{
		Addr: ln.Addr().String(), TLS: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{controlproto.ALPN}},
		KeepAlive: keepAlive,
		OnFrame:   func(*controlproto.Frame) error { return nil },
	})
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	conn, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s, err := conn.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if f, err := controlproto.ReadFrame(s); err != nil || f.Type != controlproto.TypeHello {
		t.Fatalf("first frame %v, %v; want hello", f, err)
	}
	m := &controlproto.Frame{Type: controlproto.TypeGatewayMap, GatewayMap: &controlproto.GatewayMap{Revision: 1}, Capability: capability}
	if err := controlproto.WriteFrame(s, m); err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(20 * keepAlive))
	for {
		f, err := controlproto.ReadFrame(s)
		if err != nil {
			if nerr, ok := errors.AsType[net.Error](err); ok && nerr.Timeout() {
				return false // none in the window
			}
			t.Fatalf("reading the agent's frames: %v", err)
		}
		if f.Type == controlproto.TypePing {
			return true
		}
	}
}

func serverTLS(t *testing.T) *tls.Config {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: []string{controlproto.ALPN}}
}
