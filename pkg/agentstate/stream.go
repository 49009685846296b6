package agentstate

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
)

// TLS for the WireGuard stream (package wgstream): the gateway serves its
// own agent certificate, and a client trusts only the certificate the
// pinned controller CA issued to that one gateway. Agent certificates are
// issued for client authentication (the control channel), so the client
// checks the chain itself, for that usage, and then the identity the map
// names: the web PKI's server names play no part, and no other CA, no
// other gateway and no client device can stand in for the gateway.

// ServerTLS returns the server side of a stream: this agent's certificate
// (read per handshake, so a renewal takes effect at once), TLS 1.3 only,
// no client certificate (WireGuard authenticates the peer inside).
func (s *State) ServerTLS(alpn string) (*tls.Config, error) {
	if _, err := s.tlsCertificate(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.tlsCertificate() },
		NextProtos:     []string{alpn},
	}, nil
}

// PeerTLS returns the client side of a stream to the agent id of kind
// kind: it accepts only a certificate issued by the pinned controller CA
// with CommonName id and OrganizationalUnit kind, and sends no server name.
func (s *State) PeerTLS(alpn, id, kind string) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CAPEM) {
		return nil, errors.New("pinned controller CA is not a PEM certificate")
	}
	if id == "" || kind == "" {
		return nil, errors.New("peer TLS: no identity to verify")
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{alpn},
		// Verified below, against the pinned CA and the identity, not
		// against a host name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyAgent(cs, pool, id, kind)
		},
	}, nil
}

// verifyAgent checks that cs's peer certificate chains to roots for agent
// use and names agent id of kind kind.
func verifyAgent(cs tls.ConnectionState, roots *x509.CertPool, id, kind string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("peer sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("peer certificate is not from the pinned controller CA: %w", err)
	}
	if leaf.Subject.CommonName != id || !slices.Equal(leaf.Subject.OrganizationalUnit, []string{kind}) {
		return fmt.Errorf("peer certificate names %s %q, want %s %q (the map's)",
			leaf.Subject.OrganizationalUnit, leaf.Subject.CommonName, kind, id)
	}
	return nil
}
