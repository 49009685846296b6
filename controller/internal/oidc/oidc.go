// Package oidc signs users in through OpenID Connect identity providers
// (Okta, Entra ID, Auth0, Keycloak; several at once) and keeps checking,
// by refreshing their tokens, that the provider still accepts them.
//
// The controller is the OIDC client (relying party): it exchanges the
// authorization code, polls the device flow and holds the refresh tokens;
// the device only opens the browser, receives the code on a loopback
// redirect (RFC 8252) and holds the PKCE verifier (RFC 7636) that makes
// the code useless to anyone else. No IdP token ever reaches a device, and
// the client secret (if the provider is a confidential client) stays on
// the controller.
//
// # Login state machine
//
// A login is created by StartCode or StartDevice and lives at most
// loginTTL (or the device code's lifetime). FinishCode consumes it once,
// whatever the outcome, so a code, state or nonce cannot be replayed.
// A device login moves pending → done (token or error) in its own
// goroutine, which Close stops; PollDevice consumes it once done.
package oidc

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"golang.org/x/oauth2"
)

// Login errors callers branch on.
var (
	ErrUnknownProvider = errors.New("no such identity provider")
	ErrUnknownLogin    = errors.New("sign-in unknown, already finished or expired: start again")
	ErrPending         = errors.New("authorization_pending")
	ErrSlowDown        = errors.New("slow_down")
	ErrExpired         = errors.New("expired_token")
	ErrDenied          = errors.New("access_denied")
	ErrRedirect        = errors.New("redirect URI must be a loopback http URL (http://127.0.0.1:PORT/..., http://[::1]:PORT/... or http://localhost:PORT/...)")
	ErrNoDeviceFlow    = errors.New("the device flow is not enabled for this identity provider (device_flow: true)")
	ErrCodeRefused     = errors.New("the identity provider refused the authorization code")
	ErrBusy            = errors.New("too many sign-ins in progress: try again in a few minutes")
	errClosed          = errors.New("controller shutting down")
)

const (
	loginTTL   = 10 * time.Minute
	maxPending = 4096
	// maxDevicePending bounds the device-code sign-ins being polled at the
	// IdPs at once (each polls until its code expires, at most loginTTL).
	maxDevicePending = 256
	// Each source address (IPv6: each /64) may hold only a small share of
	// the pending sign-ins, so that one client flooding the public start
	// routes cannot lock everyone else out; the global caps above are a
	// last resort against many sources at once.
	maxPendingPerSource       = 16 // code-flow sign-ins
	maxDevicePendingPerSource = 4  // device-flow sign-ins
	// BusyAuditWindow is how often a refused source (or a full controller)
	// is reported as worth auditing: once per window, not per request.
	BusyAuditWindow = loginTTL
	tokenKeySize    = 32
)

// Config configures a Manager.
type Config struct {
	Providers       []ProviderConfig
	RefreshInterval time.Duration // 0: DefaultRefreshInterval
	// UnreachableLimit: how long sessions outlive their last successful
	// check while the provider cannot be reached (0:
	// DefaultUnreachableLimit). See File.UnreachableLimit.
	UnreachableLimit time.Duration
	// HTTPTimeout bounds each request to a provider (0: 15s; tests
	// shorten it).
	HTTPTimeout time.Duration
	Store       store.Store // required, for reads
	// State makes the refresher's changes; nil: one over Store.
	State *state.State
	// TokenKey (32 bytes) seals refresh tokens at rest with AES-256-GCM.
	TokenKey []byte
	Logger   *slog.Logger
	Changed  func()           // called after sessions end or groups change; must not block
	Now      func() time.Time // default time.Now
	// Transport, if set, carries every request to the providers (tests).
	Transport http.RoundTripper
}

// Manager is the OIDC relying party.
type Manager struct {
	providers map[string]*provider
	names     []string
	st        store.Store
	state     *state.State
	aead      cipher.AEAD
	log       *slog.Logger
	changed   func()
	now       func() time.Time
	interval  time.Duration
	// unreachableLimit bounds sessions kept while the provider cannot be
	// reached (see File.UnreachableLimit).
	unreachableLimit time.Duration

	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	pending  map[string]*login
	sources  map[string]*sourceUse // by auth.SourceKey; only sources with pending or reserved sign-ins
	reserved int                   // sign-ins counted against the caps but not yet in pending
	// sweepAfter is a lower bound of the expiry of every pending login: a
	// sweep before it would find nothing to evict.
	sweepAfter time.Time
	busySince  time.Time // last auditable refusal because the controller was full
	closed     bool
	devices    atomic.Int32 // device-code sign-ins being polled at the IdP, or reserved; incremented under mu only
}

// sourceUse is what one source address holds of the pending sign-ins.
type sourceUse struct {
	code, device int               // pending or reserved, per flow
	logins       map[string]*login // the pending ones, by login ID
	busySince    time.Time         // last auditable refusal of this source
}

// login is one sign-in in progress.
type login struct {
	idp      *provider
	source   string // auth.SourceKey of the client that started it
	expires  time.Time
	redirect string // code flow
	nonce    string // code flow
	// device flow
	device   *oauth2.DeviceAuthResponse
	done     chan struct{} // closed when tok or err is set
	tok      *oauth2.Token
	err      error
	lastPoll time.Time
	interval time.Duration
}

// New returns a Manager; Run starts its refresher.
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil {
		return nil, errors.New("oidc.New: Store is required")
	}
	if len(cfg.TokenKey) != tokenKeySize {
		return nil, fmt.Errorf("oidc.New: TokenKey must be %d bytes", tokenKeySize)
	}
	blk, err := aes.NewCipher(cfg.TokenKey)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		providers: map[string]*provider{}, st: cfg.Store, state: cfg.State, aead: aead, log: cfg.Logger,
		changed: cfg.Changed, now: cfg.Now, interval: cfg.RefreshInterval, pending: map[string]*login{},
		sources: map[string]*sourceUse{},
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.changed == nil {
		m.changed = func() {}
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.state == nil {
		m.state = state.New(state.Config{Store: cfg.Store, Now: m.now, Logger: m.log})
	}
	if m.interval <= 0 {
		m.interval = DefaultRefreshInterval
	}
	if m.unreachableLimit = cfg.UnreachableLimit; m.unreachableLimit <= 0 {
		m.unreachableLimit = max(DefaultUnreachableLimit, m.interval)
	}
	m.ctx, m.cancel = context.WithCancelCause(context.Background())
	for _, pc := range cfg.Providers {
		if err := pc.check(); err != nil {
			return nil, fmt.Errorf("provider %s: %w", pc.Name, err)
		}
		p, err := newProvider(pc, m.now, cfg.Transport, cfg.HTTPTimeout)
		if err != nil {
			return nil, err
		}
		m.providers[pc.Name] = p
		m.names = append(m.names, pc.Name)
	}
	slices.Sort(m.names)
	return m, nil
}

// Close stops the refresher and every device-flow poll, and waits for
// them. It is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.cancel(errors.New("oidc manager closed"))
	m.wg.Wait()
	return nil
}

// ProviderInfo is what a client needs to know about a provider.
type ProviderInfo struct {
	Name        string `json:"name"`
	DisplayName string `json:"display_name"`
	Issuer      string `json:"issuer"`
	ClientID    string `json:"client_id"`
	DeviceFlow  bool   `json:"device_flow"`
	PolicyClaim string `json:"policy_claim"`
	// The loopback redirect the client must use (see ProviderConfig).
	RedirectHost string `json:"redirect_host"`
	RedirectPort uint16 `json:"redirect_port,omitempty"`
	RedirectURI  string `json:"redirect_uri"` // to register at the IdP
}

// Providers lists the configured providers, by name.
func (m *Manager) Providers() []ProviderInfo {
	out := make([]ProviderInfo, 0, len(m.names))
	for _, n := range m.names {
		c := m.providers[n].cfg
		out = append(out, ProviderInfo{Name: c.Name, DisplayName: c.DisplayName, Issuer: c.Issuer, ClientID: c.ClientID, DeviceFlow: c.DeviceFlow, PolicyClaim: c.PolicyClaim,
			RedirectHost: c.RedirectHost, RedirectPort: uint16(c.RedirectPort), RedirectURI: c.RedirectURI()})
	}
	return out
}

// Result is a verified sign-in.
type Result struct {
	IdP          string
	Claims       Claims
	PolicyClaim  string
	RefreshToken string // sealed; "" if the provider gave none
}

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// BusyError refuses a sign-in start because too many are pending, from
// the caller's source address (PerSource) or on the whole controller. It
// wraps ErrBusy.
type BusyError struct {
	PerSource  bool
	Device     bool          // the device flow's cap was reached
	RetryAfter time.Duration // when a pending sign-in expires at the latest
	// Audit is true for the first refusal of this source (or of the whole
	// controller) in a BusyAuditWindow: report it once, not per request.
	Audit bool
}

func (e *BusyError) Error() string {
	if !e.PerSource {
		return ErrBusy.Error()
	}
	n, flow := maxPendingPerSource, "sign-ins"
	if e.Device {
		n, flow = maxDevicePendingPerSource, "device-code sign-ins"
	}
	return fmt.Sprintf("too many %s in progress from this address (at most %d): finish or abandon them, or try again in %s", flow, n, e.RetryAfter.Round(time.Second))
}

func (e *BusyError) Unwrap() error { return ErrBusy }

// reserve counts a sign-in about to start from src (an auth.SourceKey) against
// the per-source and global caps, before any request to the IdP; expired
// logins are evicted before refusing. The caller must then commit or
// unreserve.
func (m *Manager) reserve(src string, device bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	now := m.now()
	u := m.sources[src]
	if u != nil && u.full(device) {
		m.evict(u.logins, now)
		if u = m.sources[src]; u != nil && u.full(device) {
			e := &BusyError{PerSource: true, Device: device, RetryAfter: u.retryAfter(device, now)}
			if e.Audit = !now.Before(u.busySince.Add(BusyAuditWindow)); e.Audit {
				u.busySince = now
			}
			return e
		}
	}
	if len(m.pending)+m.reserved >= maxPending {
		if !now.Before(m.sweepAfter) {
			m.sweepAfter = m.evict(m.pending, now)
		}
		if len(m.pending)+m.reserved >= maxPending {
			return m.busy(now)
		}
	}
	if device && m.devices.Add(1) > maxDevicePending {
		m.devices.Add(-1)
		return m.busy(now)
	}
	if u = m.sources[src]; u == nil {
		u = &sourceUse{logins: map[string]*login{}}
		m.sources[src] = u
	}
	u.count(device, 1)
	m.reserved++
	return nil
}

// busy refuses a start because the whole controller is at a global cap.
func (m *Manager) busy(now time.Time) *BusyError {
	e := &BusyError{RetryAfter: max(m.sweepAfter.Sub(now), time.Second)}
	if e.Audit = !now.Before(m.busySince.Add(BusyAuditWindow)); e.Audit {
		m.busySince = now
	}
	return e
}

// unreserve gives back a reservation that did not become a login.
func (m *Manager) unreserve(src string, device bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unreserveLocked(src, device)
}

func (m *Manager) unreserveLocked(src string, device bool) {
	m.reserved--
	if device {
		m.devices.Add(-1)
	}
	m.uncount(src, device)
}

func (m *Manager) uncount(src string, device bool) {
	if u := m.sources[src]; u != nil {
		u.count(device, -1)
		if u.code <= 0 && u.device <= 0 {
			delete(m.sources, src)
		}
	}
}

// commit turns the reservation of l.source into the pending login l under
// a new ID. For a device login it also adds poll, the goroutine polling
// the IdP, to m.wg — under m.mu with the closed check, so that Close
// either waits for it or it never starts.
func (m *Manager) commit(l *login, poll func()) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	device := l.device != nil
	if m.closed {
		m.unreserveLocked(l.source, device)
		return "", errClosed
	}
	m.reserved--
	var b [16]byte
	rand.Read(b[:])
	id := "login-" + hex.EncodeToString(b[:])
	m.pending[id] = l
	m.sources[l.source].logins[id] = l
	if len(m.pending) == 1 || l.expires.Before(m.sweepAfter) {
		m.sweepAfter = l.expires
	}
	if poll != nil {
		m.wg.Go(poll)
	}
	return id, nil
}

// remove deletes a pending login (m.mu held).
func (m *Manager) remove(id string, l *login) {
	delete(m.pending, id)
	if u := m.sources[l.source]; u != nil {
		delete(u.logins, id)
	}
	m.uncount(l.source, l.device != nil)
}

// evict removes the expired logins of set (m.pending or one source's
// logins) and returns the earliest expiry among the rest (zero if none).
func (m *Manager) evict(set map[string]*login, now time.Time) (next time.Time) {
	for id, l := range set {
		if now.After(l.expires) {
			m.remove(id, l)
		} else if next.IsZero() || l.expires.Before(next) {
			next = l.expires
		}
	}
	return next
}

func (u *sourceUse) full(device bool) bool {
	if device {
		return u.device >= maxDevicePendingPerSource
	}
	return u.code >= maxPendingPerSource
}

func (u *sourceUse) count(device bool, d int) {
	if device {
		u.device += d
	} else {
		u.code += d
	}
}

// retryAfter is when the source's first pending login of the kind expires.
func (u *sourceUse) retryAfter(device bool, now time.Time) time.Duration {
	var first time.Time
	for _, l := range u.logins {
		if (l.device != nil) == device && (first.IsZero() || l.expires.Before(first)) {
			first = l.expires
		}
	}
	if first.IsZero() { // only reservations: they resolve within a request
		return time.Second
	}
	return max(first.Sub(now), time.Second)
}

// CodeStart is the start of an authorization code sign-in.
type CodeStart struct {
	LoginID string `json:"login_id"`
	AuthURL string `json:"auth_url"`
	State   string `json:"state"`
}

// StartCode starts an authorization code + PKCE sign-in at provider idp
// for a client at source (its IP address): the device opens AuthURL in a
// browser, receives code and State at redirectURI (a loopback URL it
// listens on) and calls FinishCode with the PKCE verifier whose S256
// challenge it gave here. A source with too many sign-ins pending is
// refused with a *BusyError.
func (m *Manager) StartCode(ctx context.Context, source, idp, redirectURI, challenge string) (CodeStart, error) {
	p, ok := m.providers[idp]
	if !ok {
		return CodeStart{}, fmt.Errorf("%w: %q", ErrUnknownProvider, clip(idp))
	}
	if !loopbackRedirect(redirectURI) {
		return CodeStart{}, ErrRedirect
	}
	if err := p.cfg.checkRedirect(redirectURI); err != nil {
		return CodeStart{}, err
	}
	if len(challenge) != 43 { // base64url(SHA-256), RFC 7636
		return CodeStart{}, errors.New("code_challenge: must be the base64url S256 challenge of the PKCE verifier (43 characters)")
	}
	src := auth.SourceKey(source)
	if err := m.reserve(src, false); err != nil {
		return CodeStart{}, err
	}
	cfg, err := p.oauth2(ctx, redirectURI)
	if err != nil {
		m.unreserve(src, false)
		return CodeStart{}, err
	}
	l := &login{idp: p, source: src, expires: m.now().Add(loginTTL), redirect: redirectURI, nonce: randomString(24)}
	id, err := m.commit(l, nil)
	if err != nil {
		return CodeStart{}, err
	}
	state := randomString(24)
	u := cfg.AuthCodeURL(state,
		oauth2.SetAuthURLParam("code_challenge", challenge),
		oauth2.SetAuthURLParam("code_challenge_method", "S256"),
		oauth2.SetAuthURLParam("nonce", l.nonce))
	return CodeStart{LoginID: id, AuthURL: u, State: state}, nil
}

// take removes and returns a pending login of the given kind.
func (m *Manager) take(id string, device bool) (*login, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.pending[id]
	if !ok || (l.device != nil) != device {
		return nil, ErrUnknownLogin
	}
	m.remove(id, l)
	if m.now().After(l.expires) {
		return nil, ErrUnknownLogin
	}
	return l, nil
}

// FinishCode exchanges the code (with the PKCE verifier) at the provider
// and verifies the ID token. The login is consumed whatever happens.
func (m *Manager) FinishCode(ctx context.Context, loginID, code, verifier string) (Result, error) {
	l, err := m.take(loginID, false)
	if err != nil {
		return Result{}, err
	}
	if code == "" || verifier == "" {
		return Result{}, errors.New("code and code_verifier are required")
	}
	cfg, err := l.idp.oauth2(ctx, l.redirect)
	if err != nil {
		return Result{}, err
	}
	tok, err := cfg.Exchange(l.idp.ctx(ctx), code, oauth2.VerifierOption(verifier))
	if err != nil {
		return Result{}, tokenError(l.idp, err)
	}
	return m.result(ctx, l.idp, tok, l.nonce)
}

// tokenError classifies a token endpoint failure.
func tokenError(p *provider, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
		switch re.ErrorCode {
		case "invalid_grant":
			return fmt.Errorf("%w (%s): invalid_grant: the code was already used, expired, or the PKCE verifier does not match", ErrCodeRefused, p.cfg.Name)
		case "access_denied":
			return fmt.Errorf("%w: %s", ErrDenied, p.cfg.Name)
		case "expired_token":
			return fmt.Errorf("%w: %s", ErrExpired, p.cfg.Name)
		}
		return fmt.Errorf("%w (%s): %s %s", ErrCodeRefused, p.cfg.Name, re.ErrorCode, clip(re.ErrorDescription))
	}
	return p.unreachable("token endpoint", err)
}

func (m *Manager) result(ctx context.Context, p *provider, tok *oauth2.Token, nonce string) (Result, error) {
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return Result{}, fmt.Errorf("%w: the provider returned no ID token (is the openid scope granted?)", ErrTokenInvalid)
	}
	c, err := p.verify(ctx, raw, nonce)
	if err != nil {
		return Result{}, err
	}
	r := Result{IdP: p.cfg.Name, Claims: c, PolicyClaim: p.cfg.PolicyClaim}
	if tok.RefreshToken != "" {
		r.RefreshToken = m.seal(tok.RefreshToken, p.cfg.Name, c.Subject)
	}
	return r, nil
}

// DeviceStart is the start of a device authorization sign-in.
type DeviceStart struct {
	LoginID                 string    `json:"login_id"`
	UserCode                string    `json:"user_code"`
	VerificationURI         string    `json:"verification_uri"`
	VerificationURIComplete string    `json:"verification_uri_complete,omitempty"`
	ExpiresAt               time.Time `json:"expires_at"`
	Interval                int       `json:"interval"` // seconds between polls
}

// StartDevice starts a device authorization grant at provider idp for a
// client at source (its IP address); the controller polls the provider
// while the device polls PollDevice. A source with too many sign-ins
// pending is refused with a *BusyError.
func (m *Manager) StartDevice(ctx context.Context, source, idp string) (DeviceStart, error) {
	p, ok := m.providers[idp]
	if !ok {
		return DeviceStart{}, fmt.Errorf("%w: %q", ErrUnknownProvider, clip(idp))
	}
	if !p.cfg.DeviceFlow {
		return DeviceStart{}, ErrNoDeviceFlow
	}
	src := auth.SourceKey(source)
	if err := m.reserve(src, true); err != nil {
		return DeviceStart{}, err
	}
	committed := false
	defer func() {
		if !committed {
			m.unreserve(src, true)
		}
	}()
	cfg, err := p.oauth2(ctx, "")
	if err != nil {
		return DeviceStart{}, err
	}
	if cfg.Endpoint.DeviceAuthURL == "" {
		return DeviceStart{}, fmt.Errorf("provider %s announces no device_authorization_endpoint: enable the device flow at the IdP", p.cfg.Name)
	}
	da, err := cfg.DeviceAuth(p.ctx(ctx))
	if err != nil {
		return DeviceStart{}, tokenError(p, err)
	}
	if da.Interval <= 0 {
		da.Interval = 5
	}
	exp := da.Expiry
	if exp.IsZero() || exp.After(m.now().Add(loginTTL)) {
		exp = m.now().Add(loginTTL)
	}
	l := &login{idp: p, source: src, expires: exp, device: da, done: make(chan struct{}), interval: time.Duration(da.Interval) * time.Second}
	committed = true // commit gives the reservation back itself if it fails
	id, err := m.commit(l, func() {
		defer m.devices.Add(-1)
		pctx, cancel := context.WithDeadline(m.ctx, exp)
		defer cancel()
		tok, err := cfg.DeviceAccessToken(p.ctx(pctx), da)
		// The device code's lifetime ends the poll with a deadline error
		// (x/oauth2 bounds it by the same expiry).
		if err != nil && (pctx.Err() != nil || errors.Is(err, context.DeadlineExceeded)) && m.ctx.Err() == nil {
			err = fmt.Errorf("%w: the code was not confirmed in time", ErrExpired)
		} else if err != nil {
			err = tokenError(p, err)
		}
		m.mu.Lock()
		l.tok, l.err = tok, err
		m.mu.Unlock()
		close(l.done)
	})
	if err != nil {
		return DeviceStart{}, err
	}
	return DeviceStart{
		LoginID: id, UserCode: da.UserCode, VerificationURI: da.VerificationURI,
		VerificationURIComplete: da.VerificationURIComplete, ExpiresAt: exp.UTC(), Interval: int(da.Interval),
	}, nil
}

// PollDevice reports a device sign-in: ErrPending while the user has not
// confirmed, ErrSlowDown when polled faster than the interval, ErrExpired
// or ErrDenied when it failed, or the verified result (once).
func (m *Manager) PollDevice(ctx context.Context, loginID string) (Result, error) {
	m.mu.Lock()
	l, ok := m.pending[loginID]
	if !ok || l.device == nil {
		m.mu.Unlock()
		return Result{}, ErrUnknownLogin
	}
	now := m.now()
	select {
	case <-l.done:
		m.remove(loginID, l)
		m.mu.Unlock()
		if l.err != nil {
			return Result{}, l.err
		}
		return m.result(ctx, l.idp, l.tok, "")
	default:
	}
	if now.After(l.expires) {
		m.remove(loginID, l)
		m.mu.Unlock()
		return Result{}, ErrExpired
	}
	early := !l.lastPoll.IsZero() && now.Sub(l.lastPoll) < l.interval-l.interval/5
	l.lastPoll = now
	m.mu.Unlock()
	if early {
		return Result{}, ErrSlowDown
	}
	return Result{}, ErrPending
}

// loopbackRedirect reports an RFC 8252 loopback redirect URI.
func loopbackRedirect(s string) bool {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Port() == "" {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// checkRedirect holds a loopback redirect URI to the provider's
// redirect_host and redirect_port (the URI registered at the IdP). With
// neither configured, any loopback host and port pass (RFC 8252 §7.3).
func (c *ProviderConfig) checkRedirect(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return ErrRedirect
	}
	host := u.Host[:len(u.Host)-len(u.Port())-1] // keeps [::1]'s brackets
	if c.RedirectHost != "" && c.RedirectHost != DefaultRedirectHost || c.RedirectPort != 0 {
		if host != c.RedirectHost || c.RedirectPort != 0 && u.Port() != fmt.Sprint(c.RedirectPort) || u.Path != "/callback" {
			return fmt.Errorf("%w: provider %s accepts only %s (redirect_host, redirect_port): update the client, or check the controller's OIDC configuration", ErrRedirect, c.Name, c.RedirectURI())
		}
	}
	return nil
}

// seal encrypts a refresh token, bound to its provider and subject.
func (m *Manager) seal(token, idp, subject string) string {
	nonce := make([]byte, m.aead.NonceSize())
	rand.Read(nonce)
	return "v1." + base64.RawURLEncoding.EncodeToString(m.aead.Seal(nonce, nonce, []byte(token), []byte(idp+"\x00"+subject)))
}

// open reverses seal.
func (m *Manager) open(sealed, idp, subject string) (string, error) {
	if len(sealed) < 3 || sealed[:3] != "v1." {
		return "", errors.New("sealed refresh token: unknown format")
	}
	b, err := base64.RawURLEncoding.DecodeString(sealed[3:])
	if err != nil || len(b) < m.aead.NonceSize() {
		return "", errors.New("sealed refresh token: malformed")
	}
	pt, err := m.aead.Open(nil, b[:m.aead.NonceSize()], b[m.aead.NonceSize():], []byte(idp+"\x00"+subject))
	if err != nil {
		return "", errors.New("sealed refresh token: does not open with this controller's key")
	}
	return string(pt), nil
}
