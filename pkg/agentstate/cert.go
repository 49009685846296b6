package agentstate

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
)

// Certificate returns the agent's current certificate, parsed.
func (s *State) Certificate() (*x509.Certificate, error) {
	s.certMu.Lock()
	certPEM := s.CertPEM
	s.certMu.Unlock()
	return parseCert(certPEM)
}

// tlsCertificate pairs the current certificate with the TLS key, for one
// handshake.
func (s *State) tlsCertificate() (*tls.Certificate, error) {
	der, err := x509.MarshalECPrivateKey(s.TLSKey)
	if err != nil {
		return nil, err
	}
	s.certMu.Lock()
	certPEM := s.CertPEM
	s.certMu.Unlock()
	cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	if err != nil {
		return nil, fmt.Errorf("load agent certificate: %w", err)
	}
	return &cert, nil
}

// SaveCertificate replaces the agent's certificate with a renewed one and
// writes it to disk atomically (0600). It refuses a certificate that does
// not chain to the pinned controller CA for client authentication, is not
// valid now, is for another key, or names another identity (CommonName and
// OrganizationalUnit differ from the current certificate's): a renewal
// extends the identity the agent has, it never changes it. Later
// handshakes of [State.ClientTLS] configurations present the new one.
func (s *State) SaveCertificate(certPEM []byte) error {
	leaf, err := parseCert(certPEM)
	if err != nil {
		return fmt.Errorf("renewed certificate: %w", err)
	}
	cur, err := s.Certificate()
	if err != nil {
		return fmt.Errorf("current certificate: %w", err)
	}
	if !s.TLSKey.PublicKey.Equal(leaf.PublicKey) {
		return errors.New("renewed certificate is not for this agent's key")
	}
	if leaf.Subject.CommonName != cur.Subject.CommonName || !slices.Equal(leaf.Subject.OrganizationalUnit, cur.Subject.OrganizationalUnit) {
		return fmt.Errorf("renewed certificate is for %q (%v), this agent is %q (%v)",
			leaf.Subject.CommonName, leaf.Subject.OrganizationalUnit, cur.Subject.CommonName, cur.Subject.OrganizationalUnit)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CAPEM) {
		return errors.New("pinned controller CA is not a PEM certificate")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("renewed certificate does not verify against the pinned controller CA: %w", err)
	}
	s.certMu.Lock()
	defer s.certMu.Unlock()
	if err := writeSecret(filepath.Join(s.Dir, certFile), certPEM); err != nil {
		return err
	}
	s.CertPEM = bytes.Clone(certPEM)
	return nil
}

// parseCert parses a PEM file holding exactly one certificate.
func parseCert(certPEM []byte) (*x509.Certificate, error) {
	b, rest := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("more than one PEM block")
	}
	return x509.ParseCertificate(b.Bytes)
}
