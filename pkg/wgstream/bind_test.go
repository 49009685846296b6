package wgstream

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// testTLS returns a server config with a certificate for "gw" issued by a
// fresh CA, and a client config that pins that CA.
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "gw"}, DNSNames: []string{"gw"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	server = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	client = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "gw"}
	return server, client
}

func uapiConf(priv, peer wgtypes.Key, endpoint, allowed string) string {
	s := fmt.Sprintf("private_key=%s\nlisten_port=0\nreplace_peers=true\npublic_key=%s\nreplace_allowed_ips=true\nallowed_ip=%s\n",
		hex.EncodeToString(priv[:]), hex.EncodeToString(peer[:]), allowed)
	if endpoint != "" {
		s += "endpoint=" + endpoint + "\n"
	}
	return s
}

// TestBindCarriesWireGuardOverTLS runs two real wireguard-go devices whose
// only path is a loopback TLS stream: the client dials, the gateway
// accepts, and a ping crosses both ways.
func TestBindCarriesWireGuardOverTLS(t *testing.T) {
	srvTLS, cliTLS := testTLS(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvTLS)
	if err != nil {
		t.Fatal(err)
	}
	inner := bindtest.NewChannelBinds() // no UDP path at all
	gwBind := NewBind(inner[1], Options{})
	var accept sync.WaitGroup
	t.Cleanup(func() { ln.Close(); accept.Wait() })
	accept.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if err := c.(*tls.Conn).HandshakeContext(context.Background()); err != nil {
				c.Close()
				continue
			}
			gwBind.AddStream(c)
		}
	})
	var dials int
	var dmu sync.Mutex
	cliBind := NewBind(inner[0], Options{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		dmu.Lock()
		dials++
		dmu.Unlock()
		d := tls.Dialer{Config: cliTLS}
		return d.DialContext(ctx, "tcp", addr)
	}})

	ck, _ := wgtypes.GeneratePrivateKey()
	gk, _ := wgtypes.GeneratePrivateKey()
	log := &device.Logger{Verbosef: device.DiscardLogf, Errorf: device.DiscardLogf}
	ctun, gtun := tuntest.NewChannelTUN(), tuntest.NewChannelTUN()
	cdev := device.NewDevice(ctun.TUN(), cliBind, log)
	t.Cleanup(cdev.Close)
	gdev := device.NewDevice(gtun.TUN(), gwBind, log)
	t.Cleanup(gdev.Close)
	cAddr, gAddr := netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.1")
	if err := cdev.IpcSet(uapiConf(ck, gk.PublicKey(), Scheme+ln.Addr().String(), gAddr.String()+"/32")); err != nil {
		t.Fatal(err)
	}
	if err := gdev.IpcSet(uapiConf(gk, ck.PublicKey(), "", cAddr.String()+"/32")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*device.Device{cdev, gdev} {
		if err := d.Up(); err != nil {
			t.Fatal(err)
		}
	}

	expect := func(in chan []byte, want []byte, what string) {
		t.Helper()
		select {
		case got := <-in:
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: packet differs", what)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no packet within 10 s", what)
		}
	}
	req := tuntest.Ping(gAddr, cAddr)
	ctun.Outbound <- req
	expect(gtun.Inbound, req, "client to gateway")
	resp := tuntest.Ping(cAddr, gAddr)
	gtun.Outbound <- resp
	expect(ctun.Inbound, resp, "gateway to client (over the accepted stream)")
	dmu.Lock()
	defer dmu.Unlock()
	if dials != 1 {
		t.Fatalf("client dialed %d streams, want 1", dials)
	}
}

// TestBindDropsBadStream: a peer that sends plaintext on the stream gets
// a counted drop and a closed stream.
func TestBindDropsBadStream(t *testing.T) {
	inner := bindtest.NewChannelBinds()
	b := NewBind(inner[0], Options{})
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	c1, c2 := net.Pipe()
	if err := b.AddStream(c1); err != nil {
		t.Fatal(err)
	}
	go c2.Write([]byte("\x00\x20GET / HTTP/1.1\r\nHost: ehr.local\r\n"))
	// The bind closes its end: a read on ours ends.
	c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err == nil {
		t.Fatal("stream still open after plaintext")
	}
	if got := b.Drops.Load(); got != 1 {
		t.Fatalf("drops: got %d, want 1", got)
	}
}
