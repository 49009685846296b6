package agentstate_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/agentstate"
)

// signAgent issues an agent certificate the way the controller's CA does:
// CommonName id, OrganizationalUnit kind, client authentication only.
func (c *testCA) signAgent(t *testing.T, st *agentstate.State, id, kind string) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: id, OrganizationalUnit: []string{kind}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, st.TLSKey.Public(), c.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func agentWith(t *testing.T, ca *testCA, pinned []byte, id, kind string) *agentstate.State {
	t.Helper()
	st, err := agentstate.Keys(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SaveEnrollment(agentstate.Enrollment{ID: id}, ca.signAgent(t, st, id, kind), pinned); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestStreamTLSPinsGatewayIdentity: a client's stream to a gateway is
// accepted only from the certificate the pinned CA issued to the gateway
// the map names: not another gateway, not a client device, not another CA.
func TestStreamTLSPinsGatewayIdentity(t *testing.T) {
	pinned := newTestCA(t, "controller CA")
	other := newTestCA(t, "some other CA")
	client := agentWith(t, pinned, pinned.pem, "dev-1", "client")
	for _, tt := range []struct {
		name     string
		server   *agentstate.State
		wantOK   bool
		wantPeer string
	}{
		{"the gateway of the map", agentWith(t, pinned, pinned.pem, "gw-1", "gateway"), true, "gw-1"},
		{"another gateway", agentWith(t, pinned, pinned.pem, "gw-2", "gateway"), false, ""},
		{"a client device named like the gateway", agentWith(t, pinned, pinned.pem, "gw-1", "client"), false, ""},
		{"another CA's gw-1", agentWith(t, other, other.pem, "gw-1", "gateway"), false, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srvCfg, err := tt.server.ServerTLS("cordon-wg/1")
			if err != nil {
				t.Fatal(err)
			}
			if srvCfg.ClientAuth != tls.NoClientCert || srvCfg.MinVersion != tls.VersionTLS13 {
				t.Fatalf("server config: client auth %v, min version %x", srvCfg.ClientAuth, srvCfg.MinVersion)
			}
			cliCfg, err := client.PeerTLS("cordon-wg/1", "gw-1", "gateway")
			if err != nil {
				t.Fatal(err)
			}
			c, s := net.Pipe()
			defer c.Close()
			defer s.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			go tls.Server(s, srvCfg).HandshakeContext(ctx)
			cli := tls.Client(c, cliCfg)
			err = cli.HandshakeContext(ctx)
			if (err == nil) != tt.wantOK {
				t.Fatalf("handshake error %v, want ok=%v", err, tt.wantOK)
			}
			if err == nil && cli.ConnectionState().PeerCertificates[0].Subject.CommonName != tt.wantPeer {
				t.Fatalf("talking to %s", cli.ConnectionState().PeerCertificates[0].Subject.CommonName)
			}
		})
	}
	if _, err := client.PeerTLS("cordon-wg/1", "", "gateway"); err == nil {
		t.Fatal("PeerTLS without an identity succeeded")
	}
}
