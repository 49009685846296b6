// Package server wires the controller together: store, CA, admin API over
// HTTPS (TCP) and the agent control channel over QUIC (UDP), both on the same
// port number.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/cordonhq/cordon/controller/internal/api"
	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/control"
	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/netmap"
	"github.com/cordonhq/cordon/controller/internal/oidc"
	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/siem"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/pkg/privdir"
	"github.com/cordonhq/cordon/pkg/secretfile"
	"github.com/quic-go/quic-go"
)

// AdminTokenFile is where the first-start owner token is written (0600).
const AdminTokenFile = "admin-token"

// Config configures the controller.
type Config struct {
	DataDir string
	Listen  string   // host:port for HTTPS (TCP) and control (UDP)
	Hosts   []string // names and addresses the server certificate covers
	Logger  *slog.Logger
	// Announce receives the one-time first-start message (the owner token).
	Announce io.Writer
	// Ready, if set, is called with the bound address once serving.
	Ready func(addr net.Addr)
	// DNS names the internal DNS zones (--dns-zone, --dns-ttl).
	DNS netmap.DNSConfig
	// Sessions are the session limits (--session-idle, --session-idle-for,
	// --session-absolute); a zero value means session.DefaultLimits.
	Sessions session.Limits
	// PostureInterval is how often clients re-collect and report their
	// posture (--posture-interval); zero: control.DefaultPostureInterval.
	PostureInterval time.Duration
	// GatewayGrantLifetime is how long a gateway cut off from the
	// controller may serve its last map (--gateway-grant-lifetime); zero:
	// controlproto.DefaultGrantLifetime.
	GatewayGrantLifetime time.Duration
	// ClockSkewThreshold: see control.Config (0: its default).
	ClockSkewThreshold time.Duration
	// DriftCheck is how often the map engine's state is compared with the
	// whole store (--drift-check); zero: control.DefaultDriftCheck.
	DriftCheck time.Duration
	// AgentCertTTL is the lifetime of agent certificates
	// (--agent-cert-ttl); agents renew after two thirds. Zero: ca.AgentCertTTL.
	AgentCertTTL time.Duration
	// AdminSessionTTL is the lifetime of admin sign-in tokens
	// (--admin-session-ttl); zero: adminapi.DefaultAdminSessionTTL.
	AdminSessionTTL time.Duration
	// BootstrapTokenTTL is the lifetime of the owner token made when no
	// owner credential exists (--bootstrap-token-ttl); zero:
	// DefaultBootstrapTokenTTL.
	BootstrapTokenTTL time.Duration
	// LoginAlert sets when repeated failed sign-ins raise an auth.alert
	// event (--login-alert-threshold, --login-alert-window).
	LoginAlert auth.AlertConfig
	// OIDC is the --oidc-config file (identity providers); nil: none.
	OIDC *oidc.File
	// DebugListen, if set, serves Go's pprof profiles there
	// (--debug-listen; loopback addresses only).
	DebugListen string
	// SIEM is the --siem-config file (sinks the audit log is streamed
	// to); nil: none.
	SIEM *siem.File
	// MetricsListen, if set, serves Prometheus metrics (/metrics) and
	// health (/healthz, /readyz) there, without TLS (--metrics-listen).
	MetricsListen string
	// AuditRetentionYears is how long audit records are kept before one
	// admin may archive them (--audit-retention-years); zero:
	// state.DefaultRetentionYears. Below state.MinRetentionYears is an
	// error.
	AuditRetentionYears int
}

// Run runs the controller until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if err := cfg.DNS.Validate(); err != nil {
		return err
	}
	if y := cfg.AuditRetentionYears; y != 0 && y < state.MinRetentionYears {
		return fmt.Errorf("--audit-retention-years %d: at least %d (HIPAA keeps documentation six years, 45 CFR 164.316(b)(2)); longer is allowed", y, state.MinRetentionYears)
	}
	// The CA key, the OIDC token key and the database live here: owner
	// only, also when the directory existed before with a looser mode.
	var debugLn net.Listener
	if cfg.DebugListen != "" {
		if err := checkDebugListen(cfg.DebugListen); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", cfg.DebugListen)
		if err != nil {
			return fmt.Errorf("--debug-listen: %w", err)
		}
		debugLn = ln
		defer ln.Close()
	}
	var metricsLn net.Listener
	if cfg.MetricsListen != "" {
		ln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		metricsLn = ln
		defer ln.Close()
	}
	if err := privdir.Ensure(cfg.DataDir, log); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	st, err := sqlite.Open(ctx, filepath.Join(cfg.DataDir, sqlite.FileName))
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	authority, err := ca.LoadOrCreate(cfg.DataDir)
	if err != nil {
		return err
	}
	if cfg.AgentCertTTL != 0 {
		if err := authority.SetAgentCertTTL(cfg.AgentCertTTL); err != nil {
			return fmt.Errorf("--agent-cert-ttl: %w", err)
		}
	}
	// The state owner is every change's single writer; what it changed
	// goes to the control server, made below.
	var ctl *control.Server
	owner := state.New(state.Config{Store: st, Logger: log.With("component", "state"), RetentionYears: cfg.AuditRetentionYears,
		Publish: func(c store.Change) { ctl.Changed(c) }})
	if err := bootstrapOwner(ctx, owner, cfg.DataDir, authority, cfg.Announce, cfg.BootstrapTokenTTL, time.Now()); err != nil {
		return err
	}
	hosts := append([]string{"localhost", "127.0.0.1", "::1"}, cfg.Hosts...)
	if host, _, err := net.SplitHostPort(cfg.Listen); err == nil && host != "" && host != "0.0.0.0" && host != "::" {
		hosts = append(hosts, host)
	}
	cert, err := authority.ServerCertificate(hosts)
	if err != nil {
		return err
	}

	limits := cfg.Sessions
	if limits.IsZero() {
		limits = session.DefaultLimits()
		limits.BreakGlass = cfg.Sessions.BreakGlass
	}
	sessions, err := session.NewManager(session.ManagerConfig{
		Store: st, State: owner, Limits: limits, Logger: log.With("component", "sessions"),
		// The devices whose sessions crossed a class's idle limit.
		Changed: func(c store.Change) { ctl.Changed(c) },
	})
	if err != nil {
		return err
	}
	resetKey, err := loadResetKey(cfg.DataDir)
	if err != nil {
		return err
	}
	// The audit log's signer: its checkpoints go to the gateways.
	logKey, err := ledger.LoadKey(cfg.DataDir)
	if err != nil {
		return err
	}
	led := ledger.New(ledger.Config{Store: st, State: owner, Key: logKey, Logger: log.With("component", "ledger"),
		Publish: func(c ledger.Signed) { ctl.PublishCheckpoint(c) }})
	pushHist := newPushHistogram()
	ctl = control.New(control.Config{ObservePush: func(d time.Duration) { pushHist.Observe(d.Seconds()) }, Store: st, State: owner, ResetKey: resetKey, CA: authority, ServerCert: cert, Logger: log.With("component", "control"), DNS: cfg.DNS,
		Sessions: sessions, PostureInterval: cfg.PostureInterval, GrantLifetime: cfg.GatewayGrantLifetime, DriftCheck: cfg.DriftCheck, Ledger: led,
		ClockSkewThreshold: cfg.ClockSkewThreshold})
	// Sign what a crash left unsigned before anyone asks for a checkpoint.
	if _, err := led.Sign(ctx); err != nil {
		log.Error("audit log: checkpoint at start not signed", "err", err)
	}
	// The SIEM sinks: each reads the log after its own cursor.
	var exporter *siem.Exporter
	var sinkStatus func() []siem.Status
	if cfg.SIEM != nil {
		exporter, err = siem.New(siem.Config{Log: st, Recorder: owner, Dir: filepath.Join(cfg.DataDir, SIEMDir),
			Sinks: cfg.SIEM.Sinks, Hostname: cfg.SIEM.Hostname, Origin: logKey.Origin(), Logger: log.With("component", "siem")})
		if err != nil {
			return fmt.Errorf("--siem-config: %w", err)
		}
		sinkStatus = exporter.Status
	}
	idps, err := startOIDC(cfg, st, owner, log)
	if err != nil {
		return err
	}
	var oidcAPI api.OIDC // stays a nil interface without providers
	if idps != nil {
		defer idps.Close()
		oidcAPI = idps
	}
	apiSrv := api.New(api.Config{
		Store:           st,
		State:           owner,
		CA:              authority,
		Logger:          log.With("component", "api"),
		AdminSessionTTL: cfg.AdminSessionTTL,
		LoginAlert:      auth.NewFailureAlert(cfg.LoginAlert),
		OIDC:            oidcAPI,
		Ledger:          led,
		Sinks:           sinkStatus,
		Activity:        sessions.LastActivity,
		DNS:             cfg.DNS,
		GatewayHealth:   gatewayHealth{ctl},
		Sessions:        limits,
		BreakGlassFor:   limits.BreakGlassBound(),
	})

	tcpLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s/tcp: %w", cfg.Listen, err)
	}
	// QUIC on the UDP port of the same number as the bound TCP port.
	udpAddr := tcpLn.Addr().String()
	pc, err := net.ListenPacket("udp", udpAddr)
	if err != nil {
		tcpLn.Close()
		return fmt.Errorf("listen on %s/udp: %w", udpAddr, err)
	}
	httpSrv := &http.Server{
		Handler:           apiSrv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		TLSConfig:         apiTLSConfig(cert, authority.Pool()),
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Go(func() { sessions.Run(ctx) })
	wg.Go(func() { led.Run(ctx) })
	// The audit search's key index, written behind the appends.
	wg.Go(func() { st.RunAuditIndexer(ctx, log.With("component", "auditindex")) })
	if exporter != nil {
		wg.Go(func() { exporter.Run(ctx) })
	}
	if debugLn != nil {
		wg.Go(func() { serveDebug(ctx, debugLn, log.With("component", "debug")) })
	}
	if metricsLn != nil {
		wg.Go(func() {
			reg := metricsRegistry(metricsSources{totals: ctl.Totals, latest: led.Latest, sinks: sinkStatus,
				signInFailures: apiSrv.SignInFailures, push: pushHist, auditIndexBehind: st.AuditIndexBehind})
			serveMetrics(ctx, metricsLn, reg, st, log.With("component", "metrics"))
		})
	}
	wg.Go(func() {
		if err := ctl.Serve(ctx, pc); err != nil {
			errc <- err
			cancel(err)
		}
	})
	wg.Go(func() {
		if err := httpSrv.ServeTLS(tcpLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- err
			cancel(err)
		}
	})
	log.Info("controller listening", "addr", tcpLn.Addr().String(), "ca_fingerprint", authority.Fingerprint(), "data_dir", cfg.DataDir,
		"session_idle", limits.DefaultIdle, "session_absolute", limits.Absolute, "break_glass_duration", limits.BreakGlassBound(), "audit_log_key", logKey.VerifierKey())
	if cfg.Ready != nil {
		cfg.Ready(tcpLn.Addr())
	}
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	httpSrv.Shutdown(sctx)
	pc.Close()
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// SIEMDir is the data dir's directory of SIEM sink cursors (one
// NAME.cursor file per sink).
const SIEMDir = "siem"

// ResetKeyFile holds the key of the control channel's stateless resets
// (0600): the same across restarts, so a restarted controller can tell an
// agent its old connection is gone.
const ResetKeyFile = "quic-reset.key"

func loadResetKey(dir string) (*quic.StatelessResetKey, error) {
	b, err := secretfile.LoadOrCreate(filepath.Join(dir, ResetKeyFile), len(quic.StatelessResetKey{}))
	if err != nil {
		return nil, fmt.Errorf("control channel reset key: %w (delete the file: the controller makes a new one)", err)
	}
	var k quic.StatelessResetKey
	copy(k[:], b)
	return &k, nil
}

// apiTLSConfig is the admin API's TLS: 1.3 only, as on the QUIC control
// channel. Every Cordon client (cordonctl, the agents) already requires
// 1.3, so accepting 1.2 only offered scanners and downgrades its CBC
// suites. A device may present its certificate (POST /v1/logout); nobody
// has to, and admin routes authenticate by token.
func apiTLSConfig(cert tls.Certificate, agents *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    agents,
	}
}

// startOIDC starts the OIDC relying party and its refresher, or returns
// nil when no provider is configured.
func startOIDC(cfg Config, st *sqlite.Store, owner *state.State, log *slog.Logger) (*oidc.Manager, error) {
	if cfg.OIDC == nil {
		return nil, nil
	}
	key, err := oidc.LoadOrCreateKey(filepath.Join(cfg.DataDir, oidc.TokenKeyFile))
	if err != nil {
		return nil, err
	}
	m, err := oidc.New(oidc.Config{
		Providers: cfg.OIDC.Providers, RefreshInterval: time.Duration(cfg.OIDC.RefreshInterval),
		UnreachableLimit: time.Duration(cfg.OIDC.UnreachableLimit),
		Store:            st, State: owner, TokenKey: key, Logger: log.With("component", "oidc"),
	})
	if err != nil {
		return nil, err
	}
	m.Run()
	for _, p := range m.Providers() {
		log.Info("identity provider", "name", p.Name, "issuer", p.Issuer, "client_id", p.ClientID, "device_flow", p.DeviceFlow)
	}
	return m, nil
}

// gatewayHealth is the control server's gateway health for the API.
type gatewayHealth struct{ ctl *control.Server }

func (g gatewayHealth) GatewayStatus(id string) (state, version string, lastSeen time.Time) {
	st := g.ctl.GatewayStatus(id)
	return st.State, st.Version, st.LastSeen
}

func (g gatewayHealth) GatewayLoad(id string) (peers, flows int, ok bool) {
	if l := g.ctl.GatewayStatus(id).Load; l != nil {
		return l.Peers, l.Flows, true
	}
	return 0, 0, false
}
