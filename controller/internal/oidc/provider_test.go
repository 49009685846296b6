package oidc

import (
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"golang.org/x/oauth2"
)

// TestPrivateCAWithoutCAFile: an IdP whose HTTPS certificate comes from a
// CA the controller does not trust is a configuration error that names
// ca_file, not "unreachable, try again"; with ca_file it is trusted.
func TestPrivateCAWithoutCAFile(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler()) // its own CA: "private"
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)           // the refused handshakes
	srv.StartTLS()
	t.Cleanup(srv.Close)
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "cordon.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	start := func(caFile string) error {
		key := make([]byte, 32)
		rand.Read(key)
		m, err := New(Config{Store: st, TokenKey: key, Providers: []ProviderConfig{{Name: "keycloak", Issuer: srv.URL, ClientID: "cordon", CAFile: caFile}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		_, err = m.StartCode(t.Context(), testSource, "keycloak", "http://127.0.0.1:8400/callback", oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier()))
		return err
	}

	err = start("")
	if !errors.Is(err, ErrIdPConfig) || errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "set ca_file") {
		t.Errorf("private CA, no ca_file: %v; want ErrIdPConfig naming ca_file", err)
	}

	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	// Trusted now: the server answers (404, no discovery document), which
	// is the IdP's problem, not the certificate's.
	err = start(caFile)
	if errors.Is(err, ErrIdPConfig) || !errors.Is(err, ErrUnavailable) {
		t.Errorf("private CA with ca_file: %v; want past TLS (ErrUnavailable for the 404)", err)
	}
}
