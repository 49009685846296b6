// Package apitest runs the controller's HTTPS API in-process for tests: a
// real SQLite store in a temporary directory, a real CA, an admin token and
// a settable clock, served on a loopback TLS listener. It lives outside
// controller/internal so tests of cordonctl and the agents can use it; it
// is not for production code.
package apitest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/api"
	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/netmap"
	"github.com/cordonhq/cordon/controller/internal/oidc"
	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/siem"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/controller/internal/store/storetest"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// AdminTokenName is the name of the owner-role admin token New creates
// (it never expires); audit actors of admin requests are "admin:" +
// AdminTokenName.
const AdminTokenName = "root"

// Options tune New; the zero value is fine.
type Options struct {
	// Throttle replaces the default login throttle.
	Throttle *auth.Throttle
	// LoginAlert replaces the default failed-login alerter.
	LoginAlert *auth.FailureAlert
	// OIDCIssuer, if set, configures one identity provider named "test"
	// at that issuer: client ID "cordon", public client, http allowed,
	// device flow on, MFA when acr is "mfa" (or amr says so).
	OIDCIssuer string
	// DNSZones are the controller's --dns-zone values.
	DNSZones []string
	// SIEMSinks are the SIEM sinks GET /v1/audit/sinks reports; nil:
	// none.
	SIEMSinks []adminapi.AuditSink
}

// Server is a running API.
type Server struct {
	URL        string // https://127.0.0.1:port
	DataDir    string // the controller's data directory (cordon.db, audit-log.key)
	CAPEM      []byte // the CA certificate to trust
	AdminToken string // a valid admin token secret
	Store      store.Store
	CA         *ca.CA
	HTTP       *httptest.Server
	API        *api.API // for inspecting its route table
	// Ledger signs the audit log's checkpoints: tests call its Sign where
	// the controller's ticker would.
	Ledger *ledger.Ledger
	// Sessions is the session manager whose activity the API shows: tests
	// Touch it where a gateway's report would.
	Sessions *session.Manager
	oidc     *oidc.Manager

	changed atomic.Int64
	mu      sync.Mutex
	now     time.Time
	logs    lockedBuffer
}

// New starts a server and stops it when the test ends.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	dir := t.TempDir()
	db, err := sqlite.Open(t.Context(), filepath.Join(dir, "cordon.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	// Every audit event the API records in any test must fit its schema.
	st := storetest.CheckAudit(t, db)
	authority, err := ca.LoadOrCreate(dir)
	if err != nil {
		t.Fatalf("create CA: %v", err)
	}
	cert, err := authority.ServerCertificate([]string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatalf("server certificate: %v", err)
	}
	secret, hash := auth.NewAdminToken()
	if err := st.CreateAdminToken(t.Context(), store.AdminToken{
		ID: "adt-root", Name: AdminTokenName, Role: string(auth.RoleOwner), Hash: hash, CreatedBy: "apitest",
	}); err != nil {
		t.Fatalf("store admin token: %v", err)
	}
	pw, err := auth.NewHasher(auth.TestParams)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{
		DataDir:    dir,
		CAPEM:      authority.CertPEM(),
		AdminToken: secret,
		Store:      st,
		CA:         authority,
		now:        time.Date(2026, 11, 23, 9, 0, 15, 0, time.UTC),
	}
	logKey, err := ledger.LoadKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.Ledger = ledger.New(ledger.Config{Store: st, State: state.New(state.Config{Store: st, Now: s.Now}), Key: logKey, Now: s.Now})
	if s.Sessions, err = session.NewManager(session.ManagerConfig{Store: st, Limits: session.DefaultLimits(), Now: s.Now}); err != nil {
		t.Fatal(err)
	}
	cfg := api.Config{
		DNS:       netmap.DNSConfig{Zones: opts.DNSZones},
		Activity:  s.Sessions.LastActivity,
		Ledger:    s.Ledger,
		Sinks:     sinkStatus(opts.SIEMSinks),
		Store:     st,
		CA:        authority,
		Logger:    slog.New(slog.NewTextHandler(&s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Changed:   func() { s.changed.Add(1) },
		Now:       s.Now,
		Passwords: pw,
	}
	if opts.Throttle != nil {
		cfg.Throttle = opts.Throttle
	}
	cfg.LoginAlert = opts.LoginAlert
	if opts.OIDCIssuer != "" {
		key := make([]byte, 32)
		rand.Read(key)
		m, err := oidc.New(oidc.Config{
			Providers: []oidc.ProviderConfig{{Name: "test", Issuer: opts.OIDCIssuer, ClientID: "cordon", AllowHTTP: true, DeviceFlow: true, MFAACRValues: []string{"mfa"}}},
			Store:     st, TokenKey: key, Logger: cfg.Logger, Changed: cfg.Changed,
		})
		if err != nil {
			t.Fatalf("oidc: %v", err)
		}
		t.Cleanup(func() { m.Close() })
		s.oidc, cfg.OIDC = m, m
	}
	s.API = api.New(cfg)
	srv := httptest.NewUnstartedServer(s.API.Handler())
	srv.Config.ErrorLog = slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: s.CA.Pool()} // as the controller's server
	srv.StartTLS()
	t.Cleanup(srv.Close)
	s.HTTP, s.URL = srv, srv.URL
	return s
}

// sinkStatus reports xs as the SIEM exporter would.
func sinkStatus(xs []adminapi.AuditSink) func() []siem.Status {
	if xs == nil {
		return nil
	}
	return func() []siem.Status {
		out := make([]siem.Status, len(xs))
		for i, x := range xs {
			out[i] = siem.Status{Name: x.Name, Format: siem.Format(x.Format), Transport: x.Transport, Target: x.Target,
				Cursor: x.Cursor, Checkpoint: x.Checkpoint, LogSize: x.LogSize, Lag: x.Lag, Connected: x.Connected,
				BehindSince: x.BehindSince, Alerting: x.Alerting, LastError: x.LastError, LastErrorAt: x.LastErrorAt,
				LastSent: x.LastSent, Sent: x.Sent}
		}
		return out
	}
}

// RefreshOIDC runs one refresh of every linked OIDC identity (what the
// controller does every refresh interval).
func (s *Server) RefreshOIDC(ctx context.Context) error { return s.oidc.RefreshAll(ctx) }

// LinkIdentity links user (created if new) to subject at identity
// provider idp, as a sign-in at asOf that asserted groups in claim would.
func (s *Server) LinkIdentity(ctx context.Context, user, idp, subject, claim string, groups []string, asOf time.Time) error {
	asOf = asOf.UTC().Truncate(time.Microsecond)
	_, err := s.Store.LinkIdentity(ctx, store.Identity{IdP: idp, Subject: subject, User: user, Claim: claim, Groups: groups, LastRefresh: asOf, CreatedAt: asOf})
	return err
}

// RefuseIdentity records that idp refused subject at a refresh at at (as
// the refresher does before ending the user's sessions).
func (s *Server) RefuseIdentity(ctx context.Context, idp, subject string, at time.Time) error {
	id, err := s.Store.GetIdentity(ctx, idp, subject)
	if err != nil {
		return err
	}
	id.InvalidAt, id.RefreshToken = at.UTC().Truncate(time.Microsecond), ""
	return s.Store.UpdateIdentity(ctx, id)
}

// AddDevice stores a device of user with key, as a first sign-in would
// enroll it (without the session), and returns its ID.
func (s *Server) AddDevice(ctx context.Context, user, hostname string, key wgkey.Public) (string, error) {
	d, err := s.Store.CreateDevice(ctx, store.Device{User: user, Hostname: hostname, PublicKey: key, CreatedAt: s.Now()})
	return d.ID, err
}

// AddBreakGlassUse stores a use of emergency account user with
// justification, started now with a one-hour bound, as a break-glass
// sign-in would record it (without the device and session), for tests of
// its review.
func (s *Server) AddBreakGlassUse(ctx context.Context, id, user, justification string) error {
	now := s.Now()
	return s.Store.CreateBreakGlassUse(ctx, store.BreakGlassUse{ID: id, User: user, DeviceID: "dev-0000000000", SessionID: "ses-0000000000",
		Source: "192.0.2.9", Justification: justification, StartedAt: now, ExpiresAt: now.Add(time.Hour)})
}

// Now is the server's clock.
func (s *Server) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

// Advance moves the clock forward.
func (s *Server) Advance(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = s.now.Add(d)
}

// Record appends one audit record at the server's clock, as a gateway's
// report or a sign-in would (for tests of reading the trail).
func (s *Server) Record(ctx context.Context, typ audit.Type, actor, outcome, subject string, details map[string]string) error {
	return s.Store.AppendAudit(ctx, store.AuditEvent{Time: s.Now(), Type: typ, Actor: actor, Outcome: outcome, Subject: subject, Details: details})
}

// Changed returns how often the API reported a network-map change.
func (s *Server) Changed() int64 { return s.changed.Load() }

// Logs returns everything the API logged so far.
func (s *Server) Logs() string { return s.logs.String() }

// HTTPClient returns a client that trusts only the server's CA.
func (s *Server) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.CA.Pool(), MinVersion: tls.VersionTLS13}}}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
