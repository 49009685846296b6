// Package adminapi is the wire form of the controller's HTTPS API, shared by
// the controller, cordonctl and the agents: request and response bodies,
// error codes, and a [Client].
//
// Admin routes (under /v1, except the agent routes below) need
// "Authorization: Bearer <admin token>"; the token's role (optionally
// narrowed) must grant the route's permission, or the answer is 403
// CodeForbidden. The agent routes POST /v1/enroll/gateway and POST
// /v1/login, and the admin sign-in POST /v1/admin/login, take no token: the
// enrollment token, or the password and TOTP code (or a user's recovery
// code), are the credential.
//
// Every error response is an [ErrorBody] whose Code is one of the Code
// constants; the HTTP status follows from the code. Lists are JSON arrays
// (never null). Creates answer 201 with the object, deletes 204.
package adminapi

import (
	"net/netip"
	"time"

	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// Error codes, each with its HTTP status.
const (
	CodeInvalid       = "invalid"        // 400: the request is malformed or a field is invalid
	CodeNotFound      = "not_found"      // 404: the object (or one it names) does not exist
	CodeConflict      = "conflict"       // 409: an object with that name already exists
	CodeInUse         = "in_use"         // 409: delete blocked: other objects still reference it
	CodeUnauthorized  = "unauthorized"   // 401: missing or bad admin token, or bad login
	CodeTokenInvalid  = "token_invalid"  // 401: enrollment token unknown, used or expired
	CodeRateLimited   = "rate_limited"   // 429: too many failed logins; see Retry-After
	CodeDeviceRevoked = "device_revoked" // 403: the device was revoked and cannot sign in again
	CodeForbidden     = "forbidden"      // 403: the admin's role does not allow this
	CodeInternal      = "internal"       // 500: the controller failed; see its log
	// CodeAlreadyApplied (409): the request's Idempotency-Key was applied
	// before; it is not applied again. A retry of an interrupted call
	// gets this when its first attempt committed.
	CodeAlreadyApplied = "already_applied"
)

// IdempotencyHeader carries a mutating request's client-chosen ID. The
// controller applies a request ID at most once (within a day) and records
// it in the change's audit events.
const IdempotencyHeader = "Idempotency-Key"

// MaxRequestIDLen bounds an Idempotency-Key.
const MaxRequestIDLen = 128

// ErrorBody is the body of every error response. Error says what to fix.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// Classifications an app can carry.
const (
	ClassPHI      = "phi"
	ClassInternal = "internal"
	ClassPublic   = "public"
)

// MaxBodySize bounds every request body.
const MaxBodySize = 1 << 20

// MaxGatewayTokenTTL is the longest a gateway enrollment token can live;
// DefaultGatewayTokenTTL applies when none is given.
const (
	DefaultGatewayTokenTTL = time.Hour
	MaxGatewayTokenTTL     = 7 * 24 * time.Hour
)

// Segment is a set of real prefixes behind gateways.
type Segment struct {
	Name      string         `json:"name"`
	CIDRs     []netip.Prefix `json:"cidrs"`
	Gateways  []string       `json:"gateways,omitempty"` // named in the policy file
	Source    string         `json:"source,omitempty"`   // "policy version N (FILE)"; "" for the directory
	CreatedAt time.Time      `json:"created_at"`         // for a policy file: when that version was applied
}

// CreateSegmentRequest is the body of POST /v1/segments.
type CreateSegmentRequest struct {
	Name  string   `json:"name"`
	CIDRs []string `json:"cidrs"` // e.g. "10.20.0.0/24"; host bits must be zero
}

// App is an application inside a segment.
type App struct {
	Name           string       `json:"name"`
	Segment        string       `json:"segment"`
	DNSName        string       `json:"dns_name"`
	Address        netip.Prefix `json:"address"`
	Proto          policy.Proto `json:"proto"`
	Ports          []string     `json:"ports"` // "443", "8000-8099", "*"
	Classification string       `json:"classification"`
	// Emergency: a break-glass session may reach it (cordonctl breakglass).
	Emergency bool `json:"emergency,omitempty"`
	// From a policy file: every name, address and service (DNSName,
	// Address, Proto and Ports give the first).
	Names     []string       `json:"names,omitempty"`
	Addresses []netip.Prefix `json:"addresses,omitempty"`
	Services  []string       `json:"services,omitempty"` // "tcp/443"
	Source    string         `json:"source,omitempty"`   // "policy version N (FILE)"; "" for the directory
	CreatedAt time.Time      `json:"created_at"`
	// Warnings, in a create's answer only: what the admin should know
	// about the app as created (e.g. a DNS name in no internal zone).
	Warnings []string `json:"warnings,omitempty"`
}

// CreateAppRequest is the body of POST /v1/apps.
type CreateAppRequest struct {
	Name    string `json:"name"`
	Segment string `json:"segment"`
	DNSName string `json:"dns_name"`
	// Address is a host ("10.20.0.5") or a prefix ("10.20.0.0/28") inside
	// one of the segment's CIDRs.
	Address string   `json:"address"`
	Proto   string   `json:"proto"` // tcp, udp, icmp, any
	Ports   []string `json:"ports"` // required for tcp and udp
	// Classification is phi, internal or public; empty means phi.
	Classification string `json:"classification,omitempty"`
	// Emergency marks the app for emergency access: break-glass
	// sessions reach emergency apps (those the rules grant) and no other.
	Emergency bool `json:"emergency,omitempty"`
}

// User is a local user. Secrets never appear here.
type User struct {
	Name     string `json:"name"`
	Disabled bool   `json:"disabled"`
	// BreakGlass: an emergency account (cordonctl breakglass create).
	BreakGlass bool      `json:"break_glass,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	// Identities are the user's links to identity providers with the
	// claims each last asserted (GET /v1/users/{name} only).
	Identities []UserIdentity `json:"identities,omitempty"`
}

// UserIdentity is a user's link to an identity provider and the group
// claims it last asserted: what policy IdP references ({claim, value})
// grant access by. GET /v1/identities lists them all.
type UserIdentity struct {
	User    string   `json:"user"`
	IdP     string   `json:"idp"`
	Subject string   `json:"subject"`
	Email   string   `json:"email,omitempty"`
	Claim   string   `json:"claim"`  // the claim name policy references use ("groups")
	Groups  []string `json:"groups"` // the values last asserted, sorted
	// ClaimsAsOf is the last sign-in or successful refresh; ClaimsAge is
	// its age by the controller's clock, in seconds.
	ClaimsAsOf time.Time `json:"claims_as_of"`
	ClaimsAge  int64     `json:"claims_age_seconds"`
	// InvalidAt is when the provider refused the user; such claims grant
	// nothing until the next sign-in.
	InvalidAt time.Time `json:"invalid_at,omitzero"`
}

// CreateUserRequest is the body of POST /v1/users.
type CreateUserRequest struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

// CreateUserResponse answers POST /v1/users. The TOTP secret and URI are
// returned this once and can never be read again.
type CreateUserResponse struct {
	User
	TOTPSecret string `json:"totp_secret"`
	TOTPURI    string `json:"totp_uri"`
	// RecoveryCodes are the user's one-time recovery codes, shown once.
	RecoveryCodes []string `json:"recovery_codes"`
}

// Group is a named set of users.
type Group struct {
	Name    string   `json:"name"`
	Members []string `json:"members"`
	// From a policy file: nested groups and IdP groups ("groups=Physicians").
	Groups    []string  `json:"groups,omitempty"`
	IdP       []string  `json:"idp,omitempty"`
	Source    string    `json:"source,omitempty"` // "policy version N (FILE)"; "" for the directory
	CreatedAt time.Time `json:"created_at"`
}

// CreateGroupRequest is the body of POST /v1/groups.
type CreateGroupRequest struct {
	Name string `json:"name"`
}

// AddMemberRequest is the body of POST /v1/groups/{name}/members.
type AddMemberRequest struct {
	User string `json:"user"`
}

// Rule lets a group reach an app.
type Rule struct {
	Name  string `json:"name"`
	Group string `json:"group"`
	App   string `json:"app"`
	// From a policy file: every subject and target ("group:nurses",
	// "app:ehr"; Group and App give the first of each kind), the
	// conditions in words, and whether it is a deny rule.
	From       []string  `json:"from,omitempty"`
	To         []string  `json:"to,omitempty"`
	Conditions string    `json:"conditions,omitempty"`
	Deny       bool      `json:"deny,omitempty"`
	Source     string    `json:"source,omitempty"` // "policy version N (FILE)"; "" for the directory
	CreatedAt  time.Time `json:"created_at"`
}

// CreateRuleRequest is the body of POST /v1/rules.
type CreateRuleRequest struct {
	Name  string `json:"name"`
	Group string `json:"group"`
	App   string `json:"app"`
}

// CreateGatewayTokenRequest is the body of POST /v1/gateway-tokens.
type CreateGatewayTokenRequest struct {
	Segment string `json:"segment"`
	// Name is the name the enrolled gateway gets; empty lets the gateway
	// choose.
	Name string `json:"name,omitempty"`
	// TTL is a duration such as "30m", "1h" or "2d"; empty means 1h, the
	// maximum is 7 days.
	TTL string `json:"ttl,omitempty"`
}

// GatewayToken is a gateway enrollment token as listed (never the secret).
type GatewayToken struct {
	ID        string     `json:"id"`
	Segment   string     `json:"segment"`
	Name      string     `json:"name,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	UsedAt    *time.Time `json:"used_at,omitempty"`
	UsedBy    string     `json:"used_by,omitempty"`
}

// CreateGatewayTokenResponse answers POST /v1/gateway-tokens. Token is the
// secret, returned this once.
type CreateGatewayTokenResponse struct {
	GatewayToken
	Token string `json:"token"`
}

// Gateway is an enrolled gateway.
type Gateway struct {
	ID          string       `json:"id"`
	Name        string       `json:"name"`
	Segment     string       `json:"segment"`
	PublicKey   wgkey.Public `json:"public_key"`
	OverlayAddr netip.Addr   `json:"overlay_addr"`
	Endpoint    string       `json:"endpoint"`
	CreatedAt   time.Time    `json:"created_at"`
	// State is the gateway's health as the controller answering sees it:
	// "up" (control connection open), "draining" (up, and drained by an
	// admin: clients move off it), "disconnected" (closed, within the
	// grace period), "dead" (closed past it: clients order it last).
	// LastSeen is when the controller last heard from it (zero: not since
	// the controller started); Version is the version it reported.
	State    string    `json:"state,omitempty"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Version  string    `json:"version,omitempty"`
	// Peers and Flows are the load the gateway last reported while up:
	// WireGuard peers configured and flows open (nil: not up, or a
	// gateway too old to report it).
	Peers *int `json:"peers,omitempty"`
	Flows *int `json:"flows,omitempty"`
	// DrainedAt is when an admin drained it (cordonctl gateway drain);
	// zero: not drained.
	DrainedAt time.Time `json:"drained_at,omitzero"`
}

// DrainGatewayRequest is the body of POST /v1/gateways/{id}/drain.
type DrainGatewayRequest struct {
	// Force drains the segment's last live gateway that is not draining,
	// which cuts its clients off the segment.
	Force bool `json:"force,omitempty"`
}

// Device is an enrolled client device.
type Device struct {
	ID          string       `json:"id"`
	User        string       `json:"user"`
	Hostname    string       `json:"hostname"`
	PublicKey   wgkey.Public `json:"public_key"`
	OverlayAddr netip.Addr   `json:"overlay_addr"`
	CreatedAt   time.Time    `json:"created_at"`
	RevokedAt   time.Time    `json:"revoked_at,omitzero"`
	// Quarantine is set while an admin holds the device in quarantine
	// (POST /v1/devices/{id}/quarantine); nil otherwise.
	Quarantine *Quarantine `json:"quarantine,omitempty"`
}

// Quarantine is an admin's isolation of a device: it reaches no app and
// is no gateway's peer, but keeps its control channel and session.
type Quarantine struct {
	At     time.Time `json:"at"`
	By     string    `json:"by"`     // "admin:alice"
	Reason string    `json:"reason"` // shown to the device's user
}

// QuarantineRequest is the body of POST /v1/devices/{id}/quarantine.
type QuarantineRequest struct {
	// Reason is shown to the device's user ('cordon status') and
	// recorded in the audit trail: 1 to MaxQuarantineReason bytes of
	// printable text on one line.
	Reason string `json:"reason"`
}

// ReleaseRequest is the body of POST /v1/devices/{id}/release.
type ReleaseRequest struct {
	Comment string `json:"comment,omitempty"` // recorded in the audit trail
}

// MaxQuarantineReason is the longest quarantine reason, in bytes.
const MaxQuarantineReason = 300

// Session is a device's signed-in session.
type Session struct {
	ID           string    `json:"id"`
	DeviceID     string    `json:"device_id"`
	User         string    `json:"user"`
	Method       string    `json:"method"` // password+totp, recovery-code, oidc:<idp>
	Source       string    `json:"source"`
	StartedAt    time.Time `json:"started_at"`
	LastActivity time.Time `json:"last_activity"`
	MFAAt        time.Time `json:"mfa_at,omitzero"`
	Active       bool      `json:"active"`
	EndedAt      time.Time `json:"ended_at,omitzero"`
	EndReason    string    `json:"end_reason,omitempty"`
}

// EndSessionsRequest is the body of POST /v1/sessions/end: exactly one of
// ID, User or DeviceID.
type EndSessionsRequest struct {
	ID       string `json:"id,omitempty"`
	User     string `json:"user,omitempty"`
	DeviceID string `json:"device_id,omitempty"`
	Comment  string `json:"comment,omitempty"` // recorded in the audit trail
}

// AuditEvent is one record of the audit trail.
type AuditEvent struct {
	Seq     int64             `json:"seq"`
	Time    time.Time         `json:"time"`
	Type    audit.Type        `json:"type"`
	Actor   string            `json:"actor"`
	Outcome string            `json:"outcome"`
	Subject string            `json:"subject"`
	Details map[string]string `json:"details,omitempty"`
	// RequestID is the Idempotency-Key of the call that made the change.
	RequestID string `json:"request_id,omitempty"`
}

// AuditQuery selects audit events (GET /v1/audit?type=&limit=&after=&request=);
// events come newest first.
type AuditQuery struct {
	Type    string // exact type, or a prefix ending in "." ("admin.")
	Limit   int    // 1-1000; 0 means 100
	After   int64  // only events with a larger Seq
	Request string // only the events of the call with this Idempotency-Key
}

// MaxAuditLimit bounds AuditQuery.Limit.
const MaxAuditLimit = 1000

// WhoAmI answers GET /v1/whoami: which admin token the request used and
// what it may do.
type WhoAmI struct {
	Actor       string    `json:"actor"`           // "admin:<token name>"
	Name        string    `json:"name"`            // the token's name (the account name for a sign-in token)
	Admin       string    `json:"admin,omitempty"` // the account the token belongs to, if any
	Role        string    `json:"role"`
	Scopes      []string  `json:"scopes,omitempty"` // narrowing of the role; empty: the whole role
	Permissions []string  `json:"permissions"`      // what the token may do
	TokenID     string    `json:"token_id"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"` // zero: never (a legacy token)
}

// MaxPolicyBodySize bounds the body of the policy routes (POST
// /v1/policy/plan and /v1/policy/apply), which carry a whole policy file
// (at most policyfile.MaxFileSize bytes, JSON-escaped). Every other route
// keeps MaxBodySize.
const MaxPolicyBodySize = 16 << 20

// PlanPolicyRequest is the body of POST /v1/policy/plan: a policy file's
// text and the name positions in errors refer to.
type PlanPolicyRequest struct {
	File   string `json:"file"`
	Source string `json:"source"`
}

// ApplyPolicyRequest is the body of POST /v1/policy/apply. Reason is
// required: it goes to the audit trail with the actor and both hashes.
type ApplyPolicyRequest struct {
	File   string `json:"file"`
	Source string `json:"source"`
	Reason string `json:"reason"`
}

// RollbackPolicyRequest is the body of POST /v1/policy/rollback: re-apply
// an old version's text as a new version.
type RollbackPolicyRequest struct {
	Version int64  `json:"version"`
	Reason  string `json:"reason"`
}

// PolicyProblem is one error in a policy file, at a 1-based line and column.
type PolicyProblem struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Col     int    `json:"col"`
	Message string `json:"message"` // what is wrong, what would be right
}

// PolicyTestResult is the outcome of one of a policy's tests.
type PolicyTestResult struct {
	Name    string `json:"name"`
	Line    int    `json:"line"`
	Col     int    `json:"col"`
	Passed  bool   `json:"passed"`
	Message string `json:"message,omitempty"` // on failure: file:line:col: what happened instead
}

// PolicyChange is one line of a plan: who gains, loses, or keeps with
// different ports or conditions, access to an app.
type PolicyChange struct {
	Kind string `json:"change"` // "gain", "lose", "change"
	Who  string `json:"who"`    // "user:alice", "idp:groups=X", "tag:kiosk"
	App  string `json:"app"`
	Old  string `json:"old,omitempty"`
	New  string `json:"new,omitempty"`
}

// PolicyPlan is the answer of POST /v1/policy/plan; an invalid file is
// answered 200 with Valid false and its Errors or failing Tests (apply
// answers such a file with an ErrorBody, code invalid, listing them). Valid
// is true when the file parses, checks and passes every test; Changes is
// then the entitlement diff against the active policy (if none is active,
// against the directory: what the segment/app/group/rule commands grant).
type PolicyPlan struct {
	Valid         bool               `json:"valid"`
	SHA256        string             `json:"sha256"`
	Errors        []PolicyProblem    `json:"errors"`
	Tests         []PolicyTestResult `json:"tests"`
	ActiveVersion int64              `json:"active_version"` // 0: none
	ActiveSHA256  string             `json:"active_sha256,omitempty"`
	Changes       []PolicyChange     `json:"changes"`
}

// PolicyVersion is one applied policy. Source is set by GET
// /v1/policy/versions/{n} only.
type PolicyVersion struct {
	Version    int64     `json:"version"`
	File       string    `json:"file"`
	SHA256     string    `json:"sha256"`
	Actor      string    `json:"actor"`
	Reason     string    `json:"reason"`
	RollbackOf int64     `json:"rollback_of,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	Source     string    `json:"source,omitempty"`
}

// Origins of an exported policy (PolicyExport.Origin, and the
// PolicyOriginHeader response header of GET /v1/policy/export).
const (
	PolicyOriginHeader    = "X-Cordon-Policy-Origin"
	PolicyOriginPolicy    = "policy"    // the active policy version, as applied
	PolicyOriginDirectory = "directory" // no policy applied: the directory rendered as one
)

// PolicyExport is the answer of GET /v1/policy/export: the policy file
// that decides access now. Origin "policy": the active version's text as
// applied (Version, File, SHA256 name it). Origin "directory": no policy
// was ever applied, and Source is the one-by-one directory (segments,
// apps, groups, rules) rendered as a policy file granting the same;
// Version is 0. Either way Source parses with policyfile.Parse.
type PolicyExport struct {
	Origin  string `json:"origin"`
	Version int64  `json:"version,omitempty"`
	File    string `json:"file"`
	SHA256  string `json:"sha256"`
	Source  string `json:"source"`
}

// AppliedPolicy is the answer of apply and rollback: the new version and
// what it changed.
type AppliedPolicy struct {
	Version     PolicyVersion  `json:"version"`
	PreviousSHA string         `json:"previous_sha256,omitempty"`
	Changes     []PolicyChange `json:"changes"`
	TestsPassed int            `json:"tests_passed"`
}

// Admin roles (see docs/identity.md for what each may do).
const (
	RoleOwner        = "owner"
	RoleNetworkAdmin = "network-admin"
	RoleAuditor      = "auditor"
	RoleHelpdesk     = "helpdesk"
	RoleReviewer     = "reviewer"
)

// Admin token lifetimes. A sign-in token lives DefaultAdminSessionTTL
// (the controller's --admin-session-ttl); an automation token needs an
// explicit TTL of at most MaxAdminTokenTTL.
const (
	DefaultAdminSessionTTL = 8 * time.Hour
	MaxAdminTokenTTL       = 90 * 24 * time.Hour
)

// Admin is an administrator account. Secrets never appear here.
type Admin struct {
	Name string `json:"name"`
	Role string `json:"role"`
	// IdP names the identity provider an IdP account signs in through
	// ("" for a local account); Subject is its IdP user ("" until the
	// first sign-in binds it).
	IdP       string    `json:"idp,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"created_at"`
}

// CreateAdminRequest is the body of POST /v1/admins: a local account
// (Password; the answer carries its TOTP secret) or an IdP account (IdP,
// optionally Subject; no password, no TOTP).
type CreateAdminRequest struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	Password string `json:"password,omitempty"`
	IdP      string `json:"idp,omitempty"`
	Subject  string `json:"subject,omitempty"`
}

// CreateAdminResponse answers POST /v1/admins: the TOTP secret and URI of
// a local account, returned this once.
type CreateAdminResponse struct {
	Admin
	TOTPSecret string `json:"totp_secret,omitempty"`
	TOTPURI    string `json:"totp_uri,omitempty"`
}

// AdminOIDCLoginRequest is the body of POST /v1/admin/login/oidc (no
// bearer token): admin account Name finishes an IdP sign-in begun at
// /v1/admin/login/oidc/start (Code and CodeVerifier) or polls one begun
// at /v1/admin/login/oidc/device (neither). The answer is an
// AdminLoginResponse.
type AdminOIDCLoginRequest struct {
	Name         string `json:"name"`
	LoginID      string `json:"login_id"`
	Code         string `json:"code,omitempty"`
	CodeVerifier string `json:"code_verifier,omitempty"`
	TTL          string `json:"ttl,omitempty"` // as in AdminLoginRequest
}

// AdminLoginRequest is the body of POST /v1/admin/login (no bearer
// token): an admin account's password and TOTP code.
type AdminLoginRequest struct {
	Name     string `json:"name"`
	Password string `json:"password"`
	TOTP     string `json:"totp"`
	// TTL optionally shortens the token's life (e.g. "1h"); it cannot
	// exceed the controller's admin session TTL.
	TTL string `json:"ttl,omitempty"`
}

// AdminLoginResponse answers POST /v1/admin/login: a new sign-in token of
// the account's role, shown once.
type AdminLoginResponse struct {
	Token     string    `json:"token"`
	TokenID   string    `json:"token_id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	ExpiresAt time.Time `json:"expires_at"`
}

// AdminToken is an admin API token as listed (never the secret).
type AdminToken struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Admin      string    `json:"admin,omitempty"`   // owning account; empty for standalone tokens
	Account    string    `json:"account,omitempty"` // the account it acts for and dies with; empty for the first-start token and tokens it issued
	Role       string    `json:"role"`
	Scopes     []string  `json:"scopes,omitempty"`
	CreatedBy  string    `json:"created_by"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
}

// CreateAdminTokenRequest is the body of POST /v1/admin-tokens: a
// standalone token for automation.
type CreateAdminTokenRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
	// Scopes optionally narrow the role to some of its permissions.
	Scopes []string `json:"scopes,omitempty"`
	// TTL is required: "30m", "12h", "30d"; at most 90d.
	TTL string `json:"ttl"`
}

// CreateAdminTokenResponse answers POST /v1/admin-tokens; Token is the
// secret, returned this once.
type CreateAdminTokenResponse struct {
	AdminToken
	Token string `json:"token"`
}

// RecoveryCodesResponse answers POST /v1/users/{name}/recovery-codes: the
// user's new one-time recovery codes (every older code is void), shown
// once.
type RecoveryCodesResponse struct {
	User  string   `json:"user"`
	Codes []string `json:"codes"`
}

// CreateBreakGlassRequest is the body of POST /v1/breakglass: a new
// emergency account with its password (at least
// MinBreakGlassPasswordLength characters).
type CreateBreakGlassRequest struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

// MinBreakGlassPasswordLength is the shortest password an emergency
// account may have, in characters.
const MinBreakGlassPasswordLength = 16

// CreateBreakGlassResponse answers POST /v1/breakglass. Codes are the
// account's sealed one-time codes, returned this once: each signs in once.
type CreateBreakGlassResponse struct {
	User
	Codes []string `json:"codes"`
}

// BreakGlassUse is one use of an emergency account and its review
// (GET /v1/breakglass/uses).
type BreakGlassUse struct {
	ID            string             `json:"id"`
	User          string             `json:"user"`
	DeviceID      string             `json:"device_id"`
	SessionID     string             `json:"session_id"`
	Source        string             `json:"source"`
	Justification string             `json:"justification"`
	StartedAt     time.Time          `json:"started_at"`
	ExpiresAt     time.Time          `json:"expires_at"`
	State         string             `json:"state"` // BreakGlassOpen or BreakGlassClosed
	Reviews       []BreakGlassReview `json:"reviews"`
}

// Break-glass use states.
const (
	BreakGlassOpen   = "open"   // waits for reviews
	BreakGlassClosed = "closed" // two different admins signed it off
)

// BreakGlassReview is one admin's sign-off of a use.
type BreakGlassReview struct {
	Reviewer string    `json:"reviewer"`
	At       time.Time `json:"at"`
	Comment  string    `json:"comment"`
}

// ReviewBreakGlassRequest is the body of POST /v1/breakglass/uses/{id}/review.
type ReviewBreakGlassRequest struct {
	Comment string `json:"comment"` // required: what the reviewer found
}
