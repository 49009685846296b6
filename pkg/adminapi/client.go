package adminapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// MaxResponseSize bounds a response body the client reads.
const MaxResponseSize = 64 << 20

// Error is an error response from the controller.
type Error struct {
	Status     int           // HTTP status
	Code       string        // one of the Code constants ("" if the body had none)
	Message    string        // the server's message: what to fix
	RetryAfter time.Duration // from Retry-After on 429, else 0
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("controller answered %d %s", e.Status, http.StatusText(e.Status))
	}
	return e.Message
}

// IsCode reports whether err is an *Error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// UnreachableError means the request never got an HTTP answer: connection
// refused, DNS failure, timeout. A TLS certificate that the given CA does
// not vouch for is not this error (retrying will not help).
type UnreachableError struct {
	URL string
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("controller at %s unreachable: %v", e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Client calls the controller API over HTTPS, trusting only the controller
// CA. Safe for concurrent use.
//
// Every mutating call (not GET) carries a new random Idempotency-Key. If it
// gets no answer (the controller restarted, the connection broke), Do sends
// it again with the same key for up to RetryFor: the controller applies a
// key once, so the retry either applies the change (the first attempt never
// committed) or answers that it already applied ([AppliedError]).
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client

	// RetryFor is how long a mutating call that got no answer is retried;
	// zero: not retried.
	RetryFor time.Duration
	// OnRetry, if set, is told about each retry (for progress output).
	OnRetry func(attempt int, err error)
}

// AppliedError is the answer to a retried call whose first attempt had
// committed before its answer was lost: the change is in place, once.
type AppliedError struct {
	RequestID string
	Message   string // the controller's, naming the audit records
}

func (e *AppliedError) Error() string { return e.Message }

// New returns a client for the controller at baseURL (https://host:port).
// token is the admin token (empty for agents, which only call EnrollGateway
// and Login). caPEM is the controller CA certificate; no other root is
// trusted.
func New(baseURL string, token string, caPEM []byte) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("controller URL %q: %w", baseURL, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("controller URL %q: want https://host:port", baseURL)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("controller URL %q: want only https://host:port[/path]", baseURL)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("CA certificate: no PEM certificate found (give the controller's ca.pem)")
	}
	if strings.ContainsAny(token, "\r\n") {
		return nil, errors.New("admin token contains a line break")
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13},
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     90 * time.Second,
		Proxy:               http.ProxyFromEnvironment,
	}
	return &Client{
		base:  u,
		token: token,
		hc: &http.Client{
			Transport: tr,
			Timeout:   60 * time.Second,
			// Never follow redirects: the API does not send them, and one
			// could carry the token elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// UseClientCertificate makes the client present a TLS client certificate
// (a device's, for the routes a device calls about itself). Call it before
// the first request.
func (c *Client) UseClientCertificate(get func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) {
	tr := c.hc.Transport.(*http.Transport)
	tr.TLSClientConfig = tr.TLSClientConfig.Clone()
	tr.TLSClientConfig.GetClientCertificate = get
}

// Logout ends the session of the device whose certificate the client
// presents (UseClientCertificate) and returns the sessions it ended.
func (c *Client) Logout(ctx context.Context) ([]Session, error) {
	var out []Session
	return out, c.Do(ctx, http.MethodPost, "/v1/logout", nil, &out)
}

// Do sends in (JSON, if not nil) to method path (e.g. "/v1/segments") and
// decodes the response into out (if not nil; a *json.RawMessage gets the
// body verbatim). A non-2xx answer returns *Error; no answer returns
// *UnreachableError.
//
// A mutating call that got no answer is retried as the Client says; a retry
// answered "already applied" returns *AppliedError.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = b
	}
	if method == http.MethodGet || method == http.MethodHead {
		return c.do(ctx, method, path, body, in != nil, "", out)
	}
	id, _ := ctx.Value(requestIDKey{}).(string)
	if id == "" {
		id = newRequestID()
	}
	deadline := time.Now().Add(c.RetryFor)
	wait := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := c.do(ctx, method, path, body, in != nil, id, out)
		var ue *UnreachableError
		if IsCode(err, CodeAlreadyApplied) && (attempt > 1 || ctx.Value(requestIDKey{}) != nil) {
			return &AppliedError{RequestID: id, Message: err.Error()}
		}
		if !errors.As(err, &ue) || time.Now().Add(wait).After(deadline) {
			return err
		}
		if attempt == 1 && neverSent(ue.Err) {
			return err // nothing reached the controller: nothing to learn
		}
		if c.OnRetry != nil {
			c.OnRetry(attempt, err)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

type requestIDKey struct{}

// WithRequestID makes the mutating call made with ctx use id as its
// Idempotency-Key instead of a new random one: a caller that lost the
// answer (its own process restarted) can send the same call again and
// learn whether it applied.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// neverSent reports an error from before a connection existed (refused,
// no route, DNS): the request cannot have reached the controller.
func neverSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// newRequestID returns a random Idempotency-Key.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// do sends one request.
func (c *Client) do(ctx context.Context, method, path string, in []byte, hasBody bool, requestID string, out any) error {
	var body io.Reader
	if hasBody {
		body = bytes.NewReader(in)
	}
	req, err := c.newRequest(ctx, method, path, body, requestID)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.sendErr(ctx, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseSize+1))
	if err != nil {
		return &UnreachableError{URL: c.base.String(), Err: fmt.Errorf("read response: %w", err)}
	}
	if len(b) > MaxResponseSize {
		return fmt.Errorf("%s %s: response larger than %d bytes", method, path, MaxResponseSize)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return responseError(resp, b)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = b
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode %s %s response: %w", method, path, err)
	}
	return nil
}

// newRequest makes a request to the API with the client's headers.
func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader, requestID string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return nil, err
	}
	if requestID != "" {
		req.Header.Set(IdempotencyHeader, requestID)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// sendErr is the error of a request that got no answer.
func (c *Client) sendErr(ctx context.Context, err error) error {
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) {
		return fmt.Errorf("controller certificate not trusted by the given CA certificate (check --ca-cert): %w", cv.Err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return &UnreachableError{URL: c.base.String(), Err: unwrapURLError(err)}
}

// responseError is the *Error of a non-2xx answer with body b.
func responseError(resp *http.Response, b []byte) error {
	e := &Error{Status: resp.StatusCode}
	var eb ErrorBody
	if json.Unmarshal(b, &eb) == nil {
		e.Code, e.Message = eb.Code, eb.Error
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func pathf(format string, args ...string) string {
	esc := make([]any, len(args))
	for i, a := range args {
		esc[i] = url.PathEscape(a)
	}
	return fmt.Sprintf(format, esc...)
}

// Agent endpoints.

// EnrollGateway redeems a gateway enrollment token.
func (c *Client) EnrollGateway(ctx context.Context, req *controlproto.EnrollGatewayRequest) (*controlproto.EnrollResponse, error) {
	var out controlproto.EnrollResponse
	return &out, c.Do(ctx, http.MethodPost, "/v1/enroll/gateway", req, &out)
}

// Login logs a local user in (password + TOTP) and enrolls the device.
func (c *Client) Login(ctx context.Context, req *controlproto.LoginRequest) (*controlproto.EnrollResponse, error) {
	var out controlproto.EnrollResponse
	return &out, c.Do(ctx, http.MethodPost, "/v1/login", req, &out)
}

// Admin endpoints.

// WhoAmI checks the admin token.
func (c *Client) WhoAmI(ctx context.Context) (*WhoAmI, error) {
	var out WhoAmI
	return &out, c.Do(ctx, http.MethodGet, "/v1/whoami", nil, &out)
}

// CreateSegment creates a segment.
func (c *Client) CreateSegment(ctx context.Context, req *CreateSegmentRequest) (*Segment, error) {
	var out Segment
	return &out, c.Do(ctx, http.MethodPost, "/v1/segments", req, &out)
}

// ListSegments lists segments by name.
func (c *Client) ListSegments(ctx context.Context) ([]Segment, error) {
	var out []Segment
	return out, c.Do(ctx, http.MethodGet, "/v1/segments", nil, &out)
}

// GetSegment returns one segment.
func (c *Client) GetSegment(ctx context.Context, name string) (*Segment, error) {
	var out Segment
	return &out, c.Do(ctx, http.MethodGet, pathf("/v1/segments/%s", name), nil, &out)
}

// DeleteSegment deletes a segment no app or gateway uses.
func (c *Client) DeleteSegment(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, pathf("/v1/segments/%s", name), nil, nil)
}

// CreateApp creates an app.
func (c *Client) CreateApp(ctx context.Context, req *CreateAppRequest) (*App, error) {
	var out App
	return &out, c.Do(ctx, http.MethodPost, "/v1/apps", req, &out)
}

// ListApps lists apps by name.
func (c *Client) ListApps(ctx context.Context) ([]App, error) {
	var out []App
	return out, c.Do(ctx, http.MethodGet, "/v1/apps", nil, &out)
}

// GetApp returns one app.
func (c *Client) GetApp(ctx context.Context, name string) (*App, error) {
	var out App
	return &out, c.Do(ctx, http.MethodGet, pathf("/v1/apps/%s", name), nil, &out)
}

// DeleteApp deletes an app no rule uses.
func (c *Client) DeleteApp(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, pathf("/v1/apps/%s", name), nil, nil)
}

// CreateUser creates a local user; the response holds the TOTP secret,
// shown this once.
func (c *Client) CreateUser(ctx context.Context, req *CreateUserRequest) (*CreateUserResponse, error) {
	var out CreateUserResponse
	return &out, c.Do(ctx, http.MethodPost, "/v1/users", req, &out)
}

// ListUsers lists users by name.
func (c *Client) ListUsers(ctx context.Context) ([]User, error) {
	var out []User
	return out, c.Do(ctx, http.MethodGet, "/v1/users", nil, &out)
}

// GetUser returns one user.
func (c *Client) GetUser(ctx context.Context, name string) (*User, error) {
	var out User
	return &out, c.Do(ctx, http.MethodGet, pathf("/v1/users/%s", name), nil, &out)
}

// ListIdentities lists every user's links to identity providers, with the
// claims each last asserted.
func (c *Client) ListIdentities(ctx context.Context) ([]UserIdentity, error) {
	var out []UserIdentity
	return out, c.Do(ctx, http.MethodGet, "/v1/identities", nil, &out)
}

// DeleteUser deletes a user with their memberships and devices.
func (c *Client) DeleteUser(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, pathf("/v1/users/%s", name), nil, nil)
}

// SetUserDisabled disables (true) or re-enables (false) a user.
func (c *Client) SetUserDisabled(ctx context.Context, name string, disabled bool) (*User, error) {
	verb := "enable"
	if disabled {
		verb = "disable"
	}
	var u User
	if err := c.Do(ctx, http.MethodPost, pathf("/v1/users/%s/"+verb, name), nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// CreateGroup creates an empty group.
func (c *Client) CreateGroup(ctx context.Context, req *CreateGroupRequest) (*Group, error) {
	var out Group
	return &out, c.Do(ctx, http.MethodPost, "/v1/groups", req, &out)
}

// ListGroups lists groups by name.
func (c *Client) ListGroups(ctx context.Context) ([]Group, error) {
	var out []Group
	return out, c.Do(ctx, http.MethodGet, "/v1/groups", nil, &out)
}

// GetGroup returns one group.
func (c *Client) GetGroup(ctx context.Context, name string) (*Group, error) {
	var out Group
	return &out, c.Do(ctx, http.MethodGet, pathf("/v1/groups/%s", name), nil, &out)
}

// DeleteGroup deletes a group no rule uses.
func (c *Client) DeleteGroup(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, pathf("/v1/groups/%s", name), nil, nil)
}

// AddMember adds user to group and returns the group.
func (c *Client) AddMember(ctx context.Context, group, user string) (*Group, error) {
	var out Group
	return &out, c.Do(ctx, http.MethodPost, pathf("/v1/groups/%s/members", group), &AddMemberRequest{User: user}, &out)
}

// RemoveMember removes user from group.
func (c *Client) RemoveMember(ctx context.Context, group, user string) error {
	return c.Do(ctx, http.MethodDelete, pathf("/v1/groups/%s/members/%s", group, user), nil, nil)
}

// CreateRule creates a rule.
func (c *Client) CreateRule(ctx context.Context, req *CreateRuleRequest) (*Rule, error) {
	var out Rule
	return &out, c.Do(ctx, http.MethodPost, "/v1/rules", req, &out)
}

// ListRules lists rules by name.
func (c *Client) ListRules(ctx context.Context) ([]Rule, error) {
	var out []Rule
	return out, c.Do(ctx, http.MethodGet, "/v1/rules", nil, &out)
}

// GetRule returns one rule.
func (c *Client) GetRule(ctx context.Context, name string) (*Rule, error) {
	var out Rule
	return &out, c.Do(ctx, http.MethodGet, pathf("/v1/rules/%s", name), nil, &out)
}

// DeleteRule deletes a rule.
func (c *Client) DeleteRule(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, pathf("/v1/rules/%s", name), nil, nil)
}

// CreateGatewayToken issues a single-use gateway enrollment token.
func (c *Client) CreateGatewayToken(ctx context.Context, req *CreateGatewayTokenRequest) (*CreateGatewayTokenResponse, error) {
	var out CreateGatewayTokenResponse
	return &out, c.Do(ctx, http.MethodPost, "/v1/gateway-tokens", req, &out)
}

// ListGatewayTokens lists enrollment tokens (without secrets).
func (c *Client) ListGatewayTokens(ctx context.Context) ([]GatewayToken, error) {
	var out []GatewayToken
	return out, c.Do(ctx, http.MethodGet, "/v1/gateway-tokens", nil, &out)
}

// ListGateways lists enrolled gateways.
func (c *Client) ListGateways(ctx context.Context) ([]Gateway, error) {
	var out []Gateway
	return out, c.Do(ctx, http.MethodGet, "/v1/gateways", nil, &out)
}

// DeleteGateway removes an enrolled gateway.
func (c *Client) DeleteGateway(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, pathf("/v1/gateways/%s", id), nil, nil)
}

// ListDevices lists enrolled devices.
func (c *Client) ListDevices(ctx context.Context) ([]Device, error) {
	var out []Device
	return out, c.Do(ctx, http.MethodGet, "/v1/devices", nil, &out)
}

// DeleteDevice removes an enrolled device.
func (c *Client) DeleteDevice(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, pathf("/v1/devices/%s", id), nil, nil)
}

// RevokeDevice revokes a device: it loses its session and every gateway
// drops it; it stays listed and can never sign in again.
func (c *Client) RevokeDevice(ctx context.Context, id string) (*Device, error) {
	var d Device
	if err := c.Do(ctx, http.MethodPost, pathf("/v1/devices/%s/revoke", id), nil, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// GetDevice returns one device.
func (c *Client) GetDevice(ctx context.Context, id string) (*Device, error) {
	var d Device
	if err := c.Do(ctx, http.MethodGet, pathf("/v1/devices/%s", id), nil, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// QuarantineDevice quarantines a device: every gateway drops it and it
// reaches no app until released, but it keeps its control channel, so its
// user sees reason, and its posture keeps reporting.
func (c *Client) QuarantineDevice(ctx context.Context, id, reason string) (*Device, error) {
	var d Device
	if err := c.Do(ctx, http.MethodPost, pathf("/v1/devices/%s/quarantine", id), QuarantineRequest{Reason: reason}, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// CreateBreakGlass creates an emergency account; the response carries its
// one-time codes, this once.
func (c *Client) CreateBreakGlass(ctx context.Context, req *CreateBreakGlassRequest) (*CreateBreakGlassResponse, error) {
	var out CreateBreakGlassResponse
	return &out, c.Do(ctx, http.MethodPost, "/v1/breakglass", req, &out)
}

// ListBreakGlassUses lists break-glass uses, newest first.
func (c *Client) ListBreakGlassUses(ctx context.Context) ([]BreakGlassUse, error) {
	var out []BreakGlassUse
	return out, c.Do(ctx, http.MethodGet, "/v1/breakglass/uses", nil, &out)
}

// GetBreakGlassUse returns one break-glass use with its reviews.
func (c *Client) GetBreakGlassUse(ctx context.Context, id string) (*BreakGlassUse, error) {
	var out BreakGlassUse
	return &out, c.Do(ctx, http.MethodGet, pathf("/v1/breakglass/uses/%s", id), nil, &out)
}

// ReviewBreakGlass signs off a break-glass use as the calling admin.
func (c *Client) ReviewBreakGlass(ctx context.Context, id, comment string) (*BreakGlassUse, error) {
	var out BreakGlassUse
	return &out, c.Do(ctx, http.MethodPost, pathf("/v1/breakglass/uses/%s/review", id), ReviewBreakGlassRequest{Comment: comment}, &out)
}

// ReleaseDevice ends a device's quarantine.
func (c *Client) ReleaseDevice(ctx context.Context, id, comment string) (*Device, error) {
	var d Device
	if err := c.Do(ctx, http.MethodPost, pathf("/v1/devices/%s/release", id), ReleaseRequest{Comment: comment}, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// SessionQuery selects sessions to list; zero fields match all.
type SessionQuery struct {
	User, DeviceID string
	All            bool // include ended sessions
}

// ListSessions returns sessions, newest first (active ones unless q.All).
func (c *Client) ListSessions(ctx context.Context, q SessionQuery) ([]Session, error) {
	var out []Session
	return out, c.Do(ctx, http.MethodGet, SessionsPath(q), nil, &out)
}

// SessionsPath returns the request path for q.
func SessionsPath(q SessionQuery) string {
	v := url.Values{}
	if q.User != "" {
		v.Set("user", q.User)
	}
	if q.DeviceID != "" {
		v.Set("device", q.DeviceID)
	}
	if q.All {
		v.Set("all", "true")
	}
	p := "/v1/sessions"
	if len(v) > 0 {
		p += "?" + v.Encode()
	}
	return p
}

// EndSessions ends the active sessions req selects and returns them.
func (c *Client) EndSessions(ctx context.Context, req EndSessionsRequest) ([]Session, error) {
	var out []Session
	return out, c.Do(ctx, http.MethodPost, "/v1/sessions/end", req, &out)
}

// ListAudit returns audit events, newest first.
func (c *Client) ListAudit(ctx context.Context, q AuditQuery) ([]AuditEvent, error) {
	var out []AuditEvent
	return out, c.Do(ctx, http.MethodGet, AuditPath(q), nil, &out)
}

// AuditPath returns the request path for q.
func AuditPath(q AuditQuery) string {
	v := url.Values{}
	if q.Type != "" {
		v.Set("type", q.Type)
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.After != 0 {
		v.Set("after", strconv.FormatInt(q.After, 10))
	}
	if q.Request != "" {
		v.Set("request", q.Request)
	}
	if len(v) == 0 {
		return "/v1/audit"
	}
	return "/v1/audit?" + v.Encode()
}

// PlanPolicy validates a policy file on the controller and says what
// applying it would change. An invalid policy is not an error: see Valid.
func (c *Client) PlanPolicy(ctx context.Context, req *PlanPolicyRequest) (*PolicyPlan, error) {
	var out PolicyPlan
	return &out, c.Do(ctx, http.MethodPost, "/v1/policy/plan", req, &out)
}

// ApplyPolicy validates and applies a policy file.
func (c *Client) ApplyPolicy(ctx context.Context, req *ApplyPolicyRequest) (*AppliedPolicy, error) {
	var out AppliedPolicy
	return &out, c.Do(ctx, http.MethodPost, "/v1/policy/apply", req, &out)
}

// RollbackPolicy re-applies an old version as a new one.
func (c *Client) RollbackPolicy(ctx context.Context, req *RollbackPolicyRequest) (*AppliedPolicy, error) {
	var out AppliedPolicy
	return &out, c.Do(ctx, http.MethodPost, "/v1/policy/rollback", req, &out)
}

// ListPolicyVersions lists every applied version, oldest first.
func (c *Client) ListPolicyVersions(ctx context.Context) ([]PolicyVersion, error) {
	var out []PolicyVersion
	return out, c.Do(ctx, http.MethodGet, "/v1/policy/versions", nil, &out)
}

// ExportPolicy returns the policy file that decides access now: the
// active version, or the directory rendered as a policy file (see Origin).
func (c *Client) ExportPolicy(ctx context.Context) (*PolicyExport, error) {
	var out PolicyExport
	return &out, c.Do(ctx, http.MethodGet, "/v1/policy/export", nil, &out)
}

// GetPolicyVersion returns one version with its text.
func (c *Client) GetPolicyVersion(ctx context.Context, version int64) (*PolicyVersion, error) {
	var out PolicyVersion
	return &out, c.Do(ctx, http.MethodGet, fmt.Sprintf("/v1/policy/versions/%d", version), nil, &out)
}

// AdminLogin signs an admin account in (password + TOTP) and returns a
// short-lived token. The client needs no token for this call.
func (c *Client) AdminLogin(ctx context.Context, req *AdminLoginRequest) (*AdminLoginResponse, error) {
	var out AdminLoginResponse
	return &out, c.Do(ctx, http.MethodPost, "/v1/admin/login", req, &out)
}

// AdminLogout revokes the token the client uses.
func (c *Client) AdminLogout(ctx context.Context) error {
	return c.Do(ctx, http.MethodPost, "/v1/admin/logout", nil, nil)
}

// CreateAdmin creates an admin account.
func (c *Client) CreateAdmin(ctx context.Context, req *CreateAdminRequest) (*CreateAdminResponse, error) {
	var out CreateAdminResponse
	return &out, c.Do(ctx, http.MethodPost, "/v1/admins", req, &out)
}

// ListAdmins lists admin accounts.
func (c *Client) ListAdmins(ctx context.Context) ([]Admin, error) {
	var out []Admin
	return out, c.Do(ctx, http.MethodGet, "/v1/admins", nil, &out)
}

// SetAdminDisabled disables (every token of the account stops working) or
// re-enables an admin account.
func (c *Client) SetAdminDisabled(ctx context.Context, name string, disabled bool) (*Admin, error) {
	verb := "enable"
	if disabled {
		verb = "disable"
	}
	var out Admin
	return &out, c.Do(ctx, http.MethodPost, pathf("/v1/admins/%s/", name)+verb, nil, &out)
}

// DeleteAdmin deletes an admin account and its tokens.
func (c *Client) DeleteAdmin(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, pathf("/v1/admins/%s", name), nil, nil)
}

// CreateAdminToken issues a standalone (automation) admin token.
func (c *Client) CreateAdminToken(ctx context.Context, req *CreateAdminTokenRequest) (*CreateAdminTokenResponse, error) {
	var out CreateAdminTokenResponse
	return &out, c.Do(ctx, http.MethodPost, "/v1/admin-tokens", req, &out)
}

// ListAdminTokens lists admin tokens (never their secrets).
func (c *Client) ListAdminTokens(ctx context.Context) ([]AdminToken, error) {
	var out []AdminToken
	return out, c.Do(ctx, http.MethodGet, "/v1/admin-tokens", nil, &out)
}

// RevokeAdminToken revokes an admin token by ID.
func (c *Client) RevokeAdminToken(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, pathf("/v1/admin-tokens/%s", id), nil, nil)
}

// RegenerateRecoveryCodes replaces a user's recovery codes.
func (c *Client) RegenerateRecoveryCodes(ctx context.Context, user string) (*RecoveryCodesResponse, error) {
	var out RecoveryCodesResponse
	return &out, c.Do(ctx, http.MethodPost, pathf("/v1/users/%s/recovery-codes", user), nil, &out)
}
