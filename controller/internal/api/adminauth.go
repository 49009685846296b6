package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Administrators: who may call the admin routes, and with what.
//
// Every admin route is registered with the one permission it needs
// (a.admin(perm, h)); a token's scope is its role, optionally narrowed to
// some of the role's permissions (auth.Scope). Tokens come from three
// places: an admin account's sign-in (POST /v1/admin/login, password and
// TOTP, or POST /v1/admin/login/oidc through an identity provider, see
// adminoidc.go; the token lives AdminSessionTTL), an owner issuing a
// standalone token for automation (POST /v1/admin-tokens, explicit TTL),
// and the controller's first start (the bootstrap owner token, see
// server).

// permAuthenticated is the pseudo-permission of routes any valid admin
// token may call (whoami, logout): they reveal or change only the token
// itself.
const permAuthenticated auth.Permission = "authenticated"

// Route is one registered API route and the permission it requires
// (empty for public routes, which carry their own credential).
type Route struct {
	Pattern    string
	Permission auth.Permission
}

// Routes returns every registered route, in registration order, so tests
// can check that each admin route has a permission and that every role
// gets exactly what it should.
func (a *API) Routes() []Route { return slices.Clone(a.routeTab) }

// routeMux records the routes it registers.
type routeMux struct {
	*http.ServeMux
	tab *[]Route
}

func (m *routeMux) Handle(pattern string, h http.Handler) {
	r := Route{Pattern: pattern}
	if ar, ok := h.(*adminRoute); ok {
		r.Permission = ar.perm
	}
	*m.tab = append(*m.tab, r)
	m.ServeMux.Handle(pattern, h)
}

func (m *routeMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	m.Handle(pattern, http.HandlerFunc(h))
}

// adminRoute is the handler a.admin returns; it carries its permission so
// the route table can be inspected.
type adminRoute struct {
	perm auth.Permission
	h    http.HandlerFunc
}

func (ar *adminRoute) ServeHTTP(w http.ResponseWriter, r *http.Request) { ar.h(w, r) }

// principal is the authenticated caller of an admin route.
type principal struct {
	token store.AdminToken
	scope auth.Scope
}

func (p principal) actor() string { return "admin:" + p.token.Name }

type principalKey struct{}

func withPrincipal(ctx context.Context, p principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

func principalFrom(ctx context.Context) principal {
	p, _ := ctx.Value(principalKey{}).(principal)
	return p
}

// touchEvery bounds how often a token's last use is written: once a
// minute is precise enough for a review and keeps reads from becoming
// writes.
const touchEvery = time.Minute

// authenticateAdmin finds the presented token. The lookup is by SHA-256
// of the secret through the unique index; the stored hash is compared
// again in constant time. Timing of an index lookup can tell at most
// something about a hash of a 256-bit secret, which does not help find
// the secret.
func (a *API) authenticateAdmin(r *http.Request) (principal, error) {
	ctx := r.Context()
	tok, ok := bearer(r)
	var (
		t      store.AdminToken
		acct   store.Admin
		reason = "no bearer token"
		err    error
	)
	if ok {
		reason = "bad token"
		if auth.LooksLikeAdminToken(tok) {
			h := auth.HashToken(tok)
			t, acct, err = a.st.AdminTokenByHash(ctx, h)
			switch {
			case errors.Is(err, store.ErrNotFound):
			case err != nil:
				return principal{}, fmt.Errorf("look up admin token: %w", err)
			case subtle.ConstantTimeCompare(t.Hash, h) != 1:
				// Cannot happen with a correct store; refuse anyway.
			default:
				p, failReason, err := a.checkToken(ctx, t, acct)
				if err == nil {
					return p, nil
				}
				reason = failReason
				a.auditAuthFailure(r, "admin:"+t.Name, reason, map[string]string{"token": t.ID})
				return principal{}, err
			}
		}
	}
	a.auditAuthFailure(r, "admin:unknown", reason, nil)
	return principal{}, errUnauthorized
}

// checkToken decides whether a found token may be used now.
func (a *API) checkToken(ctx context.Context, t store.AdminToken, acct store.Admin) (principal, string, error) {
	now := a.now()
	switch {
	case !t.RevokedAt.IsZero():
		return principal{}, "token revoked", errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized,
			"this admin token was revoked: sign in again (cordonctl login --admin NAME) or ask an owner for a new token")
	case !t.Usable(now):
		return principal{}, "token expired", errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized,
			"this admin token expired at %s: sign in again (cordonctl login --admin NAME) or ask an owner for a new token",
			t.ExpiresAt.UTC().Format(time.RFC3339))
	case t.Admin != "" && acct.Disabled:
		return principal{}, "admin disabled", errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized,
			"admin account %q is disabled: ask an owner", t.Admin)
	// A standalone token dies with the account that issued it: refused
	// while it is disabled, and once it is deleted (DeleteAdmin also
	// revokes it).
	case t.Account != "" && acct.Name == "":
		return principal{}, "issuing admin deleted", errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized,
			"admin account %q, which issued this token, was deleted: ask an owner for a new token", t.Account)
	case t.Account != "" && acct.Disabled:
		return principal{}, "issuing admin disabled", errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized,
			"admin account %q, which issued this token, is disabled: ask an owner", t.Account)
	}
	role, err := auth.ParseRole(t.Role)
	if err != nil {
		return principal{}, "stored role unusable", fmt.Errorf("admin token %s: %w", t.ID, err)
	}
	scope := auth.Scope{Role: role}
	for _, s := range t.Scopes {
		p, err := auth.ParsePermission(s)
		if err != nil {
			return principal{}, "stored scope unusable", fmt.Errorf("admin token %s: %w", t.ID, err)
		}
		scope.Only = append(scope.Only, p)
	}
	if now.Sub(t.LastUsedAt) >= touchEvery {
		if err := a.state.TouchAdminToken(context.WithoutCancel(ctx), t.ID); err != nil {
			a.log.WarnContext(ctx, "record admin token use", logErr, err)
		}
	}
	return principal{token: t, scope: scope}, "", nil
}

// authorize checks that p's scope grants perm; a refusal names the roles
// that would.
func (a *API) authorize(r *http.Request, p principal, perm auth.Permission) error {
	if perm == permAuthenticated || p.scope.Allows(perm) {
		return nil
	}
	roles := auth.RolesGranting(perm)
	names := make([]string, len(roles))
	for i, x := range roles {
		names[i] = string(x)
	}
	reason := "forbidden: needs " + string(perm)
	a.auditAuthFailure(r, p.actor(), reason, map[string]string{"token": p.token.ID, "role": string(p.scope.Role), "permission": string(perm)})
	what := "role " + string(p.scope.Role)
	if len(p.scope.Only) > 0 {
		what += " narrowed to " + joinPerms(p.scope.Only)
	}
	return errorf(http.StatusForbidden, adminapi.CodeForbidden,
		"%s %s needs permission %s, which role %s has; your token has %s: sign in as an admin with that role or ask an owner",
		r.Method, r.URL.Path, perm, strings.Join(names, " or "), what)
}

func joinPerms(ps []auth.Permission) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ",")
}

func (a *API) auditAuthFailure(r *http.Request, actor, reason string, extra map[string]string) {
	d := map[string]string{"source": source(r), "reason": reason}
	for k, v := range extra {
		d[k] = v
	}
	a.record(r.Context(), store.AuditEvent{
		Type: audit.AdminAuth, Actor: actor, Outcome: "failure",
		Subject: clip(r.Method + " " + r.URL.Path), Details: d,
	})
}

func (a *API) whoami(w http.ResponseWriter, r *http.Request, actor string) error {
	p := principalFrom(r.Context())
	out := adminapi.WhoAmI{
		Actor: actor, Name: p.token.Name, Admin: p.token.Admin, Role: string(p.scope.Role),
		Scopes: p.token.Scopes, TokenID: p.token.ID, ExpiresAt: p.token.ExpiresAt,
		Permissions: []string{},
	}
	for _, x := range p.scope.Effective() {
		out.Permissions = append(out.Permissions, string(x))
	}
	return ok(w, out)
}

// Failed sign-in alerts.

// loginFailed feeds a failed sign-in to the alerter and records every
// alert it raises: an auth.alert audit event with outcome "alert", and a
// warning in the log. account is "user" or "admin", key the throttle key,
// shown the name as safe to record (quoted if it is not a valid name: it
// is attacker input).
func (a *API) loginFailed(ctx context.Context, account, key, shown, src string) {
	for _, al := range a.alert.Failed(key, src, a.now()) {
		d := map[string]string{
			"kind": al.Kind, "failures": strconv.Itoa(al.Failures), "window": al.Window.String(),
			"first": al.First.UTC().Format(time.RFC3339), "account": account,
		}
		subject := al.Key // a parsed address or /64, or the raw source
		if al.Kind == auth.AlertUser {
			subject = shown
			d["source"] = src // the latest one
		}
		a.record(ctx, store.AuditEvent{Type: audit.AuthAlert, Actor: "controller", Outcome: "alert", Subject: clip(subject), Details: d})
		a.log.WarnContext(ctx, "repeated failed sign-ins", logKind, al.Kind, logSubj, clip(subject),
			logCount, al.Failures, logWindow, al.Window, logSource, src)
	}
}

// Admin sign-in.

// adminThrottleKey keeps admin names apart from user names in the
// throttle, the alerter and the TOTP replay memory.
func adminThrottleKey(name string) string { return "admin/" + name }

var errAdminLoginFailed = errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized,
	"admin sign-in failed: wrong name, password or one-time code (a code can be used only once: wait for the next one)")

func (a *API) adminLogin(w http.ResponseWriter, r *http.Request) error {
	var req adminapi.AdminLoginRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	switch {
	case req.Name == "":
		return invalidf("field \"name\": required")
	case req.Password == "":
		return invalidf("field \"password\": required")
	case req.TOTP == "":
		return invalidf("field \"totp\": required: the 6-digit code from the authenticator app")
	}
	ttl, err := a.adminLoginTTL(req.TTL)
	if err != nil {
		return err
	}
	ctx := r.Context()
	src := source(r)
	name := req.Name
	if !nameRE.MatchString(name) {
		name = strconv.Quote(clip(name))
	}
	key := adminThrottleKey(req.Name)
	fail := func(reason string) {
		a.record(ctx, store.AuditEvent{
			Type: audit.AdminLogin, Actor: "admin:" + name, Outcome: "failure", Subject: name,
			Details: map[string]string{"source": src, "reason": reason},
		})
		a.loginFailed(ctx, "admin", key, "admin/"+name, src)
	}
	now := a.now()
	if wait := a.throttle.Allow(key, src, now); wait > 0 {
		fail("throttled")
		w.Header().Set("Retry-After", retryAfterSeconds(wait))
		return errorf(http.StatusTooManyRequests, adminapi.CodeRateLimited,
			"too many failed sign-ins: try again in %s", retryAfterSeconds(wait)+"s")
	}
	acct, err := a.st.GetAdmin(ctx, req.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		a.pw.VerifyDummy(req.Password)
		fail("unknown admin")
		return errAdminLoginFailed
	case err != nil:
		return err
	}
	if acct.IdP != "" {
		// No password to check: answer like a wrong one, in as much time.
		a.pw.VerifyDummy(req.Password)
		fail("admin signs in through identity provider " + acct.IdP)
		return errAdminLoginFailed
	}
	if err := a.checkPassword("admin "+acct.Name, acct.PasswordHash, req.Password, fail, errAdminLoginFailed); err != nil {
		return err
	}
	if err := a.checkTOTP("admin "+acct.Name, key, acct.TOTPSecret, req.TOTP, now, fail, errAdminLoginFailed); err != nil {
		return err
	}
	if acct.Disabled {
		fail("admin disabled")
		return errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized, "admin account %q is disabled: ask an owner", acct.Name)
	}
	a.throttle.Succeeded(key, src)
	return a.adminSignedIn(w, r, acct, ttl, "password+totp", nil)
}

// adminLoginTTL is the life of a sign-in token: the controller's admin
// session TTL, or the shorter one asked for.
func (a *API) adminLoginTTL(asked string) (time.Duration, error) {
	if asked == "" {
		return a.adminTTL, nil
	}
	d, err := parseDays(asked, "ttl")
	if err != nil {
		return 0, err
	}
	if d > a.adminTTL {
		return 0, invalidf("field \"ttl\": %s is longer than the controller allows for a sign-in (%s)", asked, a.adminTTL)
	}
	return d, nil
}

// adminSignedIn issues the sign-in token of an admin account that proved
// who it is by method, audits the sign-in and answers with the token.
func (a *API) adminSignedIn(w http.ResponseWriter, r *http.Request, acct store.Admin, ttl time.Duration, method string, extra map[string]string) error {
	secret, hash := auth.NewAdminToken()
	d := map[string]string{"source": source(r), "method": method}
	for k, v := range extra {
		d[k] = v
	}
	t, err := a.state.AdminSignIn(r.Context(), store.AdminToken{
		Name: acct.Name, Admin: acct.Name, Role: acct.Role, CreatedBy: "login", Hash: hash,
	}, ttl, d)
	if err != nil {
		return err
	}
	return ok(w, adminapi.AdminLoginResponse{Token: secret, TokenID: t.ID, Name: acct.Name, Role: t.Role, ExpiresAt: t.ExpiresAt})
}

func (a *API) adminLogout(w http.ResponseWriter, r *http.Request, actor string) error {
	p := principalFrom(r.Context())
	if err := a.state.RevokeAdminToken(r.Context(), origin(r, actor), p.token.ID, "logout", true); err != nil {
		return err
	}
	return noContent(w)
}

// Admin accounts.

func adminOut(x store.Admin) adminapi.Admin {
	return adminapi.Admin{Name: x.Name, Role: x.Role, IdP: x.IdP, Subject: x.Subject, Disabled: x.Disabled, CreatedAt: x.CreatedAt}
}

func (a *API) createAdmin(w http.ResponseWriter, r *http.Request, actor string) error {
	var req adminapi.CreateAdminRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkName("name", req.Name); err != nil {
		return err
	}
	role, err := auth.ParseRole(req.Role)
	if err != nil {
		return invalidf("field \"role\": %v", err)
	}
	if err := a.checkAdminCredential(&req); err != nil {
		return err
	}
	if !principalFrom(r.Context()).scope.Covers(auth.Scope{Role: role}) {
		return errorf(http.StatusForbidden, adminapi.CodeForbidden, "you cannot create an admin with more permissions than your own token has")
	}
	x := store.Admin{Name: req.Name, Role: string(role), IdP: req.IdP, Subject: req.Subject}
	var secret, uri string
	if x.IdP == "" {
		if x.PasswordHash, err = a.pw.Hash(req.Password); err != nil {
			return err
		}
		if secret, uri, err = auth.NewTOTPSecret(req.Name + " (admin)"); err != nil {
			return err
		}
		x.TOTPSecret = secret
	}
	// Audit actors are "admin:<name>" for accounts and tokens alike: the
	// state refuses an account named like a token still in use.
	x, err = a.state.CreateAdmin(r.Context(), origin(r, actor), x)
	if err != nil {
		return err
	}
	return created(w, adminapi.CreateAdminResponse{Admin: adminOut(x), TOTPSecret: secret, TOTPURI: uri})
}

func (a *API) listAdmins(w http.ResponseWriter, r *http.Request, _ string) error {
	xs, err := a.st.ListAdmins(r.Context())
	if err != nil {
		return err
	}
	return ok(w, mapSlice(xs, adminOut))
}

func (a *API) getAdmin(w http.ResponseWriter, r *http.Request, _ string) error {
	name := r.PathValue("name")
	if err := checkPathName("admin", name); err != nil {
		return err
	}
	x, err := a.st.GetAdmin(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return notFoundf("admin %q not found", name)
	}
	if err != nil {
		return err
	}
	return ok(w, adminOut(x))
}

// notSelf refuses an action on the caller's own account, which would lock
// the caller out mid-task; another owner does it.
func notSelf(r *http.Request, name, verb string) error {
	if principalFrom(r.Context()).token.Admin == name {
		return conflictf("you cannot %s your own admin account: another owner must", verb)
	}
	return nil
}

func (a *API) setAdminDisabled(disabled bool) adminHandlerFunc {
	verb := "enable"
	if disabled {
		verb = "disable"
	}
	return func(w http.ResponseWriter, r *http.Request, actor string) error {
		name := r.PathValue("name")
		if err := checkPathName("admin", name); err != nil {
			return err
		}
		if err := notSelf(r, name, verb); err != nil {
			return err
		}
		x, err := a.state.SetAdminDisabled(r.Context(), origin(r, actor), name, disabled)
		if err != nil {
			return err
		}
		return ok(w, adminOut(x))
	}
}

func (a *API) deleteAdmin(w http.ResponseWriter, r *http.Request, actor string) error {
	name := r.PathValue("name")
	if err := checkPathName("admin", name); err != nil {
		return err
	}
	if err := notSelf(r, name, "delete"); err != nil {
		return err
	}
	if err := a.state.DeleteAdmin(r.Context(), origin(r, actor), name); err != nil {
		return err
	}
	return noContent(w)
}

// Admin tokens.

func adminTokenOut(t store.AdminToken) adminapi.AdminToken {
	return adminapi.AdminToken{
		ID: t.ID, Name: t.Name, Admin: t.Admin, Account: t.Account, Role: t.Role, Scopes: t.Scopes, CreatedBy: t.CreatedBy,
		CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, LastUsedAt: t.LastUsedAt, RevokedAt: t.RevokedAt,
	}
}

func (a *API) createAdminToken(w http.ResponseWriter, r *http.Request, actor string) error {
	var req adminapi.CreateAdminTokenRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkName("name", req.Name); err != nil {
		return err
	}
	role, err := auth.ParseRole(req.Role)
	if err != nil {
		return invalidf("field \"role\": %v", err)
	}
	scope := auth.Scope{Role: role}
	for _, s := range req.Scopes {
		p, err := auth.ParsePermission(s)
		if err != nil {
			return invalidf("field \"scopes\": %v", err)
		}
		if !slices.Contains(scope.Only, p) {
			scope.Only = append(scope.Only, p)
		}
	}
	if err := auth.CheckNarrowing(role, scope.Only); err != nil {
		return invalidf("field \"scopes\": %v", err)
	}
	if req.TTL == "" {
		return invalidf("field \"ttl\": required: how long the token lives, e.g. 12h or 30d (at most 90d); tokens always expire")
	}
	ttl, err := parseDays(req.TTL, "ttl")
	if err != nil {
		return err
	}
	if ttl > adminapi.MaxAdminTokenTTL {
		return invalidf("field \"ttl\": %s is too long: at most 90d", req.TTL)
	}
	ctx := r.Context()
	if !principalFrom(ctx).scope.Covers(scope) {
		return errorf(http.StatusForbidden, adminapi.CodeForbidden, "you cannot issue a token with more permissions than your own token has")
	}
	// The audit actor of a token is "admin:<name>": the state refuses a
	// token named like an account.
	// The token acts for the caller's account (that of a sign-in token,
	// or the one a standalone token acts for), so it stops working when
	// that account is disabled or deleted. A token issued by the
	// first-start token, or by another token with no account, has none.
	t := store.AdminToken{Name: req.Name, Account: principalFrom(ctx).token.Account, Role: string(role), CreatedBy: actor}
	for _, p := range scope.Only {
		t.Scopes = append(t.Scopes, string(p))
	}
	secret, hash := auth.NewAdminToken()
	t.Hash = hash
	t, err = a.state.CreateAdminToken(ctx, origin(r, actor), t, ttl)
	if err != nil {
		return err
	}
	return created(w, adminapi.CreateAdminTokenResponse{AdminToken: adminTokenOut(t), Token: secret})
}

func (a *API) listAdminTokens(w http.ResponseWriter, r *http.Request, _ string) error {
	xs, err := a.st.ListAdminTokens(r.Context())
	if err != nil {
		return err
	}
	return ok(w, mapSlice(xs, adminTokenOut))
}

func (a *API) revokeAdminToken(w http.ResponseWriter, r *http.Request, actor string) error {
	id := r.PathValue("id")
	if len(id) > 64 {
		return invalidf("token ID longer than 64 characters")
	}
	if err := a.state.RevokeAdminToken(r.Context(), origin(r, actor), id, "", false); err != nil {
		return err
	}
	return noContent(w)
}

// Recovery codes.

func (a *API) regenerateRecoveryCodes(w http.ResponseWriter, r *http.Request, actor string) error {
	name := r.PathValue("name")
	if err := checkPathName("user", name); err != nil {
		return err
	}
	codes, hashes := auth.NewRecoveryCodes(name, auth.RecoveryCodeCount)
	if err := a.state.ReplaceRecoveryCodes(r.Context(), origin(r, actor), name, hashes); err != nil {
		return err
	}
	return ok(w, adminapi.RecoveryCodesResponse{User: name, Codes: codes})
}

// checkRecoveryCode verifies a recovery code for user u without using it
// up: the caller checks the rest first and then calls useRecoveryCode. It
// returns the matching hash, or "" and the audit reason.
func (a *API) checkRecoveryCode(ctx context.Context, u store.User, code string) ([]byte, string, error) {
	if !auth.LooksLikeRecoveryCode(code) {
		return nil, "malformed recovery code", nil
	}
	stored, err := a.st.ListRecoveryCodes(ctx, u.Name)
	if err != nil {
		return nil, "", err
	}
	hashes := make([][]byte, len(stored))
	for i, c := range stored {
		hashes[i] = c.Hash
	}
	i := auth.MatchRecoveryCode(u.Name, code, hashes)
	switch {
	case i < 0:
		return nil, "wrong recovery code", nil
	case !stored[i].UsedAt.IsZero():
		return nil, "recovery code already used", nil
	}
	return stored[i].Hash, "", nil
}

// parseDays parses a Go duration or a whole number of days ("30d"), at
// least a minute.
func parseDays(s, field string) (time.Duration, error) {
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 || days > 3650 {
			return 0, invalidf("field %q: %q is not a duration like 30m, 8h or 30d", field, clip(s))
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, invalidf("field %q: %q is not a duration like 30m, 8h or 30d", field, clip(s))
		}
	}
	if d < time.Minute {
		return 0, invalidf("field %q: %s is too short: at least 1m", field, s)
	}
	return d, nil
}

// loginWithRecoveryCode finishes a user sign-in whose password was right
// and which offers a recovery code instead of the TOTP code. The code is
// used up only when everything else passed; of concurrent uses of one
// code exactly one signs in (the store's conditional update decides).
//
// A recovery code counts as MFA: it is a look-up secret the user holds on
// paper (something they have, NIST SP 800-63B 5.1.2), proven together with
// the password. The session records the method "recovery-code" and its
// MFA time, and an auth.recovery_code event says how many codes are left.
func (a *API) loginWithRecoveryCode(w http.ResponseWriter, r *http.Request, u store.User, req *controlproto.LoginRequest, fail func(string)) error {
	ctx := r.Context()
	src := source(r)
	hash, reason, err := a.checkRecoveryCode(ctx, u, req.RecoveryCode)
	if err != nil {
		return err
	}
	if hash == nil {
		fail(reason)
		return errLoginFailed
	}
	if u.Disabled {
		fail("user disabled")
		return errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized, "account %q is disabled: contact your administrator", u.Name)
	}
	a.throttle.Succeeded(req.Username, src)
	if req.BreakGlass {
		return a.signIn(w, r, u, &req.DeviceEnroll, MethodBreakGlass, true, hash,
			&state.BreakGlass{Justification: req.Justification, For: a.bgFor})
	}
	return a.signIn(w, r, u, &req.DeviceEnroll, MethodRecoveryCode, true, hash, nil)
}
