// Package api is the controller's HTTPS API: the admin REST routes cordonctl
// uses (bearer admin token; each route requires one permission of the
// token's role, see adminauth.go) and the two agent routes that precede the
// control channel — gateway enrollment and user login — which carry their
// own credential in the body.
//
// Wire types live in pkg/adminapi (admin) and pkg/controlproto (agents).
// Handlers decode and validate the request, authorize it, call one method
// of the state owner (package state: the change and its audit record commit
// in one transaction, and what changed reaches the map engine) and encode
// the answer. They read the store directly; they never write it. A
// mutating request may carry an Idempotency-Key (origin.go).
package api

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/netmap"
	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/siem"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
)

// CertIssuer signs agent certificates; *ca.CA implements it.
type CertIssuer interface {
	// IssueAgentCert signs csrPEM with CommonName=id and OU=kind,
	// ignoring the CSR's own subject.
	IssueAgentCert(csrPEM string, id, kind string) (string, error)
}

var _ CertIssuer = (*ca.CA)(nil)

// LoginThrottler slows password guessing; *auth.Throttle implements it.
type LoginThrottler interface {
	// Allow counts a login attempt for user from source (an IP address) and
	// returns 0, or how long the caller must wait (the attempt is refused).
	Allow(user, source string, now time.Time) (retryAfter time.Duration)
	// Succeeded takes back the attempt of a successful login.
	Succeeded(user, source string)
}

var _ LoginThrottler = (*auth.Throttle)(nil)

// Config wires the API to the rest of the controller.
type Config struct {
	Store store.Store // required
	// State is the single writer every mutation goes through; nil: one
	// over Store whose changes go to Changed.
	State  *state.State
	CA     CertIssuer // required
	Logger *slog.Logger
	// Changed is called after every committed mutation that can change a
	// network map, when State is nil (tests); it must not block.
	Changed func()
	Now     func() time.Time // default time.Now
	// Throttle limits login attempts; nil means auth.NewThrottle defaults.
	Throttle LoginThrottler
	// Passwords hashes and verifies user passwords; nil means
	// auth.DefaultParams. Tests pass auth.TestParams.
	Passwords *auth.Hasher
	// TOTP verifies second factors with replay protection; nil means a new
	// verifier.
	TOTP *auth.TOTPVerifier
	// ControlAddr is returned to enrolled agents as the QUIC control
	// address; empty means the API's host and port.
	ControlAddr string
	// AdminSessionTTL is how long an admin sign-in token lives; zero means
	// adminapi.DefaultAdminSessionTTL.
	AdminSessionTTL time.Duration
	// LoginAlert raises auth.alert events on repeated failed sign-ins; nil
	// means auth.NewFailureAlert defaults (5 failures in 15 minutes).
	LoginAlert *auth.FailureAlert
	// OIDC signs users in through identity providers; nil: none configured.
	OIDC OIDC
	// Ledger signs and checks the verifiable audit log; nil: the audit
	// log routes answer 503.
	Ledger *ledger.Ledger
	// Sinks reports the SIEM sinks' cursors and lag (GET
	// /v1/audit/sinks); nil: none configured.
	Sinks func() []siem.Status
	// DNS is the controller's internal zones (--dns-zone), for warnings
	// about app names outside them.
	DNS netmap.DNSConfig
	// Activity is the latest app traffic the gateways reported for a
	// device (session.Manager.LastActivity), which the store learns only
	// when the session nears its idle limit; nil: the store's alone.
	Activity func(deviceID string) (time.Time, bool)
	// GatewayHealth says each gateway's state, last seen and version for
	// the gateway list; nil: not shown.
	GatewayHealth GatewayHealth
	// Sessions are the session limits in force, for the HIPAA report;
	// zero: session.DefaultLimits.
	Sessions session.Limits
	// BreakGlassFor is the time bound of a break-glass session
	// (--break-glass-duration); zero: session.DefaultBreakGlass.
	BreakGlassFor time.Duration
}

// GatewayHealth is the control channel's view of a gateway
// (control.Server.GatewayStatus).
type GatewayHealth interface {
	GatewayStatus(id string) (state, version string, lastSeen time.Time)
}

// GatewayLoader is an optional ability of a GatewayHealth: the load a
// gateway last reported (ok false: none).
type GatewayLoader interface {
	GatewayLoad(id string) (peers, flows int, ok bool)
}

// API serves the HTTP routes.
type API struct {
	signInFails signInFailures // metrics (signinfail.go)
	st          store.Store
	state       *state.State
	ca          CertIssuer
	log         *slog.Logger
	changed     func()
	now         func() time.Time
	throttle    LoginThrottler
	activity    func(deviceID string) (time.Time, bool)
	dns         netmap.DNSConfig
	pw          *auth.Hasher
	totp        *auth.TOTPVerifier
	control     string
	mux         *http.ServeMux

	adminTTL time.Duration
	alert    *auth.FailureAlert
	routeTab []Route // every registered route, for Routes
	oidc     OIDC
	ledger   *ledger.Ledger
	health   GatewayHealth // nil: no gateway states
	sinks    func() []siem.Status
	limits   session.Limits // for the HIPAA report
	bgFor    time.Duration  // a break-glass session's time bound
}

// New returns the API. It panics if Store or CA is missing (a wiring bug).
func New(cfg Config) *API {
	if cfg.Store == nil || cfg.CA == nil {
		panic("api.New: Store and CA are required")
	}
	a := &API{
		st:       cfg.Store,
		ca:       cfg.CA,
		log:      cfg.Logger,
		changed:  cfg.Changed,
		now:      cfg.Now,
		throttle: cfg.Throttle,
		pw:       cfg.Passwords,
		totp:     cfg.TOTP,
		control:  cfg.ControlAddr,
		adminTTL: cfg.AdminSessionTTL,
		alert:    cfg.LoginAlert,
		oidc:     cfg.OIDC,
		ledger:   cfg.Ledger,
		sinks:    cfg.Sinks,
		activity: cfg.Activity,
		dns:      cfg.DNS,
		health:   cfg.GatewayHealth,
		limits:   cfg.Sessions,
		bgFor:    cfg.BreakGlassFor,
	}
	if a.limits.IsZero() {
		a.limits = session.DefaultLimits()
	}
	if a.bgFor <= 0 {
		a.bgFor = session.DefaultBreakGlass
	}
	if a.adminTTL <= 0 {
		a.adminTTL = adminapi.DefaultAdminSessionTTL
	}
	if a.alert == nil {
		a.alert = auth.NewFailureAlert(auth.AlertConfig{})
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.changed == nil {
		a.changed = func() {}
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.state = cfg.State
	if a.state == nil {
		changed := a.changed
		a.state = state.New(state.Config{Store: cfg.Store, Now: a.now, Logger: a.log,
			Publish: func(store.Change) { changed() }})
	}
	if a.throttle == nil {
		a.throttle = auth.NewThrottle(auth.ThrottleConfig{})
	}
	if a.pw == nil {
		h, err := auth.NewHasher(auth.DefaultParams)
		if err != nil {
			panic(err) // constant parameters
		}
		a.pw = h
	}
	if a.totp == nil {
		a.totp = auth.NewTOTPVerifier()
	}
	a.routes()
	return a
}

func (a *API) routes() {
	m := &routeMux{ServeMux: http.NewServeMux(), tab: &a.routeTab}
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok")
	})

	// Agent routes: the credential is in the body.
	m.Handle("POST /v1/enroll/gateway", a.public(a.enrollGateway))
	m.Handle("POST /v1/login", a.public(a.login))
	m.Handle("POST /v1/logout", a.public(a.logout))
	m.Handle("GET /v1/oidc/providers", a.public(a.oidcProviders))
	m.Handle("POST /v1/login/oidc/start", a.public(a.oidcStart))
	m.Handle("POST /v1/login/oidc/device", a.public(a.oidcDevice))
	m.Handle("POST /v1/login/oidc", a.public(a.oidcLogin))
	m.Handle("POST /v1/admin/login", a.public(a.adminLogin))
	m.Handle("POST /v1/admin/login/oidc/start", a.public(a.oidcStart))
	m.Handle("POST /v1/admin/login/oidc/device", a.public(a.oidcDevice))
	m.Handle("POST /v1/admin/login/oidc", a.public(a.adminOIDCLogin))

	// Admin routes.
	m.Handle("GET /v1/whoami", a.admin(permAuthenticated, a.whoami))

	m.Handle("POST /v1/segments", a.admin(auth.PermPolicyWrite, a.createSegment))
	m.Handle("GET /v1/segments", a.admin(auth.PermRead, a.fromPolicy(a.listSegments, a.policySegments)))
	m.Handle("GET /v1/segments/{name}", a.admin(auth.PermRead, a.fromPolicy(a.getSegment, a.policySegment)))
	m.Handle("DELETE /v1/segments/{name}", a.admin(auth.PermPolicyWrite, a.deleteSegment))

	m.Handle("POST /v1/apps", a.admin(auth.PermPolicyWrite, a.createApp))
	m.Handle("GET /v1/apps", a.admin(auth.PermRead, a.fromPolicy(a.listApps, a.policyApps)))
	m.Handle("GET /v1/apps/{name}", a.admin(auth.PermRead, a.fromPolicy(a.getApp, a.policyApp)))
	m.Handle("DELETE /v1/apps/{name}", a.admin(auth.PermPolicyWrite, a.deleteApp))

	m.Handle("POST /v1/users", a.admin(auth.PermUsersWrite, a.createUser))
	m.Handle("GET /v1/users", a.admin(auth.PermRead, a.listUsers))
	m.Handle("GET /v1/users/{name}", a.admin(auth.PermRead, a.getUser))
	m.Handle("GET /v1/identities", a.admin(auth.PermRead, a.listIdentities))
	m.Handle("DELETE /v1/users/{name}", a.admin(auth.PermUsersWrite, a.deleteUser))
	m.Handle("POST /v1/users/{name}/disable", a.admin(auth.PermAccessRevoke, a.setUserDisabled(true)))
	m.Handle("POST /v1/users/{name}/enable", a.admin(auth.PermUsersWrite, a.setUserDisabled(false)))

	m.Handle("POST /v1/groups", a.admin(auth.PermPolicyWrite, a.createGroup))
	m.Handle("GET /v1/groups", a.admin(auth.PermRead, a.fromPolicy(a.listGroups, a.policyGroups)))
	m.Handle("GET /v1/groups/{name}", a.admin(auth.PermRead, a.fromPolicy(a.getGroup, a.policyGroup)))
	m.Handle("DELETE /v1/groups/{name}", a.admin(auth.PermPolicyWrite, a.deleteGroup))
	m.Handle("POST /v1/groups/{name}/members", a.admin(auth.PermPolicyWrite, a.addMember))
	m.Handle("DELETE /v1/groups/{name}/members/{user}", a.admin(auth.PermPolicyWrite, a.removeMember))

	m.Handle("POST /v1/rules", a.admin(auth.PermPolicyWrite, a.createRule))
	m.Handle("GET /v1/rules", a.admin(auth.PermRead, a.fromPolicy(a.listRules, a.policyRules)))
	m.Handle("GET /v1/rules/{name}", a.admin(auth.PermRead, a.fromPolicy(a.getRule, a.policyRule)))
	m.Handle("DELETE /v1/rules/{name}", a.admin(auth.PermPolicyWrite, a.deleteRule))

	m.Handle("POST /v1/gateway-tokens", a.admin(auth.PermGatewaysWrite, a.createGatewayToken))
	m.Handle("GET /v1/gateway-tokens", a.admin(auth.PermRead, a.listGatewayTokens))
	m.Handle("GET /v1/gateways", a.admin(auth.PermRead, a.listGateways))
	m.Handle("DELETE /v1/gateways/{id}", a.admin(auth.PermGatewaysWrite, a.deleteGateway))
	m.Handle("POST /v1/gateways/{id}/drain", a.admin(auth.PermGatewaysWrite, a.drainGateway))
	m.Handle("POST /v1/gateways/{id}/undrain", a.admin(auth.PermGatewaysWrite, a.undrainGateway))
	m.Handle("GET /v1/devices", a.admin(auth.PermRead, a.listDevices))
	m.Handle("DELETE /v1/devices/{id}", a.admin(auth.PermUsersWrite, a.deleteDevice))
	m.Handle("POST /v1/devices/{id}/revoke", a.admin(auth.PermAccessRevoke, a.revokeDevice))
	m.Handle("GET /v1/devices/{id}", a.admin(auth.PermRead, a.getDevice))
	// Quarantine takes access away (access.revoke: helpdesk too); release
	// gives it back, like re-enabling a user (users.write).
	m.Handle("POST /v1/devices/{id}/quarantine", a.admin(auth.PermAccessRevoke, a.quarantineDevice))
	m.Handle("POST /v1/devices/{id}/release", a.admin(auth.PermUsersWrite, a.releaseDevice))
	m.Handle("GET /v1/sessions", a.admin(auth.PermRead, a.listSessions))
	m.Handle("POST /v1/sessions/end", a.admin(auth.PermAccessRevoke, a.endSessions))

	m.Handle("GET /v1/audit", a.admin(auth.PermAuditRead, a.listAudit))
	m.Handle("GET /v1/audit/log", a.admin(auth.PermAuditRead, a.auditLogInfo))
	m.Handle("GET /v1/audit/verify", a.admin(auth.PermAuditRead, a.auditVerify))
	m.Handle("GET /v1/audit/export", a.admin(auth.PermAuditRead, a.auditExport))
	m.Handle("GET /v1/audit/sinks", a.admin(auth.PermAuditRead, a.auditSinks))
	m.Handle("GET /v1/audit/search", a.admin(auth.PermAuditRead, a.searchAudit))
	m.Handle("GET /v1/audit/archives", a.admin(auth.PermAuditRead, a.listArchives))
	m.Handle("POST /v1/audit/archive", a.admin(auth.PermAuditArchive, a.requestArchive))
	m.Handle("POST /v1/audit/archive/{id}/approve", a.admin(auth.PermAuditArchive, a.approveArchive))

	m.Handle("GET /v1/reports/hipaa", a.admin(auth.PermAuditRead, a.hipaaReport))

	m.Handle("POST /v1/policy/plan", a.admin(auth.PermRead, a.planPolicy))
	m.Handle("POST /v1/policy/apply", a.admin(auth.PermPolicyWrite, a.applyPolicy))
	m.Handle("POST /v1/policy/rollback", a.admin(auth.PermPolicyWrite, a.rollbackPolicy))
	m.Handle("GET /v1/policy/versions", a.admin(auth.PermRead, a.listPolicyVersions))
	m.Handle("GET /v1/policy/versions/{n}", a.admin(auth.PermRead, a.getPolicyVersion))
	m.Handle("GET /v1/policy/export", a.admin(auth.PermRead, a.exportPolicy))

	// Access reviews (review.go): a reviewer reads and decides; starting
	// and closing (which applies the revocations) is for those who manage
	// access.
	m.Handle("POST /v1/reviews", a.admin(auth.PermReviewsManage, a.startReview))
	m.Handle("GET /v1/reviews", a.admin(auth.PermReviewsRead, a.listReviews))
	m.Handle("GET /v1/reviews/{id}", a.admin(auth.PermReviewsRead, a.getReview))
	m.Handle("POST /v1/reviews/{id}/lines/{n}/decide", a.admin(auth.PermReviewsDecide, a.decideReview))
	m.Handle("POST /v1/reviews/{id}/close", a.admin(auth.PermReviewsManage, a.closeReview))

	// Admin accounts, admin tokens, recovery codes (adminauth.go).
	m.Handle("POST /v1/admin/logout", a.admin(permAuthenticated, a.adminLogout))
	m.Handle("POST /v1/admins", a.admin(auth.PermAdminsWrite, a.createAdmin))
	m.Handle("GET /v1/admins", a.admin(auth.PermAdminsRead, a.listAdmins))
	m.Handle("GET /v1/admins/{name}", a.admin(auth.PermAdminsRead, a.getAdmin))
	m.Handle("POST /v1/admins/{name}/disable", a.admin(auth.PermAdminsWrite, a.setAdminDisabled(true)))
	m.Handle("POST /v1/admins/{name}/enable", a.admin(auth.PermAdminsWrite, a.setAdminDisabled(false)))
	m.Handle("DELETE /v1/admins/{name}", a.admin(auth.PermAdminsWrite, a.deleteAdmin))
	m.Handle("POST /v1/admin-tokens", a.admin(auth.PermAdminsWrite, a.createAdminToken))
	m.Handle("GET /v1/admin-tokens", a.admin(auth.PermAdminsRead, a.listAdminTokens))
	m.Handle("DELETE /v1/admin-tokens/{id}", a.admin(auth.PermAdminsWrite, a.revokeAdminToken))
	m.Handle("POST /v1/users/{name}/recovery-codes", a.admin(auth.PermUsersWrite, a.regenerateRecoveryCodes))

	// Break-glass emergency access (breakglass.go).
	m.Handle("POST /v1/breakglass", a.admin(auth.PermUsersWrite, a.createBreakGlass))
	m.Handle("GET /v1/breakglass/uses", a.admin(auth.PermAuditRead, a.listBreakGlassUses))
	m.Handle("GET /v1/breakglass/uses/{id}", a.admin(auth.PermAuditRead, a.getBreakGlassUse))
	m.Handle("POST /v1/breakglass/uses/{id}/review", a.admin(auth.PermBreakGlassReview, a.reviewBreakGlass))

	a.mux = m.ServeMux
}

// Handler returns the HTTP handler of every route. Requests no route
// matches get a JSON error body too (404, or 405 with Allow).
func (a *API) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := a.mux.Handler(r)
		if pattern != "" {
			a.mux.ServeHTTP(w, r)
			return
		}
		sw := &statusOnly{ResponseWriter: w, status: http.StatusNotFound}
		h.ServeHTTP(sw, r) // the mux's own 404/405; keeps headers such as Allow
		code := adminapi.CodeNotFound
		msg := fmt.Sprintf("no API route %s %s", r.Method, r.URL.Path)
		if sw.status == http.StatusMethodNotAllowed {
			code = adminapi.CodeInvalid
			msg = fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, w.Header().Get("Allow"))
		}
		writeJSON(w, sw.status, adminapi.ErrorBody{Error: msg, Code: code})
	})
}

// statusOnly records the status a handler chose and discards its body.
type statusOnly struct {
	http.ResponseWriter
	status int
}

func (s *statusOnly) WriteHeader(code int)        { s.status = code }
func (s *statusOnly) Write(b []byte) (int, error) { return len(b), nil }

// Log field names.
const (
	logMethod = "method"
	logPath   = "path"
	logSource = "source"
	logErr    = "err"
	logActor  = "actor"
	logEvent  = "event"
	logKind   = "kind"
	logSubj   = "subject"
	logCount  = "failures"
	logWindow = "window"
)

// apiError is an error with its HTTP status and code; its message is shown
// to the caller as is.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, code, format string, args ...any) error {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func invalidf(format string, args ...any) error {
	return errorf(http.StatusBadRequest, adminapi.CodeInvalid, format, args...)
}

func notFoundf(format string, args ...any) error {
	return errorf(http.StatusNotFound, adminapi.CodeNotFound, format, args...)
}

func conflictf(format string, args ...any) error {
	return errorf(http.StatusConflict, adminapi.CodeConflict, format, args...)
}

func inUsef(format string, args ...any) error {
	return errorf(http.StatusConflict, adminapi.CodeInUse, format, args...)
}

var errUnauthorized = errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized,
	"missing or invalid admin token: send Authorization: Bearer <token> (cordonctl: --token, --token-file or CORDON_TOKEN)")

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

type adminHandlerFunc func(w http.ResponseWriter, r *http.Request, actor string) error

// public serves a route without admin authentication.
func (a *API) public(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			a.writeError(w, r, err)
		}
	})
}

// admin serves a route that needs an admin token whose scope allows perm.
// actor is "admin:<token name>".
func (a *API) admin(perm auth.Permission, h adminHandlerFunc) http.Handler {
	return &adminRoute{perm: perm, h: func(w http.ResponseWriter, r *http.Request) {
		p, err := a.authenticateAdmin(r)
		if err == nil {
			err = a.authorize(r, p, perm)
		}
		if err == nil {
			_, err = requestID(r)
		}
		if err == nil {
			err = h(w, r.WithContext(withPrincipal(r.Context(), p)), p.actor())
		}
		if err != nil {
			a.writeError(w, r, err)
		}
	}}
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// source is the client address, as seen on the connection. Forwarding
// headers are not trusted: the controller terminates TLS itself.
func source(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// writeError answers with an ErrorBody. Internal errors are logged and
// answered without detail.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	applied, isApplied := appliedError(err)
	var refused *state.Refused
	switch {
	case errors.As(err, &ae):
	case isApplied:
		ae = applied
	case errors.As(err, &refused):
		ae = refusedError(refused)
	case errors.Is(err, store.ErrNotFound):
		ae = &apiError{http.StatusNotFound, adminapi.CodeNotFound, "not found"}
	case errors.Is(err, store.ErrAlreadyExists):
		ae = &apiError{http.StatusConflict, adminapi.CodeConflict, "already exists"}
	case errors.Is(err, store.ErrInUse):
		ae = &apiError{http.StatusConflict, adminapi.CodeInUse, "still in use"}
	case errors.Is(err, context.Canceled):
		return // the client went away
	default:
		a.log.ErrorContext(r.Context(), "api request failed", logMethod, r.Method, logPath, r.URL.Path, logErr, err)
		ae = &apiError{http.StatusInternalServerError, adminapi.CodeInternal, "internal error; the controller log has details"}
	}
	writeJSON(w, ae.status, adminapi.ErrorBody{Error: ae.msg, Code: ae.code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"error":"internal error","code":"internal"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// decode reads one JSON value of at most MaxBodySize bytes into v,
// rejecting unknown fields and trailing data.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return invalidf("Content-Type must be application/json")
	}
	return decodeBody(http.MaxBytesReader(w, r.Body, adminapi.MaxBodySize), v)
}

func decodeBody(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return bodyError(err)
		}
		return invalidf("request body: more than one JSON value")
	}
	return nil
}

func bodyError(err error) error {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
		mbe *http.MaxBytesError
	)
	switch {
	case errors.Is(err, io.EOF):
		return invalidf("request body is empty: send a JSON object")
	case errors.As(err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, adminapi.CodeInvalid, "request body larger than %d bytes", mbe.Limit)
	case errors.As(err, &syn):
		return invalidf("request body is not valid JSON (at byte %d)", syn.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalidf("request body is truncated JSON")
	case errors.As(err, &typ):
		if typ.Field == "" {
			return invalidf("request body must be a JSON object")
		}
		return invalidf("field %q: want a JSON %s, not %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return invalidf("unknown field %s in request body", f)
	}
	// Errors from a field's UnmarshalText (e.g. a bad WireGuard key). Keep
	// the message short; it never contains secrets (those fields are
	// plain strings).
	return invalidf("request body: %s", strings.TrimPrefix(msg, "json: "))
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "string"
	case "slice", "array":
		return "array"
	case "struct", "map":
		return "object"
	case "bool":
		return "boolean"
	}
	return "number"
}

func created(w http.ResponseWriter, v any) error {
	writeJSON(w, http.StatusCreated, v)
	return nil
}

func ok(w http.ResponseWriter, v any) error {
	writeJSON(w, http.StatusOK, v)
	return nil
}

func noContent(w http.ResponseWriter) error {
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// record appends audit events that record no change (a refused sign-in, an
// alert). A failure to store them is logged loudly: nothing was changed,
// and the caller's answer does not depend on it.
func (a *API) record(ctx context.Context, evs ...store.AuditEvent) {
	a.signInFails.count(evs)
	if err := a.state.Record(context.WithoutCancel(ctx), state.Origin{}, evs...); err != nil {
		for _, ev := range evs {
			a.log.ErrorContext(ctx, "audit event lost", logEvent, ev.Type, logActor, ev.Actor, logErr, err)
		}
	}
}

// stamp is the current time as stored: UTC, microsecond precision, so a
// create response shows the same time a later read does.
func (a *API) stamp() time.Time { return a.now().UTC().Truncate(time.Microsecond) }

// checkCSR parses and verifies a PEM CSR before anything is consumed, so a
// bad CSR cannot burn an enrollment token or leave a device behind.
func checkCSR(csrPEM string) error {
	if strings.TrimSpace(csrPEM) == "" {
		return invalidf("field \"csr\": required: a PEM CERTIFICATE REQUEST for the agent's TLS key")
	}
	b, _ := pem.Decode([]byte(csrPEM))
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return invalidf("field \"csr\": not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return invalidf("field \"csr\": cannot parse: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return invalidf("field \"csr\": bad signature")
	}
	return nil
}

func retryAfterSeconds(d time.Duration) string {
	s := int((d + time.Second - 1) / time.Second)
	return strconv.Itoa(max(s, 1))
}
