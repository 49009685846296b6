// Package oidctest runs a real OpenID Connect provider for tests: the
// zitadel/oidc `op` package (authorization code with PKCE, refresh
// tokens, device authorization grant, discovery, JWKS) over the example
// storage of that module, with users the test controls (groups, MFA,
// deactivation) and one client. It is not a fake of the protocol: every
// request goes over HTTP to the same code real deployments of that
// library run.
//
// The login page is the library's example page; [IdP.Browser] drives it
// the way a person would, for clients that open a browser.
package oidctest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// Options configure an IdP. Zero values take the defaults.
type Options struct {
	Addr         string // listen address; default 127.0.0.1:0
	ClientID     string // default "cordon"
	ClientSecret string // "" : a public (native) client, PKCE only
	// GroupsClaim is the claim groups go in (default "groups").
	GroupsClaim     string
	IDTokenLifetime time.Duration // default 1h
	DeviceLifetime  time.Duration // device code lifetime, default 5m
	DevicePoll      time.Duration // device poll interval, default 1s
	Logger          *slog.Logger  // the provider library's log; default discard
	// Control serves POST /_oidctest/disable?user=NAME,
	// /_oidctest/enable?user=NAME, /_oidctest/down, /_oidctest/up (see
	// SetDown) and /_oidctest/revoked-answer?as=STYLE (a key of
	// RevokedAnswers), for tests driving the IdP as a separate process. Never on a reachable address outside tests.
	Control bool
	// RevokedAnswer, if set, is how a refresh for a deactivated user is
	// answered (default: the library's HTTP 400 invalid_grant).
	RevokedAnswer *RefreshAnswer
}

// User is a person at the IdP.
type User struct {
	ID       string // the subject; default "sub-" + Username
	Username string // also preferred_username
	Password string
	Email    string
	Groups   []string
	MFA      bool // sign-ins report amr ["pwd", "otp"]
}

// IdP is a running provider.
type IdP struct {
	// Issuer is the issuer URL, with a trailing slash.
	Issuer string
	opts   Options
	srv    *http.Server
	ln     net.Listener
	st     *stor

	mu       sync.Mutex
	users    map[string]*User // by ID
	disabled map[string]bool  // by ID
	down     bool
	// refresh, if set, answers every refresh_token grant; revoked, if
	// set, answers those of a deactivated user (see RefreshAnswer).
	refresh, revoked *RefreshAnswer
	closing          chan struct{} // closed by Close: ends hanging answers
}

// Start starts a provider; Close stops it.
func Start(opts Options) (*IdP, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.ClientID == "" {
		opts.ClientID = "cordon"
	}
	if opts.GroupsClaim == "" {
		opts.GroupsClaim = "groups"
	}
	if opts.IDTokenLifetime == 0 {
		opts.IDTokenLifetime = time.Hour
	}
	if opts.DeviceLifetime == 0 {
		opts.DeviceLifetime = 5 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.DevicePoll == 0 {
		opts.DevicePoll = time.Second
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("oidctest: listen: %w", err)
	}
	i := &IdP{Issuer: "http://" + ln.Addr().String() + "/", opts: opts, ln: ln, users: map[string]*User{}, disabled: map[string]bool{},
		revoked: opts.RevokedAnswer, closing: make(chan struct{})}
	// The example storage checks that a client exists in its own map
	// (device codes); op itself gets our client from GetClientByClientID.
	clients := map[string]*storage.Client{opts.ClientID: storage.NativeClient(opts.ClientID, "http://127.0.0.1/callback")}
	i.st = &stor{Storage: storage.NewStorageWithClients(users{i}, clients), idp: i}

	key := sha256.Sum256([]byte("cordon oidctest"))
	provider, err := op.NewProvider(&op.Config{
		CryptoKey:             key,
		CodeMethodS256:        true,
		AuthMethodPost:        true,
		GrantTypeRefreshToken: true,
		SupportedUILocales:    []language.Tag{language.English},
		DeviceAuthorization: op.DeviceAuthorizationConfig{
			Lifetime: opts.DeviceLifetime, PollInterval: opts.DevicePoll,
			UserFormPath: "/device", UserCode: op.UserCodeBase20,
		},
	}, i.st, op.StaticIssuer(i.Issuer), op.WithAllowInsecure(), op.WithLogger(opts.Logger))
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("oidctest: provider: %w", err)
	}
	r := chi.NewRouter()
	callback := op.AuthCallbackURL(provider)
	r.Get("/login/username", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, loginPage, html.EscapeString(r.URL.Query().Get("authRequestID")), "")
	})
	r.Post("/login/username", op.NewIssuerInterceptor(provider.IssuerFromRequest).HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.FormValue("id")
		if err := i.st.CheckUsernamePassword(r.FormValue("username"), r.FormValue("password"), id); err != nil {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, loginPage, html.EscapeString(id), "wrong user name or password")
			return
		}
		http.Redirect(w, r, callback(r.Context(), id), http.StatusFound)
	}))
	r.Get("/device", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "oidctest: device codes are approved by the test (IdP.ApproveDevice)\n")
	})
	if opts.Control {
		r.Post("/_oidctest/{op}", func(w http.ResponseWriter, r *http.Request) {
			var err error
			switch chi.URLParam(r, "op") {
			case "disable":
				err = i.SetDisabled(r.URL.Query().Get("user"), true)
			case "enable":
				err = i.SetDisabled(r.URL.Query().Get("user"), false)
			case "down":
				i.SetDown(true)
			case "up":
				i.SetDown(false)
			case "revoked-answer":
				// ?as=dex|okta|...: how refreshes of deactivated users are refused.
				a, ok := RevokedAnswers[r.URL.Query().Get("as")]
				if !ok {
					err = errors.New("unknown revoked-answer style")
					break
				}
				i.SetRevokedAnswer(&a)
			default:
				err = errors.New("unknown operation")
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
			}
		})
	}
	r.Mount("/", provider)
	i.srv = &http.Server{Handler: i.gate(r), ReadHeaderTimeout: 10 * time.Second}
	go i.srv.Serve(ln)
	return i, nil
}

const loginPage = `<!doctype html><title>oidctest sign-in</title>
<form method="post" action="/login/username"><input type="hidden" name="id" value="%s">
<p>%s</p><input name="username"><input name="password" type="password"><button>Sign in</button></form>
`

// gate answers 503 to everything while the IdP is "down", and refresh
// grants as set by SetRefreshAnswer and SetRevokedAnswer.
func (i *IdP) gate(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i.mu.Lock()
		down, refresh, revoked := i.down, i.refresh, i.revoked
		i.mu.Unlock()
		if down && !strings.HasPrefix(r.URL.Path, "/_oidctest/") {
			http.Error(w, "oidctest: down", http.StatusServiceUnavailable)
			return
		}
		if (refresh != nil || revoked != nil) && r.Method == http.MethodPost && r.URL.Path == "/"+tokenPath {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if r.ParseForm() == nil && r.PostForm.Get("grant_type") == "refresh_token" {
				if refresh == nil && revoked != nil && i.refreshOfDeactivated(r.Context(), r.PostForm.Get("refresh_token")) {
					refresh = revoked
				}
				if refresh != nil {
					i.answer(w, r, refresh)
					return
				}
			}
		}
		h.ServeHTTP(w, r)
	})
}

// tokenPath is the token endpoint of the op package (relative).
const tokenPath = "oauth/token"

// RefreshAnswer is an answer of the token endpoint to a refresh_token
// grant: an OAuth error response (RFC 6749 §5.2) the way a given IdP
// words it, an outage (5xx, a proxy's HTML page), or no answer at all.
type RefreshAnswer struct {
	Status      int    // HTTP status
	ContentType string // default application/json
	Body        string
	// Hang: never answer; the request stays open until the client gives
	// up or the IdP is closed (a timeout, as seen by the client).
	Hang bool
}

// How the major IdPs refuse the refresh token of a revoked, deactivated
// or deleted user (as documented by each, or observed), and how the
// controller's client credentials are refused.
var RevokedAnswers = map[string]RefreshAnswer{
	// Dex answers 400 invalid_request, not invalid_grant.
	"dex":      {Status: 400, Body: `{"error":"invalid_request","error_description":"Refresh token is invalid or has already been claimed by another client."}`},
	"okta":     {Status: 400, Body: `{"error":"invalid_grant","error_description":"The refresh token is invalid or expired."}`},
	"entra":    {Status: 400, Body: `{"error":"invalid_grant","error_description":"AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth token is needed.","error_codes":[50173]}`},
	"auth0":    {Status: 403, Body: `{"error":"invalid_grant","error_description":"Unknown or invalid refresh token."}`},
	"keycloak": {Status: 400, Body: `{"error":"invalid_grant","error_description":"Session not active"}`},
	"google":   {Status: 400, Body: `{"error":"invalid_grant","error_description":"Token has been expired or revoked."}`},
	// The client itself refused (secret rotated, client deleted).
	"invalid-client": {Status: 401, Body: `{"error":"invalid_client","error_description":"Invalid client credentials."}`},
}

// Outages: answers that say nothing about the user.
var OutageAnswers = map[string]RefreshAnswer{
	"500":      {Status: 500, Body: `{"error":"server_error"}`},
	"502-html": {Status: 502, ContentType: "text/html", Body: "<html><body><h1>502 Bad Gateway</h1></body></html>"},
	"503":      {Status: 503, ContentType: "text/plain", Body: "Service Unavailable"},
	"504":      {Status: 504, ContentType: "text/plain", Body: "Gateway Timeout"},
	"429":      {Status: 429, Body: `{"error":"rate_limited"}`},
	// An OAuth error that says the server could not answer, with a 400.
	"400-temporarily-unavailable": {Status: 400, Body: `{"error":"temporarily_unavailable","error_description":"try later"}`},
	"timeout":                     {Hang: true},
}

func (i *IdP) answer(w http.ResponseWriter, r *http.Request, a *RefreshAnswer) {
	if a.Hang {
		select {
		case <-r.Context().Done():
		case <-i.closing:
		}
		return
	}
	ct := a.ContentType
	if ct == "" {
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(a.Status)
	io.WriteString(w, a.Body)
}

// refreshOfDeactivated reports a refresh token of a deactivated user.
func (i *IdP) refreshOfDeactivated(ctx context.Context, token string) bool {
	req, err := i.st.Storage.TokenRequestByRefreshToken(ctx, token)
	if err != nil {
		return false
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.disabled[req.GetSubject()]
}

// SetRefreshAnswer makes every refresh_token grant get a (nil: served
// normally again).
func (i *IdP) SetRefreshAnswer(a *RefreshAnswer) {
	i.mu.Lock()
	i.refresh = a
	i.mu.Unlock()
}

// SetRevokedAnswer makes refreshes of deactivated users get a (nil: the
// library's invalid_grant).
func (i *IdP) SetRevokedAnswer(a *RefreshAnswer) {
	i.mu.Lock()
	i.revoked = a
	i.mu.Unlock()
}

// Close stops the provider.
func (i *IdP) Close() error {
	i.mu.Lock()
	select {
	case <-i.closing:
	default:
		close(i.closing)
	}
	i.mu.Unlock()
	return i.srv.Close()
}

// SetDown makes every request fail with 503 (true) or be served again.
func (i *IdP) SetDown(down bool) {
	i.mu.Lock()
	i.down = down
	i.mu.Unlock()
}

// AddUser adds (or replaces) a user.
func (i *IdP) AddUser(u User) {
	if u.ID == "" {
		u.ID = "sub-" + u.Username
	}
	i.mu.Lock()
	i.users[u.ID] = &u
	delete(i.disabled, u.ID)
	i.mu.Unlock()
}

// SetDisabled deactivates (or reactivates) a user: a deactivated user
// cannot sign in and its refresh tokens are refused (invalid_grant).
func (i *IdP) SetDisabled(username string, disabled bool) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	for id, u := range i.users {
		if u.Username == username {
			i.disabled[id] = disabled
			return nil
		}
	}
	return fmt.Errorf("oidctest: no user %q", username)
}

// SetGroups replaces a user's groups.
func (i *IdP) SetGroups(username string, groups ...string) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, u := range i.users {
		if u.Username == username {
			u.Groups = slices.Clone(groups)
			return nil
		}
	}
	return fmt.Errorf("oidctest: no user %q", username)
}

func (i *IdP) user(id string) (*User, bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	u, ok := i.users[id]
	if !ok || i.disabled[id] {
		return nil, false
	}
	c := *u
	return &c, true
}

// ApproveDevice completes a device authorization as user would on the
// verification page (after signing in with password).
func (i *IdP) ApproveDevice(ctx context.Context, userCode, username, password string) error {
	if err := i.st.CheckUsernamePasswordSimple(username, password); err != nil {
		return fmt.Errorf("oidctest: approve device: %w", err)
	}
	u := i.st.userStore().GetUserByUsername(username)
	if u == nil {
		return fmt.Errorf("oidctest: approve device: no user %q", username)
	}
	return i.st.CompleteDeviceAuthorization(ctx, userCode, u.ID)
}

// DenyDevice refuses a device authorization.
func (i *IdP) DenyDevice(ctx context.Context, userCode string) error {
	return i.st.DenyDeviceAuthorization(ctx, userCode)
}

// Browser returns a func that does what a person does with the
// authorization URL: open it, sign in with username and password on the
// IdP's login page, and follow the redirects, the last of which delivers
// the code to the client's loopback listener.
func (i *IdP) Browser(username, password string) func(ctx context.Context, authURL string) error {
	return Browser(username, password)
}

// Browser is IdP.Browser for a provider this process did not start.
func Browser(username, password string) func(ctx context.Context, authURL string) error {
	return func(ctx context.Context, authURL string) error {
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("browser: open %s: %w", authURL, err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		id := resp.Request.URL.Query().Get("authRequestID")
		if resp.StatusCode != http.StatusOK || id == "" {
			return fmt.Errorf("browser: the IdP did not show its login page (%s %s): %s", resp.Status, resp.Request.URL, strings.TrimSpace(string(body)))
		}
		login := *resp.Request.URL
		login.RawQuery = ""
		form := url.Values{"id": {id}, "username": {username}, "password": {password}}
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, login.String(), strings.NewReader(form.Encode()))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err = c.Do(req)
		if err != nil {
			return fmt.Errorf("browser: sign in: %w", err)
		}
		body, _ = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if strings.HasSuffix(resp.Request.URL.Path, "/login/username") {
			return errors.New("browser: the IdP refused the user name or password")
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("browser: after sign-in %s: %s %s", resp.Request.URL.Redacted(), resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	}
}

// users is the example storage's UserStore over the IdP's users.
type users struct{ i *IdP }

func (u users) GetUserByID(id string) *storage.User {
	x, ok := u.i.user(id)
	if !ok {
		return nil
	}
	return exampleUser(x)
}

func (u users) GetUserByUsername(name string) *storage.User {
	u.i.mu.Lock()
	var id string
	for k, x := range u.i.users {
		if x.Username == name {
			id = k
		}
	}
	u.i.mu.Unlock()
	return u.GetUserByID(id)
}

func (users) ExampleClientID() string { return "service" }

func exampleUser(x *User) *storage.User {
	return &storage.User{ID: x.ID, Username: x.Username, Password: x.Password, Email: x.Email, EmailVerified: true,
		FirstName: x.Username, PreferredLanguage: language.English}
}

// stor is the example storage with our client, groups, MFA and
// deactivation.
type stor struct {
	*storage.Storage
	idp *IdP
}

func (s *stor) userStore() users { return users{s.idp} }

func (s *stor) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	if id != s.idp.opts.ClientID {
		return nil, errors.New("client not found")
	}
	return &client{s.idp}, nil
}

func (s *stor) AuthorizeClientIDSecret(ctx context.Context, id, secret string) error {
	if id != s.idp.opts.ClientID || s.idp.opts.ClientSecret == "" || secret != s.idp.opts.ClientSecret {
		return errors.New("invalid client secret")
	}
	return nil
}

func (s *stor) SetUserinfoFromRequest(ctx context.Context, ui *oidc.UserInfo, token op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, ui, token, scopes); err != nil {
		return err
	}
	return s.addGroups(ui, token.GetSubject())
}

func (s *stor) SetUserinfoFromScopes(ctx context.Context, ui *oidc.UserInfo, userID, clientID string, scopes []string) error {
	return s.addGroups(ui, userID)
}

func (s *stor) addGroups(ui *oidc.UserInfo, sub string) error {
	u, ok := s.idp.user(sub)
	if !ok {
		return errors.New("user not found or deactivated")
	}
	ui.AppendClaims(s.idp.opts.GroupsClaim, slices.Clone(u.Groups))
	return nil
}

func (s *stor) TokenRequestByRefreshToken(ctx context.Context, token string) (op.RefreshTokenRequest, error) {
	r, err := s.Storage.TokenRequestByRefreshToken(ctx, token)
	if err != nil {
		return nil, err
	}
	if _, ok := s.idp.user(r.GetSubject()); !ok {
		return nil, errors.New("user deactivated")
	}
	return r, nil
}

func (s *stor) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	r, err := s.Storage.AuthRequestByCode(ctx, code)
	if err != nil {
		return nil, err
	}
	return mfaRequest{r, s.idp}, nil
}

func (s *stor) CheckUsernamePassword(username, password, id string) error {
	if s.userStore().GetUserByUsername(username) == nil {
		return errors.New("username or password wrong")
	}
	return s.Storage.CheckUsernamePassword(username, password, id)
}

// mfaRequest reports amr ["pwd","otp"] for users with MFA.
type mfaRequest struct {
	op.AuthRequest
	idp *IdP
}

func (r mfaRequest) GetAMR() []string {
	if u, ok := r.idp.user(r.GetSubject()); ok && u.MFA {
		return []string{"pwd", "otp"}
	}
	return r.AuthRequest.GetAMR()
}

// GetDeviceAuthorizatonState (zitadel's spelling) reports amr
// ["pwd","otp"] for a device authorization a user with MFA approved, as
// mfaRequest does for the code flow.
func (s *stor) GetDeviceAuthorizatonState(ctx context.Context, clientID, deviceCode string) (*op.DeviceAuthorizationState, error) {
	st, err := s.Storage.GetDeviceAuthorizatonState(ctx, clientID, deviceCode)
	if err != nil || !st.Done {
		return st, err
	}
	c := *st
	if u, ok := s.idp.user(c.Subject); ok && u.MFA {
		c.AMR = []string{"pwd", "otp"}
	}
	return &c, nil
}

// client is the one registered client: native (loopback redirects on any
// port, RFC 8252), code + refresh + device grants.
type client struct{ idp *IdP }

func (c *client) GetID() string { return c.idp.opts.ClientID }
func (c *client) RedirectURIs() []string {
	return []string{"http://127.0.0.1/callback", "http://[::1]/callback", "http://localhost/callback"}
}
func (c *client) PostLogoutRedirectURIs() []string    { return nil }
func (c *client) ApplicationType() op.ApplicationType { return op.ApplicationTypeNative }
func (c *client) AuthMethod() oidc.AuthMethod {
	if c.idp.opts.ClientSecret != "" {
		return oidc.AuthMethodBasic
	}
	return oidc.AuthMethodNone
}
func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c *client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken, oidc.GrantTypeDeviceCode}
}
func (c *client) LoginURL(id string) string            { return "/login/username?authRequestID=" + id }
func (c *client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeBearer }
func (c *client) IDTokenLifetime() time.Duration       { return c.idp.opts.IDTokenLifetime }
func (c *client) DevMode() bool                        { return false }
func (c *client) IsScopeAllowed(string) bool           { return false }
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c *client) ClockSkew() time.Duration             { return 0 }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// The example storage finds the client of a token request by its concrete
// type: hand it the request mfaRequest wraps.

func (s *stor) CreateAccessToken(ctx context.Context, r op.TokenRequest) (string, time.Time, error) {
	return s.Storage.CreateAccessToken(ctx, unwrap(r))
}

func (s *stor) CreateAccessAndRefreshTokens(ctx context.Context, r op.TokenRequest, current string) (string, string, time.Time, error) {
	return s.Storage.CreateAccessAndRefreshTokens(ctx, unwrap(r), current)
}

func unwrap(r op.TokenRequest) op.TokenRequest {
	if m, ok := r.(mfaRequest); ok {
		return m.AuthRequest
	}
	return r
}
