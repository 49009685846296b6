// Package ca is the controller's certificate authority. It is created on
// first start inside the data directory, signs the controller's own HTTPS and
// QUIC server certificate, and issues the client certificates agents use to
// authenticate the control channel (mutual TLS). Agents send a certificate
// signing request; their private keys never reach the controller.
package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cordonhq/cordon/pkg/atomicfile"
)

// File names inside the data directory.
const (
	CertFile       = "ca.pem"
	keyFile        = "ca-key.pem"
	serverCertFile = "server.pem"
	serverKeyFile  = "server-key.pem"
)

// Files are the CA's files in the data dir and the modes it writes them
// with: the certificates public, the keys owner-only. A backup holds them
// all.
var Files = map[string]os.FileMode{CertFile: 0o644, keyFile: 0o600, serverCertFile: 0o644, serverKeyFile: 0o600}

// AgentCertTTL is how long an agent certificate is valid unless
// [CA.SetAgentCertTTL] says otherwise. Agents renew theirs over the control
// channel once two thirds of it have passed.
const AgentCertTTL = 30 * 24 * time.Hour

// MinAgentCertTTL is the shortest lifetime SetAgentCertTTL accepts: the
// certificate's NotBefore is backdated 5 minutes for clock skew, and
// renewal needs a few round trips.
const MinAgentCertTTL = 10 * time.Second

// CA signs certificates.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	dir     string
	now     func() time.Time
	// agentTTL is the lifetime of issued agent certificates; 0 means
	// AgentCertTTL. Set before the CA is shared.
	agentTTL time.Duration
}

// SetAgentCertTTL sets the lifetime of agent certificates issued from now
// on (--agent-cert-ttl). Call it before the CA is used concurrently.
func (c *CA) SetAgentCertTTL(d time.Duration) error {
	if d < MinAgentCertTTL {
		return fmt.Errorf("agent certificate lifetime %v is shorter than the minimum %v", d, MinAgentCertTTL)
	}
	c.agentTTL = d
	return nil
}

// AgentTTL is the lifetime of the agent certificates the CA issues.
func (c *CA) AgentTTL() time.Duration {
	if c.agentTTL > 0 {
		return c.agentTTL
	}
	return AgentCertTTL
}

// LoadOrCreate loads the CA from dir or creates it (key file 0600).
func LoadOrCreate(dir string) (*CA, error) {
	c := &CA{dir: dir, now: time.Now}
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, keyFile)
	certPEM, err := os.ReadFile(certPath)
	switch {
	case err == nil:
		keyPEM, err := os.ReadFile(keyPath)
		if err != nil {
			return nil, fmt.Errorf("read CA key: %w", err)
		}
		if err := c.load(certPEM, keyPEM); err != nil {
			return nil, fmt.Errorf("load CA from %s: %w", dir, err)
		}
		return c, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := c.now()
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: "Cordon controller CA", Organization: []string{"Cordon"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := writeFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeFile(certPath, certPEM, 0o644); err != nil {
		return nil, err
	}
	if err := c.load(certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *CA) load(certPEM, keyPEM []byte) error {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return errors.New("CA certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return fmt.Errorf("parse CA certificate: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return errors.New("CA key is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return fmt.Errorf("parse CA key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return errors.New("CA key cannot sign")
	}
	c.cert, c.certPEM, c.key = cert, certPEM, signer
	return nil
}

// CertPEM returns the CA certificate, which agents and cordonctl pin.
func (c *CA) CertPEM() []byte { return slices.Clone(c.certPEM) }

// Fingerprint is the SHA-256 of the CA certificate, for out-of-band checks.
func (c *CA) Fingerprint() string {
	sum := sha256.Sum256(c.cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Pool returns a pool holding only this CA.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.cert)
	return p
}

// ServerCertificate returns the controller's TLS certificate for the given
// host names and addresses, reusing the one on disk while it covers them and
// is not close to expiry.
func (c *CA) ServerCertificate(hosts []string) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(c.dir, serverCertFile), filepath.Join(c.dir, serverKeyFile)
	if tc, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil && c.covers(tc, hosts) {
		return tc, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := c.now()
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: "cordon-controller"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("sign server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := writeFile(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

func (c *CA) covers(tc tls.Certificate, hosts []string) bool {
	leaf, err := x509.ParseCertificate(tc.Certificate[0])
	if err != nil || c.now().Add(30*24*time.Hour).After(leaf.NotAfter) {
		return false
	}
	if leaf.CheckSignatureFrom(c.cert) != nil {
		return false
	}
	for _, h := range hosts {
		if h != "" && leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

// Agent kinds, carried in the certificate's OrganizationalUnit.
const (
	KindGateway = "gateway"
	KindClient  = "client"
)

// IssueAgentCert signs an agent's CSR. The controller decides the identity:
// the CSR's subject is ignored and replaced by CommonName=id,
// OrganizationalUnit=kind. Only the CSR's public key and signature are used.
func (c *CA) IssueAgentCert(csrPEM string, id, kind string) (string, error) {
	b, _ := pem.Decode([]byte(csrPEM))
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return "", errors.New("csr: not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return "", fmt.Errorf("csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return "", fmt.Errorf("csr: bad signature: %w", err)
	}
	now := c.now()
	// Backdated for clock skew, but by a small part of a short lifetime
	// only: agents renew after two thirds of NotBefore..NotAfter.
	ttl := c.AgentTTL()
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: id, OrganizationalUnit: []string{kind}},
		NotBefore:    now.Add(-min(5*time.Minute, ttl/10)),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, csr.PublicKey, c.key)
	if err != nil {
		return "", fmt.Errorf("sign agent certificate: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}

// AgentIdentity returns the ID and kind of a verified agent certificate.
func AgentIdentity(cert *x509.Certificate) (id, kind string, err error) {
	if cert == nil || cert.Subject.CommonName == "" || len(cert.Subject.OrganizationalUnit) != 1 {
		return "", "", errors.New("certificate carries no agent identity")
	}
	return cert.Subject.CommonName, cert.Subject.OrganizationalUnit[0], nil
}

func randSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

func writeFile(path string, b []byte, mode os.FileMode) error {
	return atomicfile.WriteFile(path, b, mode)
}
