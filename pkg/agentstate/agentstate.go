// Package agentstate keeps an agent's identity on its own disk: the
// WireGuard private key and TLS private key it generated (files 0600, never
// sent anywhere), the certificate the controller issued, the pinned
// controller CA, and the enrollment facts (ID, overlay address).
package agentstate

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cordonhq/cordon/pkg/atomicfile"
	"github.com/cordonhq/cordon/pkg/privdir"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// File names in the state directory.
const (
	wgKeyFile  = "wireguard.key"
	tlsKeyFile = "tls-key.pem"
	certFile   = "cert.pem"
	caFile     = "ca.pem"
	stateFile  = "state.json"
)

// ErrNotEnrolled is returned by Load when the directory holds no enrollment.
var ErrNotEnrolled = errors.New("not enrolled")

// Enrollment is what the controller told the agent when it enrolled.
type Enrollment struct {
	ID          string     `json:"id"`
	User        string     `json:"user,omitempty"`
	OverlayAddr netip.Addr `json:"overlay_addr"`
	Controller  string     `json:"controller"`   // API base URL
	ControlAddr string     `json:"control_addr"` // QUIC host:port
}

// State is an agent's identity.
type State struct {
	Dir    string
	WGKey  wgkey.Private
	TLSKey *ecdsa.PrivateKey
	// CertPEM is the certificate as loaded or enrolled. A renewal
	// ([State.SaveCertificate]) replaces it under certMu, while the
	// control channel may be handshaking: read it with [State.Certificate].
	CertPEM    []byte
	CAPEM      []byte
	Enrollment Enrollment

	certMu sync.Mutex
}

// Format prints the identity without its private keys, whatever the verb.
func (s *State) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "agentstate{dir=%s id=%s overlay=%s}", s.Dir, s.Enrollment.ID, s.Enrollment.OverlayAddr)
}

// Keys loads the agent's keys from dir, generating any that are missing.
// The directory is created 0700, or made 0700 if it is open to group or
// others (logged on slog.Default(); agents call privdir.Ensure with their
// own logger first).
func Keys(dir string) (*State, error) {
	if err := privdir.Ensure(dir, nil); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	s := &State{Dir: dir}
	wgPath := filepath.Join(dir, wgKeyFile)
	if b, err := os.ReadFile(wgPath); err == nil {
		if s.WGKey, err = wgkey.ParsePrivate(strings.TrimSpace(string(b))); err != nil {
			return nil, fmt.Errorf("%s: %w", wgPath, err)
		}
	} else if errors.Is(err, os.ErrNotExist) {
		if s.WGKey, err = wgkey.NewPrivate(); err != nil {
			return nil, err
		}
		if err := writeSecret(wgPath, []byte(s.WGKey.MarshalSecret()+"\n")); err != nil {
			return nil, err
		}
	} else {
		return nil, err
	}
	tlsPath := filepath.Join(dir, tlsKeyFile)
	if b, err := os.ReadFile(tlsPath); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s: not PEM", tlsPath)
		}
		if s.TLSKey, err = x509.ParseECPrivateKey(blk.Bytes); err != nil {
			return nil, fmt.Errorf("%s: %w", tlsPath, err)
		}
	} else if errors.Is(err, os.ErrNotExist) {
		if s.TLSKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, err
		}
		der, err := x509.MarshalECPrivateKey(s.TLSKey)
		if err != nil {
			return nil, err
		}
		if err := writeSecret(tlsPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})); err != nil {
			return nil, err
		}
	} else {
		return nil, err
	}
	return s, nil
}

// Load loads keys and the enrollment; ErrNotEnrolled if there is none.
func Load(dir string) (*State, error) {
	s, err := Keys(dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotEnrolled
	} else if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &s.Enrollment); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	if s.CertPEM, err = os.ReadFile(filepath.Join(dir, certFile)); err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	if s.CAPEM, err = os.ReadFile(filepath.Join(dir, caFile)); err != nil {
		return nil, fmt.Errorf("read pinned CA: %w", err)
	}
	return s, nil
}

// Recall returns the last enrollment saved in dir and the controller CA it
// pinned, without loading or making keys: what a second sign-in needs to
// know (the controller, its CA, the user) so it needs no flags.
// ErrNotEnrolled when the device never enrolled.
func Recall(dir string) (Enrollment, []byte, error) {
	var e Enrollment
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return e, nil, ErrNotEnrolled
	} else if err != nil {
		return e, nil, err
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, nil, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, caFile))
	if err != nil {
		return e, nil, fmt.Errorf("read pinned CA: %w", err)
	}
	return e, ca, nil
}

// CSR returns a PEM certificate signing request for the TLS key. The
// subject is a hint only; the controller assigns the identity.
func (s *State) CSR(name string) (string, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: name},
	}, s.TLSKey)
	if err != nil {
		return "", fmt.Errorf("create CSR: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

// SaveEnrollment stores what the controller returned.
func (s *State) SaveEnrollment(e Enrollment, certPEM, caPEM []byte) error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	if err := writeSecret(filepath.Join(s.Dir, certFile), certPEM); err != nil {
		return err
	}
	if err := writeSecret(filepath.Join(s.Dir, caFile), caPEM); err != nil {
		return err
	}
	if err := writeSecret(filepath.Join(s.Dir, stateFile), append(b, '\n')); err != nil {
		return err
	}
	s.Enrollment, s.CertPEM, s.CAPEM = e, certPEM, caPEM
	return nil
}

// Forget removes the enrollment (not the keys).
func (s *State) Forget() error {
	for _, f := range []string{stateFile, certFile} {
		if err := os.Remove(filepath.Join(s.Dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// ClientTLS returns the mutual-TLS configuration for the control channel:
// our certificate, and trust in the pinned controller CA only.
func (s *State) ClientTLS(alpn string) (*tls.Config, error) {
	if _, err := s.tlsCertificate(); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CAPEM) {
		return nil, errors.New("pinned controller CA is not a PEM certificate")
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Read per handshake, so the connection after a renewal presents
		// the renewed certificate.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.tlsCertificate()
		},
		RootCAs:    pool,
		NextProtos: []string{alpn},
	}, nil
}

func writeSecret(path string, b []byte) error {
	return atomicfile.WriteFile(path, b, 0o600)
}
