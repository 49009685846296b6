package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func newCA(t testing.TB) (*CA, string) {
	t.Helper()
	dir := t.TempDir()
	c, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	return c, dir
}

// csr returns a PEM CSR for a fresh key, with the given subject.
func csr(t testing.TB, subject pkix.Name) (string, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), key
}

func parsePEMCert(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", s)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestLoadOrCreateReloadsSameCA(t *testing.T) {
	c1, dir := newCA(t)
	if got := mode(t, filepath.Join(dir, keyFile)); got != 0o600 {
		t.Errorf("CA key file mode %v, want 0600", got)
	}
	if !c1.cert.IsCA || !c1.cert.MaxPathLenZero || c1.cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA certificate: IsCA %v MaxPathLenZero %v KeyUsage %v", c1.cert.IsCA, c1.cert.MaxPathLenZero, c1.cert.KeyUsage)
	}
	if !strings.HasPrefix(c1.Fingerprint(), "sha256:") || len(c1.Fingerprint()) != len("sha256:")+64 {
		t.Errorf("fingerprint %q", c1.Fingerprint())
	}

	c2, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c1.CertPEM(), c2.CertPEM()) || c1.Fingerprint() != c2.Fingerprint() {
		t.Fatal("reloading the CA produced a different certificate")
	}
	// Same key: what the reloaded CA signs verifies against the first.
	req, _ := csr(t, pkix.Name{})
	issued, err := c2.IssueAgentCert(req, "dev-1", KindClient)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parsePEMCert(t, issued).Verify(x509.VerifyOptions{Roots: c1.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("certificate of the reloaded CA does not verify against the original: %v", err)
	}
	// CertPEM is a copy.
	p := c1.CertPEM()
	p[0] ^= 0xff
	if bytes.Equal(p, c1.CertPEM()) {
		t.Error("CertPEM returned the CA's own buffer")
	}
	// A different directory is a different CA.
	c3, _ := newCA(t)
	if c3.Fingerprint() == c1.Fingerprint() {
		t.Error("two CAs share a fingerprint")
	}
}

// A damaged CA is an error, never silently replaced: agents pin it.
func TestLoadOrCreateDamaged(t *testing.T) {
	tests := []struct {
		name   string
		damage func(dir string) error
	}{
		{"key missing", func(dir string) error { return os.Remove(filepath.Join(dir, keyFile)) }},
		{"key not PEM", func(dir string) error { return os.WriteFile(filepath.Join(dir, keyFile), []byte("nope"), 0o600) }},
		{"key garbage", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, keyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("xx")}), 0o600)
		}},
		{"cert not PEM", func(dir string) error { return os.WriteFile(filepath.Join(dir, CertFile), []byte("nope"), 0o644) }},
		{"cert garbage", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, CertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("xx")}), 0o644)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, dir := newCA(t)
			if err := tt.damage(dir); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(filepath.Join(dir, CertFile))
			if _, err := LoadOrCreate(dir); err == nil {
				t.Fatal("LoadOrCreate accepted a damaged CA")
			}
			after, _ := os.ReadFile(filepath.Join(dir, CertFile))
			if !bytes.Equal(before, after) {
				t.Error("LoadOrCreate replaced the CA certificate")
			}
		})
	}
}

func TestServerCertificateCoversHosts(t *testing.T) {
	tests := []struct {
		name  string
		hosts []string
	}{
		{"loopback", []string{"localhost", "127.0.0.1", "::1"}},
		{"name and address", []string{"ctl.hospital.internal", "10.0.0.5"}},
		{"empty entries skipped", []string{"", "ctl.example", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, dir := newCA(t)
			tc, err := c.ServerCertificate(tt.hosts)
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(tc.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range tt.hosts {
				if h == "" {
					continue
				}
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.Pool(), DNSName: h, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
					t.Errorf("server certificate does not verify for %q: %v", h, err)
				}
			}
			if err := leaf.VerifyHostname("other.example"); err == nil {
				t.Error("server certificate also covers other.example")
			}
			if slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
				t.Error("server certificate can authenticate as a client")
			}
			if got := mode(t, filepath.Join(dir, serverKeyFile)); got != 0o600 {
				t.Errorf("server key file mode %v, want 0600", got)
			}
		})
	}
}

func TestServerCertificateReuse(t *testing.T) {
	base := []string{"localhost", "127.0.0.1"}
	tests := []struct {
		name      string
		second    []string
		change    func(t *testing.T, c *CA, dir string) *CA // may return a different CA for the second call
		wantReuse bool
	}{
		{name: "same hosts", second: base, wantReuse: true},
		{name: "subset", second: []string{"127.0.0.1"}, wantReuse: true},
		{name: "no hosts", second: nil, wantReuse: true},
		{name: "new host", second: append(slices.Clone(base), "ctl.example"), wantReuse: false},
		{name: "new address", second: append(slices.Clone(base), "192.0.2.7"), wantReuse: false},
		{name: "within 30 days of expiry", second: base, wantReuse: false, change: func(t *testing.T, c *CA, _ string) *CA {
			c.now = func() time.Time { return time.Now().AddDate(0, 11, 5) }
			return c
		}},
		{name: "signed by another CA", second: base, wantReuse: false, change: func(t *testing.T, _ *CA, dir string) *CA {
			for _, f := range []string{CertFile, keyFile} {
				if err := os.Remove(filepath.Join(dir, f)); err != nil {
					t.Fatal(err)
				}
			}
			c, err := LoadOrCreate(dir)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}},
		{name: "damaged on disk", second: base, wantReuse: false, change: func(t *testing.T, c *CA, dir string) *CA {
			if err := os.WriteFile(filepath.Join(dir, serverCertFile), []byte("junk"), 0o644); err != nil {
				t.Fatal(err)
			}
			return c
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, dir := newCA(t)
			first, err := c.ServerCertificate(base)
			if err != nil {
				t.Fatal(err)
			}
			if tt.change != nil {
				c = tt.change(t, c, dir)
			}
			second, err := c.ServerCertificate(tt.second)
			if err != nil {
				t.Fatal(err)
			}
			reused := bytes.Equal(first.Certificate[0], second.Certificate[0])
			if reused != tt.wantReuse {
				t.Fatalf("reused = %v, want %v", reused, tt.wantReuse)
			}
			leaf, err := x509.ParseCertificate(second.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			if err := leaf.CheckSignatureFrom(c.cert); err != nil {
				t.Errorf("server certificate not signed by the current CA: %v", err)
			}
			for _, h := range tt.second {
				if err := leaf.VerifyHostname(h); err != nil {
					t.Errorf("server certificate does not cover %q: %v", h, err)
				}
			}
			if !tt.wantReuse {
				// The new one is what the next start finds.
				third, err := c.ServerCertificate(tt.second)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(third.Certificate[0], second.Certificate[0]) {
					t.Error("regenerated server certificate was not saved for reuse")
				}
			}
		})
	}
}

func TestIssueAgentCert(t *testing.T) {
	c, _ := newCA(t)
	tests := []struct {
		name     string
		subject  pkix.Name
		id, kind string
	}{
		{"empty subject", pkix.Name{}, "dev-1", KindClient},
		{"subject claims another identity", pkix.Name{CommonName: "gw-admin", OrganizationalUnit: []string{KindGateway, "admin"}, Organization: []string{"Evil"}}, "dev-2", KindClient},
		{"gateway", pkix.Name{CommonName: "whatever"}, "gw-1", KindGateway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, key := csr(t, tt.subject)
			issued, err := c.IssueAgentCert(req, tt.id, tt.kind)
			if err != nil {
				t.Fatal(err)
			}
			cert := parsePEMCert(t, issued)
			if cert.Subject.CommonName != tt.id || !slices.Equal(cert.Subject.OrganizationalUnit, []string{tt.kind}) || len(cert.Subject.Organization) != 0 {
				t.Errorf("subject %v, want CN=%s OU=%s only", cert.Subject, tt.id, tt.kind)
			}
			if !key.PublicKey.Equal(cert.PublicKey) {
				t.Error("certificate is not for the CSR's key")
			}
			if cert.IsCA {
				t.Error("agent certificate is a CA")
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: c.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("does not verify as a client certificate: %v", err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: c.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
				t.Error("agent certificate verifies as a server certificate")
			}
			if ttl := cert.NotAfter.Sub(time.Now()); ttl > AgentCertTTL || ttl < AgentCertTTL-time.Minute {
				t.Errorf("valid for %v more, want about %v", ttl, AgentCertTTL)
			}
			id, kind, err := AgentIdentity(cert)
			if err != nil || id != tt.id || kind != tt.kind {
				t.Errorf("AgentIdentity = %q, %q, %v; want %q, %q", id, kind, err, tt.id, tt.kind)
			}
		})
	}
}

func TestIssueAgentCertRejects(t *testing.T) {
	c, _ := newCA(t)
	good, _ := csr(t, pkix.Name{CommonName: "hint-abcdef"})
	blk, _ := pem.Decode([]byte(good))
	// Change one byte of the signed subject: the signature no longer holds.
	tampered := bytes.Replace(blk.Bytes, []byte("hint-abcdef"), []byte("hint-abcdeg"), 1)
	if bytes.Equal(tampered, blk.Bytes) {
		t.Fatal("test CSR does not contain its subject")
	}
	otherCA, _ := newCA(t)
	certPEM := string(otherCA.CertPEM())
	tests := []struct {
		name, in string
	}{
		{"empty", ""},
		{"not PEM", "hello"},
		{"DER without PEM", string(blk.Bytes)},
		{"certificate, not a request", certPEM},
		{"garbage in PEM", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x01}}))},
		{"bad signature", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := c.IssueAgentCert(tt.in, "dev-1", KindClient)
			if err == nil || out != "" {
				t.Fatalf("IssueAgentCert = %q, %v; want an error", out, err)
			}
			if !strings.HasPrefix(err.Error(), "csr: ") {
				t.Errorf("error %q does not say the CSR is at fault", err)
			}
		})
	}
}

func TestAgentIdentity(t *testing.T) {
	tests := []struct {
		name     string
		cert     *x509.Certificate
		id, kind string
		ok       bool
	}{
		{"good", &x509.Certificate{Subject: pkix.Name{CommonName: "gw-1", OrganizationalUnit: []string{KindGateway}}}, "gw-1", KindGateway, true},
		{"nil", nil, "", "", false},
		{"no common name", &x509.Certificate{Subject: pkix.Name{OrganizationalUnit: []string{KindClient}}}, "", "", false},
		{"no kind", &x509.Certificate{Subject: pkix.Name{CommonName: "dev-1"}}, "", "", false},
		{"two kinds", &x509.Certificate{Subject: pkix.Name{CommonName: "dev-1", OrganizationalUnit: []string{KindClient, KindGateway}}}, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, kind, err := AgentIdentity(tt.cert)
			if (err == nil) != tt.ok || id != tt.id || kind != tt.kind {
				t.Fatalf("AgentIdentity = %q, %q, %v; want %q, %q, ok=%v", id, kind, err, tt.id, tt.kind, tt.ok)
			}
		})
	}
}

// IssueAgentCert parses a CSR an unauthenticated login or enrollment sent:
// whatever the bytes, it must not panic, and anything it signs carries the
// identity the controller chose.
func FuzzIssueAgentCert(f *testing.F) {
	c, _ := newCA(f)
	good, _ := csr(f, pkix.Name{CommonName: "seed", OrganizationalUnit: []string{KindGateway}})
	f.Add(good)
	f.Add("")
	f.Add("-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n")
	f.Add(string(c.CertPEM()))
	f.Fuzz(func(t *testing.T, in string) {
		out, err := c.IssueAgentCert(in, "dev-fuzz", KindClient)
		if err != nil {
			return
		}
		cert := parsePEMCert(t, out)
		if id, kind, err := AgentIdentity(cert); err != nil || id != "dev-fuzz" || kind != KindClient {
			t.Fatalf("issued identity %q/%q (%v) from input %q", id, kind, err, in)
		}
		// It only signs requests whose signature holds.
		blk, _ := pem.Decode([]byte(in))
		req, perr := x509.ParseCertificateRequest(blk.Bytes)
		if perr != nil || req.CheckSignature() != nil {
			t.Fatalf("signed a request that does not verify: %q", in)
		}
	})
}
