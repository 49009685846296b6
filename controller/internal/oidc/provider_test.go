package oidc

import (
	"context"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/internal/oidctest"
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

// TestFixedRedirect: with redirect_host and redirect_port the controller
// starts only sign-ins whose redirect is exactly the registered URI, and
// lists it for the clients.
func TestFixedRedirect(t *testing.T) {
	r := newRig(t, oidctest.Options{}, func(p *ProviderConfig) { p.RedirectHost, p.RedirectPort = "localhost", 8400 })
	ch := oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())
	if _, err := r.m.StartCode(t.Context(), testSource, "test", "http://localhost:8400/callback", ch); err != nil {
		t.Errorf("the registered redirect: %v", err)
	}
	for _, uri := range []string{"http://localhost:8401/callback", "http://127.0.0.1:8400/callback", "http://localhost:8400/other"} {
		_, err := r.m.StartCode(t.Context(), testSource, "test", uri, ch)
		if !errors.Is(err, ErrRedirect) || !strings.Contains(err.Error(), "accepts only http://localhost:8400/callback") {
			t.Errorf("StartCode(%s) = %v; want ErrRedirect naming the registered URI", uri, err)
		}
	}
	ps := r.m.Providers()
	if len(ps) != 1 || ps[0].RedirectHost != "localhost" || ps[0].RedirectPort != 8400 || ps[0].RedirectURI != "http://localhost:8400/callback" {
		t.Errorf("providers: %+v", ps)
	}
	// Without them, any loopback port passes (RFC 8252).
	r2 := newRig(t, oidctest.Options{}, nil)
	if _, err := r2.m.StartCode(t.Context(), testSource, "test", "http://[::1]:39123/callback", ch); err != nil {
		t.Errorf("any loopback redirect without redirect_port: %v", err)
	}
	if p := r2.m.Providers()[0]; p.RedirectURI != "http://127.0.0.1:PORT/callback" {
		t.Errorf("redirect to register without a fixed port: %q", p.RedirectURI)
	}
}

// chanHandler sends every log record to a channel.
type chanHandler chan slog.Record

func (h chanHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h chanHandler) Handle(_ context.Context, r slog.Record) error {
	select {
	case h <- r:
	default:
	}
	return nil
}
func (h chanHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h chanHandler) WithGroup(string) slog.Handler      { return h }

// TestRunReportsMisconfiguredIdP: at start the controller logs an IdP it
// cannot trust as an error, before any user tries to sign in.
func TestRunReportsMisconfiguredIdP(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "cordon.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	logs := make(chanHandler, 16)
	key := make([]byte, 32)
	rand.Read(key)
	m, err := New(Config{Store: st, TokenKey: key, Logger: slog.New(logs), Providers: []ProviderConfig{{Name: "keycloak", Issuer: srv.URL, ClientID: "cordon"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	m.Run()
	for {
		select {
		case r := <-logs:
			if r.Level == slog.LevelError && strings.Contains(r.Message, "misconfigured") {
				return
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no error logged for an IdP whose certificate is not trusted")
		}
	}
}
