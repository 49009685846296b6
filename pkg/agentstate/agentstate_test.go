package agentstate_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/agentstate"
)

const alpn = "cordon-test/1"

// testCA is a minimal CA standing in for the controller's (pkg/ may not
// import controller/).
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// sign issues a certificate for pub (from a CSR when csrPEM is set).
func (c *testCA) sign(t *testing.T, csrPEM string, pub any, cn string, eku x509.ExtKeyUsage, dns ...string) []byte {
	t.Helper()
	if csrPEM != "" {
		b, _ := pem.Decode([]byte(csrPEM))
		if b == nil || b.Type != "CERTIFICATE REQUEST" {
			t.Fatalf("CSR is not PEM: %q", csrPEM)
		}
		req, err := x509.ParseCertificateRequest(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if err := req.CheckSignature(); err != nil {
			t.Fatalf("CSR signature: %v", err)
		}
		pub = req.PublicKey
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{eku},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func perm(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// enrolled returns a state directory with keys and an enrollment signed by
// ca.
func enrolled(t *testing.T, ca *testCA) (*agentstate.State, agentstate.Enrollment) {
	t.Helper()
	st, err := agentstate.Keys(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	csr, err := st.CSR("laptop")
	if err != nil {
		t.Fatal(err)
	}
	e := agentstate.Enrollment{
		ID: "dev-1", User: "nurse", OverlayAddr: netip.MustParseAddr("100.64.0.7"),
		Controller: "https://ctl.example:8443", ControlAddr: "ctl.example:8443",
	}
	if err := st.SaveEnrollment(e, ca.sign(t, csr, nil, "dev-1", x509.ExtKeyUsageClientAuth), ca.pem); err != nil {
		t.Fatal(err)
	}
	return st, e
}

func TestKeysGeneratedOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "state")
	first, err := agentstate.Keys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if first.WGKey.IsZero() || first.TLSKey == nil {
		t.Fatal("Keys returned no keys")
	}
	for i := range 3 {
		again, err := agentstate.Keys(dir)
		if err != nil {
			t.Fatal(err)
		}
		if !again.WGKey.Equal(first.WGKey) {
			t.Fatalf("call %d: WireGuard key changed", i+2)
		}
		if !again.TLSKey.Equal(first.TLSKey) {
			t.Fatalf("call %d: TLS key changed", i+2)
		}
	}
	if got := perm(t, dir); got != 0o700 {
		t.Errorf("state dir mode %v, want 0700", got)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("state dir holds %d files after Keys, want the 2 key files (no temporaries)", len(entries))
	}
	for _, e := range entries {
		if got := perm(t, filepath.Join(dir, e.Name())); got != 0o600 {
			t.Errorf("%s mode %v, want 0600", e.Name(), got)
		}
	}
	// Another directory, other keys.
	other, err := agentstate.Keys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if other.WGKey.Equal(first.WGKey) || other.TLSKey.Equal(first.TLSKey) {
		t.Error("two state directories share a key")
	}
}

// A state dir that existed open to group and others (made by hand, a
// package or a volume) is made 0700 before any key is written into it;
// the keys in it are kept.
func TestKeysTightenOpenStateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	first, err := agentstate.Keys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	again, err := agentstate.Keys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := perm(t, dir); got != 0o700 {
		t.Errorf("state dir mode %v after Keys, want 0700", got)
	}
	if !again.WGKey.Equal(first.WGKey) || !again.TLSKey.Equal(first.TLSKey) {
		t.Error("tightening the directory changed the keys")
	}
}

// A damaged key file is an error, never replaced by a new identity.
func TestKeysDamaged(t *testing.T) {
	tests := []struct {
		name, file string
		content    []byte
	}{
		{"wireguard key not base64", "wireguard.key", []byte("not a key\n")},
		{"wireguard key short", "wireguard.key", []byte("AAAA\n")},
		{"tls key not PEM", "tls-key.pem", []byte("junk")},
		{"tls key garbage", "tls-key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("xx")})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := agentstate.Keys(dir); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, tt.file)
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := agentstate.Keys(dir); err == nil {
				t.Fatal("Keys accepted a damaged key file")
			} else if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			if b, _ := os.ReadFile(path); !bytes.Equal(b, tt.content) {
				t.Error("Keys overwrote the damaged key file")
			}
		})
	}
}

func TestLoadBeforeEnrollment(t *testing.T) {
	dir := t.TempDir()
	if _, err := agentstate.Load(dir); !errors.Is(err, agentstate.ErrNotEnrolled) {
		t.Fatalf("Load of an empty dir = %v, want ErrNotEnrolled", err)
	}
	st, err := agentstate.Keys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agentstate.Load(dir); !errors.Is(err, agentstate.ErrNotEnrolled) {
		t.Fatalf("Load with keys but no enrollment = %v, want ErrNotEnrolled", err)
	}
	if again, err := agentstate.Keys(dir); err != nil || !again.WGKey.Equal(st.WGKey) {
		t.Fatalf("Load before enrollment changed the keys (%v)", err)
	}
}

func TestEnrollmentRoundTrip(t *testing.T) {
	ca := newTestCA(t, "controller CA")
	st, e := enrolled(t, ca)
	got, err := agentstate.Load(st.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Enrollment != e {
		t.Errorf("Enrollment = %+v, want %+v", got.Enrollment, e)
	}
	if !bytes.Equal(got.CertPEM, st.CertPEM) || !bytes.Equal(got.CAPEM, ca.pem) {
		t.Error("certificate or CA changed in the round trip")
	}
	if !got.WGKey.Equal(st.WGKey) || !got.TLSKey.Equal(st.TLSKey) {
		t.Error("keys changed in the round trip")
	}
	entries, err := os.ReadDir(st.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range entries {
		if strings.HasSuffix(f.Name(), ".tmp") {
			t.Errorf("temporary file %s left behind", f.Name())
		}
		if got := perm(t, filepath.Join(st.Dir, f.Name())); got != 0o600 {
			t.Errorf("%s mode %v, want 0600", f.Name(), got)
		}
	}

	// Forget drops the enrollment and keeps the keys.
	if err := got.Forget(); err != nil {
		t.Fatal(err)
	}
	if err := got.Forget(); err != nil {
		t.Errorf("second Forget: %v", err)
	}
	if _, err := agentstate.Load(st.Dir); !errors.Is(err, agentstate.ErrNotEnrolled) {
		t.Fatalf("Load after Forget = %v, want ErrNotEnrolled", err)
	}
	keys, err := agentstate.Keys(st.Dir)
	if err != nil || !keys.WGKey.Equal(st.WGKey) {
		t.Fatalf("Forget lost the keys (%v)", err)
	}
}

func TestLoadDamagedEnrollment(t *testing.T) {
	tests := []struct {
		name   string
		damage func(dir string) error
	}{
		{"state not JSON", func(dir string) error { return os.WriteFile(filepath.Join(dir, "state.json"), []byte("{"), 0o600) }},
		{"bad overlay address", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "state.json"), []byte(`{"id":"x","overlay_addr":"nope"}`), 0o600)
		}},
		{"certificate missing", func(dir string) error { return os.Remove(filepath.Join(dir, "cert.pem")) }},
		{"CA missing", func(dir string) error { return os.Remove(filepath.Join(dir, "ca.pem")) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, _ := enrolled(t, newTestCA(t, "ca"))
			if err := tt.damage(st.Dir); err != nil {
				t.Fatal(err)
			}
			if _, err := agentstate.Load(st.Dir); err == nil || errors.Is(err, agentstate.ErrNotEnrolled) {
				t.Fatalf("Load = %v, want an error other than ErrNotEnrolled (the agent must not re-enroll silently)", err)
			}
		})
	}
}

// handshake runs a TLS handshake between cfg (the agent) and a server that
// presents serverCert and verifies clients against clientCAs.
func handshake(t *testing.T, cfg *tls.Config, serverCert tls.Certificate, clientCAs *x509.CertPool) (clientErr, serverErr error, peer []*x509.Certificate) {
	t.Helper()
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := tls.Server(s, &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{serverCert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientCAs, NextProtos: []string{alpn},
	})
	done := make(chan error, 1)
	go func() {
		err := srv.HandshakeContext(ctx)
		if err == nil {
			// Read until the client finishes verifying (TLS 1.3: the
			// client's result only shows once the server reads).
			if _, err = srv.Read(make([]byte, 1)); errors.Is(err, io.EOF) {
				err = nil
			}
		}
		s.Close()
		done <- err
	}()
	cli := tls.Client(c, cfg)
	clientErr = cli.HandshakeContext(ctx)
	c.Close()
	serverErr = <-done
	return clientErr, serverErr, srv.ConnectionState().PeerCertificates
}

func serverCert(t *testing.T, ca *testCA) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := ca.sign(t, "", key.Public(), "controller", x509.ExtKeyUsageServerAuth, "ctl.example")
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// ClientTLS trusts the pinned controller CA and nothing else, and presents
// the agent's certificate.
func TestClientTLSPinsCA(t *testing.T) {
	pinned := newTestCA(t, "controller CA")
	other := newTestCA(t, "some other CA")
	st, _ := enrolled(t, pinned)
	cfg, err := st.ClientTLS(alpn)
	if err != nil {
		t.Fatal(err)
	}
	want := x509.NewCertPool()
	want.AddCert(pinned.cert)
	if !cfg.RootCAs.Equal(want) {
		t.Error("RootCAs is not exactly the pinned CA")
	}
	if cfg.MinVersion != tls.VersionTLS13 || len(cfg.NextProtos) != 1 || cfg.NextProtos[0] != alpn || cfg.InsecureSkipVerify {
		t.Errorf("TLS config: MinVersion %x NextProtos %v InsecureSkipVerify %v", cfg.MinVersion, cfg.NextProtos, cfg.InsecureSkipVerify)
	}
	if cfg.GetClientCertificate == nil {
		t.Fatal("no client certificate")
	}
	cc, err := cfg.GetClientCertificate(&tls.CertificateRequestInfo{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cc.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if !st.TLSKey.PublicKey.Equal(leaf.PublicKey) {
		t.Error("client certificate is not for the agent's TLS key")
	}

	tests := []struct {
		name       string
		serverCA   *testCA
		serverName string
		wantOK     bool
	}{
		{"controller signed by the pinned CA", pinned, "ctl.example", true},
		{"controller signed by another CA", other, "ctl.example", false},
		{"pinned CA, wrong name", pinned, "evil.example", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg.Clone()
			c.ServerName = tt.serverName
			cerr, serr, peer := handshake(t, c, serverCert(t, tt.serverCA), want)
			if (cerr == nil) != tt.wantOK {
				t.Fatalf("client handshake error = %v, want ok=%v", cerr, tt.wantOK)
			}
			if tt.wantOK {
				if serr != nil {
					t.Fatalf("server rejected the agent: %v", serr)
				}
				if len(peer) == 0 || peer[0].Subject.CommonName != "dev-1" {
					t.Errorf("server saw client certificate %v, want dev-1's", peer)
				}
			}
		})
	}
}

func TestClientTLSRejectsBadState(t *testing.T) {
	ca := newTestCA(t, "ca")
	tests := []struct {
		name   string
		mutate func(st *agentstate.State)
	}{
		{"CA not PEM", func(st *agentstate.State) { st.CAPEM = []byte("junk") }},
		{"no certificate", func(st *agentstate.State) { st.CertPEM = nil }},
		{"certificate for another key", func(st *agentstate.State) {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			st.CertPEM = ca.sign(t, "", k.Public(), "dev-1", x509.ExtKeyUsageClientAuth)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, _ := enrolled(t, ca)
			tt.mutate(st)
			if cfg, err := st.ClientTLS(alpn); err == nil {
				t.Fatalf("ClientTLS = %v, want an error", cfg)
			}
		})
	}
}

// The CSR proves possession of the TLS key and carries only a hint.
func TestCSR(t *testing.T) {
	st, err := agentstate.Keys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := st.CSR("ward-3-laptop")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("CSR is not a PEM CERTIFICATE REQUEST: %q", s)
	}
	req, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := req.CheckSignature(); err != nil {
		t.Fatalf("CSR signature: %v", err)
	}
	if !st.TLSKey.PublicKey.Equal(req.PublicKey) || req.Subject.CommonName != "ward-3-laptop" {
		t.Errorf("CSR for %v, CN %q", req.PublicKey, req.Subject.CommonName)
	}
}

func TestWireGuardKeyNeverPrints(t *testing.T) {
	st, err := agentstate.Keys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	secret := st.WGKey.MarshalSecret()
	on := func(what, out string) {
		t.Helper()
		if strings.Contains(out, secret) {
			t.Errorf("%s reveals the WireGuard key: %s", what, out)
		}
		if !strings.Contains(out, "redacted") {
			t.Errorf("%s = %q, want it marked redacted", what, out)
		}
	}
	on("String", st.WGKey.String())
	on("%v %+v", fmt.Sprintf("%v %+v", st.WGKey, st.WGKey))
	on("%+v in a struct", fmt.Sprintf("%+v", struct{ K any }{st.WGKey}))
	// The key file itself holds it (0600, checked above).
	b, err := os.ReadFile(filepath.Join(st.Dir, "wireguard.key"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(b)) != secret {
		t.Error("key file does not hold the key")
	}
}

func TestStateNeverPrintsPrivateKeys(t *testing.T) {
	st, err := agentstate.Keys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	secret := st.WGKey.MarshalSecret()
	d := st.TLSKey.D.String()
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%d", "%x"} {
		out := fmt.Sprintf(verb, st)
		if strings.Contains(out, secret) || strings.Contains(out, d) || strings.Contains(out, "PRIVATE") {
			t.Fatalf("%s of State reveals a private key: %s", verb, out)
		}
	}
}
