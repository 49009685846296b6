package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/apitest"
	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// roleSpec is who may call each admin route: O owner, N network-admin,
// A auditor, H helpdesk, R reviewer. It is written out here, independently of the
// permission table in package auth, so a change to either shows up as a
// failure to look at; a route missing here fails the test.
var roleSpec = map[string]string{
	"GET /v1/whoami":        "ONAHR",
	"POST /v1/admin/logout": "ONAHR",

	"POST /v1/segments":          "ON",
	"GET /v1/segments":           "ONAH",
	"GET /v1/segments/{name}":    "ONAH",
	"DELETE /v1/segments/{name}": "ON",

	"POST /v1/apps":          "ON",
	"GET /v1/apps":           "ONAH",
	"GET /v1/apps/{name}":    "ONAH",
	"DELETE /v1/apps/{name}": "ON",

	"POST /v1/users":                       "ON",
	"GET /v1/users":                        "ONAH",
	"GET /v1/users/{name}":                 "ONAH",
	"GET /v1/identities":                   "ONAH", // the IdP claims user show prints
	"DELETE /v1/users/{name}":              "ON",
	"POST /v1/users/{name}/disable":        "ONH", // helpdesk takes access away...
	"POST /v1/users/{name}/enable":         "ON",  // ...but never gives it back
	"POST /v1/users/{name}/recovery-codes": "ON",

	"POST /v1/groups":                         "ON",
	"GET /v1/groups":                          "ONAH",
	"GET /v1/groups/{name}":                   "ONAH",
	"DELETE /v1/groups/{name}":                "ON",
	"POST /v1/groups/{name}/members":          "ON",
	"DELETE /v1/groups/{name}/members/{user}": "ON",

	"POST /v1/rules":          "ON",
	"GET /v1/rules":           "ONAH",
	"GET /v1/rules/{name}":    "ONAH",
	"DELETE /v1/rules/{name}": "ON",

	"POST /v1/gateway-tokens":  "ON",
	"GET /v1/gateway-tokens":   "ONAH",
	"GET /v1/gateways":         "ONAH",
	"DELETE /v1/gateways/{id}": "ON",

	"POST /v1/gateways/{id}/drain":   "ON",
	"POST /v1/gateways/{id}/undrain": "ON",

	"GET /v1/devices":              "ONAH",
	"DELETE /v1/devices/{id}":      "ON",
	"POST /v1/devices/{id}/revoke": "ONH",
	"GET /v1/devices/{id}":         "ONAH",
	// Quarantine takes access away (helpdesk too); release gives it back.
	"POST /v1/devices/{id}/quarantine": "ONH",
	"POST /v1/devices/{id}/release":    "ON",
	// Break-glass: accounts like users; uses are audit evidence; a
	// review is a sign-off, not a change of access.
	"POST /v1/breakglass":                  "ON",
	"GET /v1/breakglass/uses":              "ONA",
	"GET /v1/breakglass/uses/{id}":         "ONA",
	"POST /v1/breakglass/uses/{id}/review": "ONA",
	"GET /v1/sessions":                     "ONAH",
	"POST /v1/sessions/end":                "ONH",

	"GET /v1/audit":        "ONA",
	"GET /v1/audit/log":    "ONA",
	"GET /v1/audit/verify": "ONA",
	"GET /v1/audit/export": "ONA",
	"GET /v1/audit/sinks":  "ONA",

	"GET /v1/audit/search":                "ONA",
	"GET /v1/audit/archives":              "ONA",
	"POST /v1/audit/archive":              "O",
	"POST /v1/audit/archive/{id}/approve": "O",

	// The evidence report reads configuration and audit: auditors too.
	"GET /v1/reports/hipaa": "ONA",

	"POST /v1/policy/plan":        "ONAH", // a dry run changes nothing
	"POST /v1/policy/apply":       "ON",
	"POST /v1/policy/rollback":    "ON",
	"GET /v1/policy/versions":     "ONAH",
	"GET /v1/policy/versions/{n}": "ONAH",
	"GET /v1/policy/export":       "ONAH",

	// Access reviews: the reviewer reads and decides, and nothing else;
	// starting and closing (which applies revocations) manage access.
	"POST /v1/reviews":                       "ON",
	"GET /v1/reviews":                        "ONAR",
	"GET /v1/reviews/{id}":                   "ONAR",
	"POST /v1/reviews/{id}/lines/{n}/decide": "ONR",
	"POST /v1/reviews/{id}/close":            "ON",

	"POST /v1/admins":                "O",
	"GET /v1/admins":                 "OA",
	"GET /v1/admins/{name}":          "OA",
	"POST /v1/admins/{name}/disable": "O",
	"POST /v1/admins/{name}/enable":  "O",
	"DELETE /v1/admins/{name}":       "O",
	"POST /v1/admin-tokens":          "O",
	"GET /v1/admin-tokens":           "OA",
	"DELETE /v1/admin-tokens/{id}":   "O",
}

// publicRoutes carry their own credential in the body (or need none):
// health, agent enrollment, the sign-ins, a device's sign-out (by its
// certificate) and the list of identity providers a sign-in may use. Anything else registered without a
// permission is a bug; adding a public route means adding it here.
var publicRoutes = map[string]bool{
	"GET /healthz":               true,
	"POST /v1/enroll/gateway":    true,
	"POST /v1/login":             true,
	"POST /v1/logout":            true,
	"GET /v1/oidc/providers":     true,
	"POST /v1/login/oidc/start":  true,
	"POST /v1/login/oidc/device": true,
	"POST /v1/login/oidc":        true,
	"POST /v1/admin/login":       true,
	// Admin sign-in through an identity provider (adminoidc.go).
	"POST /v1/admin/login/oidc/start":  true,
	"POST /v1/admin/login/oidc/device": true,
	"POST /v1/admin/login/oidc":        true,
}

var roleLetters = map[auth.Role]byte{auth.RoleOwner: 'O', auth.RoleNetworkAdmin: 'N', auth.RoleAuditor: 'A', auth.RoleHelpdesk: 'H', auth.RoleReviewer: 'R'}

// tokenFor stores a standalone token of role (optionally narrowed) and
// returns its secret.
func tokenFor(t *testing.T, s store.Store, role auth.Role, ttl time.Duration, now time.Time, scopes ...string) (string, string) {
	t.Helper()
	secret, hash := auth.NewAdminToken()
	id := fmt.Sprintf("adt-%x", hash[:5])
	tok := store.AdminToken{ID: id, Name: "t-" + string(role), Role: string(role), Scopes: scopes, Hash: hash, CreatedBy: "test", CreatedAt: now}
	if ttl > 0 {
		tok.ExpiresAt = now.Add(ttl)
	}
	if err := s.CreateAdminToken(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	return secret, id
}

var pathParam = regexp.MustCompile(`\{[^}]+\}`)

// TestRoleMatrix calls every admin route the API registers with a token of
// each role and checks allow (anything but 401/403) or deny (403
// forbidden, naming the roles that would do). A route registered without
// a permission, or missing from roleSpec, fails.
func TestRoleMatrix(t *testing.T) {
	e := newEnv(t)
	routes := e.API.Routes()
	seen := map[string]bool{}
	for _, rt := range routes {
		seen[rt.Pattern] = true
		if rt.Permission == "" {
			if !publicRoutes[rt.Pattern] {
				t.Errorf("route %s is registered without a permission: register it with a.admin(permission, h), or add it to publicRoutes if it carries its own credential", rt.Pattern)
			}
			continue
		}
		spec, ok := roleSpec[rt.Pattern]
		if !ok {
			t.Errorf("admin route %s (permission %s) is missing from roleSpec: decide which roles may call it", rt.Pattern, rt.Permission)
			continue
		}
		method, path, _ := strings.Cut(rt.Pattern, " ")
		path = pathParam.ReplaceAllString(path, "x")
		for _, role := range auth.Roles {
			// A fresh token per call: logout revokes the one it uses.
			tok, _ := tokenFor(t, e.Store, role, time.Hour, e.Now())
			body := ""
			if method == http.MethodPost {
				body = "{}"
			}
			st, resp := e.raw(method, path, tok, body)
			allowed := strings.IndexByte(spec, roleLetters[role]) >= 0
			switch {
			case allowed && (st == 401 || st == 403 || st >= 500):
				t.Errorf("%s as %s: %d %s, want allowed", rt.Pattern, role, st, resp)
			case !allowed && st != 403:
				t.Errorf("%s as %s: %d %s, want 403", rt.Pattern, role, st, resp)
			case !allowed:
				var eb adminapi.ErrorBody
				json.Unmarshal([]byte(resp), &eb)
				if eb.Code != adminapi.CodeForbidden || !strings.Contains(eb.Error, string(rt.Permission)) ||
					!strings.Contains(eb.Error, "owner") || !strings.Contains(eb.Error, "role "+string(role)) {
					t.Errorf("%s as %s: body %s: want code forbidden naming the permission, the roles that have it and the caller's role", rt.Pattern, role, resp)
				}
			}
		}
	}
	for p := range roleSpec {
		if !seen[p] {
			t.Errorf("roleSpec has %s, which the API does not register", p)
		}
	}
	// Every denial is audited with its reason.
	denied := 0
	for _, ev := range e.audit("admin.auth") {
		if ev.Outcome == "failure" && strings.HasPrefix(ev.Details["reason"], "forbidden: needs ") && ev.Details["role"] != "" {
			denied++
		}
	}
	want := 0
	for _, spec := range roleSpec {
		want += len(auth.Roles) - len(spec)
	}
	if denied != want {
		t.Errorf("%d forbidden admin.auth events, want %d", denied, want)
	}
}

// TestScopedToken: a token narrowed below its role can do only what its
// scopes name, and cannot mint itself anything wider.
func TestScopedToken(t *testing.T) {
	e := newEnv(t)
	tok, _ := tokenFor(t, e.Store, auth.RoleNetworkAdmin, time.Hour, e.Now(), "policy.write")
	if st, body := e.raw("GET", "/v1/segments", tok, ""); st != 403 || !strings.Contains(body, "narrowed to policy.write") {
		t.Errorf("read with a policy.write-only token: %d %s", st, body)
	}
	if st, body := e.raw("POST", "/v1/segments", tok, `{"name":"clinical","cidrs":["10.20.0.0/24"]}`); st != 201 {
		t.Errorf("policy.write with a policy.write-only token: %d %s", st, body)
	}
	c := must[*adminapi.Client](t)(adminapi.New(e.URL, tok, e.CAPEM))
	defer c.Close()
	who := must[*adminapi.WhoAmI](t)(c.WhoAmI(t.Context()))
	if who.Role != "network-admin" || strings.Join(who.Permissions, ",") != "policy.write" || who.ExpiresAt.IsZero() {
		t.Errorf("whoami = %+v", who)
	}

	// Issuing: only within the issuer's own scope; scopes only narrow.
	ctx := t.Context()
	_, err := e.admin.CreateAdminToken(ctx, &adminapi.CreateAdminTokenRequest{Name: "ci", Role: "helpdesk", Scopes: []string{"policy.write"}, TTL: "1h"})
	wantCode(t, err, 400, adminapi.CodeInvalid, "does not grant policy.write")
	_, err = e.admin.CreateAdminToken(ctx, &adminapi.CreateAdminTokenRequest{Name: "ci", Role: "auditor"})
	wantCode(t, err, 400, adminapi.CodeInvalid, "ttl", "required")
	_, err = e.admin.CreateAdminToken(ctx, &adminapi.CreateAdminTokenRequest{Name: "ci", Role: "auditor", TTL: "91d"})
	wantCode(t, err, 400, adminapi.CodeInvalid, "at most 90d")
	_, err = e.admin.CreateAdminToken(ctx, &adminapi.CreateAdminTokenRequest{Name: "ci", Role: "root", TTL: "1h"})
	wantCode(t, err, 400, adminapi.CodeInvalid, "unknown role")
	ci := must[*adminapi.CreateAdminTokenResponse](t)(e.admin.CreateAdminToken(ctx, &adminapi.CreateAdminTokenRequest{
		Name: "siem-export", Role: "auditor", Scopes: []string{"audit.read"}, TTL: "30d"}))
	if !auth.LooksLikeAdminToken(ci.Token) || !ci.ExpiresAt.Equal(e.Now().Add(30*24*time.Hour)) || ci.CreatedBy != "admin:root" {
		t.Fatalf("token create = %+v", ci)
	}
	if st, _ := e.raw("GET", "/v1/audit", ci.Token, ""); st != 200 {
		t.Errorf("audit.read token reading audit: %d", st)
	}
	toks := must[[]adminapi.AdminToken](t)(e.admin.ListAdminTokens(ctx))
	for _, x := range toks {
		if x.ID == ci.ID && (x.Role != "auditor" || len(x.Scopes) != 1) {
			t.Errorf("listed %+v", x)
		}
	}
	if b, _ := json.Marshal(toks); strings.Contains(string(b), ci.Token) {
		t.Error("token list shows a secret")
	}
	if evs := e.audit("admin.admin_token.create"); len(evs) != 1 || evs[0].Subject != ci.ID || evs[0].Details["scopes"] != "audit.read" {
		t.Errorf("token create audit %+v", evs)
	}
}

// TestAdminTokenLifecycle: expired, revoked, disabled-account and deleted-
// account tokens are refused (401, audited with the reason); others work.
func TestAdminTokenLifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	tok, id := tokenFor(t, e.Store, auth.RoleHelpdesk, time.Hour, e.Now())
	if st, _ := e.raw("GET", "/v1/whoami", tok, ""); st != 200 {
		t.Fatalf("fresh token: %d", st)
	}
	// Expiry: valid until the instant before ExpiresAt.
	e.Advance(time.Hour - time.Microsecond)
	if st, _ := e.raw("GET", "/v1/whoami", tok, ""); st != 200 {
		t.Fatalf("token just before expiry: %d", st)
	}
	e.Advance(time.Microsecond)
	st, body := e.raw("GET", "/v1/whoami", tok, "")
	if st != 401 || !strings.Contains(body, "expired") || !strings.Contains(body, "cordonctl login --admin") {
		t.Fatalf("expired token: %d %s", st, body)
	}
	// Revoked.
	tok2, id2 := tokenFor(t, e.Store, auth.RoleAuditor, time.Hour, e.Now())
	if err := e.admin.RevokeAdminToken(ctx, id2); err != nil {
		t.Fatal(err)
	}
	wantCode(t, e.admin.RevokeAdminToken(ctx, id2), 404, adminapi.CodeNotFound)
	if st, body := e.raw("GET", "/v1/whoami", tok2, ""); st != 401 || !strings.Contains(body, "revoked") {
		t.Fatalf("revoked token: %d %s", st, body)
	}
	reasons := map[string]string{}
	for _, ev := range e.audit("admin.auth") {
		reasons[ev.Details["token"]] = ev.Details["reason"]
	}
	if reasons[id] != "token expired" || reasons[id2] != "token revoked" {
		t.Errorf("admin.auth reasons %v", reasons)
	}

	// A sign-in token dies with its account's disabling and deletion.
	a := newAdmin(t, e, "carol", "network-admin")
	login := a.login(t, e)
	if st, _ := e.raw("GET", "/v1/segments", login.Token, ""); st != 200 {
		t.Fatalf("sign-in token: %d", st)
	}
	must[*adminapi.Admin](t)(e.admin.SetAdminDisabled(ctx, "carol", true))
	if st, body := e.raw("GET", "/v1/segments", login.Token, ""); st != 401 || !strings.Contains(body, "disabled") {
		t.Fatalf("token of a disabled admin: %d %s", st, body)
	}
	e.Advance(30 * time.Second)
	_, err := e.agent.AdminLogin(ctx, &adminapi.AdminLoginRequest{Name: "carol", Password: adminPW, TOTP: a.code(t, e.Now())})
	wantCode(t, err, 401, adminapi.CodeUnauthorized, "disabled")
	must[*adminapi.Admin](t)(e.admin.SetAdminDisabled(ctx, "carol", false))
	if st, _ := e.raw("GET", "/v1/segments", login.Token, ""); st != 200 {
		t.Fatalf("token after re-enable: %d", st)
	}
	if err := e.admin.DeleteAdmin(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.raw("GET", "/v1/segments", login.Token, ""); st != 401 {
		t.Fatalf("token of a deleted admin: %d", st)
	}

	// Logout revokes the token used.
	tok3, _ := tokenFor(t, e.Store, auth.RoleAuditor, time.Hour, e.Now())
	if st, _ := e.raw("POST", "/v1/admin/logout", tok3, ""); st != 204 {
		t.Fatalf("logout: %d", st)
	}
	if st, _ := e.raw("GET", "/v1/whoami", tok3, ""); st != 401 {
		t.Fatalf("token after logout: %d", st)
	}
	if strings.Contains(e.Logs(), tok) || strings.Contains(e.Logs(), login.Token) {
		t.Error("a token appears in the log")
	}
}

const adminPW = "admin passphrase long enough"

type testAdmin struct {
	name, secret string
}

func newAdmin(t *testing.T, e *env, name, role string) testAdmin {
	t.Helper()
	r := must[*adminapi.CreateAdminResponse](t)(e.admin.CreateAdmin(t.Context(), &adminapi.CreateAdminRequest{Name: name, Role: role, Password: adminPW}))
	if r.Role != role || r.TOTPSecret == "" || !strings.HasPrefix(r.TOTPURI, "otpauth://totp/") {
		t.Fatalf("create admin = %+v", r)
	}
	return testAdmin{name: name, secret: r.TOTPSecret}
}

func (a testAdmin) code(t *testing.T, at time.Time) string {
	t.Helper()
	c, err := auth.TOTPCode(a.secret, at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (a testAdmin) login(t *testing.T, e *env) *adminapi.AdminLoginResponse {
	t.Helper()
	return must[*adminapi.AdminLoginResponse](t)(e.agent.AdminLogin(t.Context(), &adminapi.AdminLoginRequest{Name: a.name, Password: adminPW, TOTP: a.code(t, e.Now())}))
}

// TestAdminLogin: sign-in with password and TOTP gives a token of the
// account's role that expires after the session TTL; wrong and replayed
// codes fail; one step of clock skew either way is accepted, two are not.
func TestAdminLogin(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	a := newAdmin(t, e, "alice", "helpdesk")
	_, err := e.admin.CreateAdmin(ctx, &adminapi.CreateAdminRequest{Name: "alice", Role: "owner", Password: adminPW})
	wantCode(t, err, 409, adminapi.CodeConflict)
	_, err = e.admin.CreateAdmin(ctx, &adminapi.CreateAdminRequest{Name: "bob", Role: "owner", Password: "short"})
	wantCode(t, err, 400, adminapi.CodeInvalid, "password")

	resp := must[*adminapi.AdminLoginResponse](t)(e.agent.AdminLogin(ctx, &adminapi.AdminLoginRequest{Name: "alice", Password: adminPW, TOTP: a.code(t, e.Now())}))
	if resp.Role != "helpdesk" || !resp.ExpiresAt.Equal(e.Now().Add(8*time.Hour)) || !auth.LooksLikeAdminToken(resp.Token) {
		t.Fatalf("login = %+v", resp)
	}
	c := must[*adminapi.Client](t)(adminapi.New(e.URL, resp.Token, e.CAPEM))
	defer c.Close()
	who := must[*adminapi.WhoAmI](t)(c.WhoAmI(ctx))
	if who.Actor != "admin:alice" || who.Admin != "alice" || who.Role != "helpdesk" || !who.ExpiresAt.Equal(resp.ExpiresAt) || who.TokenID != resp.TokenID {
		t.Fatalf("whoami = %+v", who)
	}
	// The helpdesk token cannot change policy, can end sessions.
	_, err = c.CreateSegment(ctx, &adminapi.CreateSegmentRequest{Name: "x", CIDRs: []string{"10.0.0.0/24"}})
	wantCode(t, err, 403, adminapi.CodeForbidden, "policy.write", "owner or network-admin", "role helpdesk")
	if _, err := c.EndSessions(ctx, adminapi.EndSessionsRequest{User: "nobody"}); err != nil {
		t.Fatalf("helpdesk ending sessions: %v", err)
	}
	// Expires after the session TTL.
	e.Advance(8 * time.Hour)
	_, err = c.WhoAmI(ctx)
	wantCode(t, err, 401, adminapi.CodeUnauthorized, "expired")

	// A shorter TTL may be asked for, not a longer one.
	e.Advance(30 * time.Second)
	short := must[*adminapi.AdminLoginResponse](t)(e.agent.AdminLogin(ctx, &adminapi.AdminLoginRequest{Name: "alice", Password: adminPW, TOTP: a.code(t, e.Now()), TTL: "15m"}))
	if !short.ExpiresAt.Equal(e.Now().Add(15 * time.Minute)) {
		t.Fatalf("short login expires %v", short.ExpiresAt)
	}
	e.Advance(30 * time.Second)
	_, err = e.agent.AdminLogin(ctx, &adminapi.AdminLoginRequest{Name: "alice", Password: adminPW, TOTP: a.code(t, e.Now()), TTL: "9h"})
	wantCode(t, err, 400, adminapi.CodeInvalid, "longer")

	// Replay of the code just used (same 30 s step): refused.
	e.Advance(30 * time.Second)
	code := a.code(t, e.Now())
	must[*adminapi.AdminLoginResponse](t)(e.agent.AdminLogin(ctx, &adminapi.AdminLoginRequest{Name: "alice", Password: adminPW, TOTP: code}))
	_, err = e.agent.AdminLogin(ctx, &adminapi.AdminLoginRequest{Name: "alice", Password: adminPW, TOTP: code})
	wantCode(t, err, 401, adminapi.CodeUnauthorized, "admin sign-in failed")

	// Clock skew: the authenticator 30 s behind or ahead is accepted, 60 s
	// is not.
	for _, tc := range []struct {
		skew time.Duration
		ok   bool
	}{{-30 * time.Second, true}, {30 * time.Second, true}, {-60 * time.Second, false}, {60 * time.Second, false}} {
		e.Advance(2 * time.Minute) // past every step used so far
		_, err := e.agent.AdminLogin(ctx, &adminapi.AdminLoginRequest{Name: "alice", Password: adminPW, TOTP: a.code(t, e.Now().Add(tc.skew))})
		if tc.ok && err != nil || !tc.ok && err == nil {
			t.Errorf("skew %v: err = %v, want ok=%v", tc.skew, err, tc.ok)
		}
	}

	// Wrong code, wrong password, unknown admin: one answer; audited.
	e.Advance(2 * time.Minute)
	wrong := []byte(a.code(t, e.Now()))
	wrong[0] = '0' + (wrong[0]-'0'+5)%10
	for _, req := range []adminapi.AdminLoginRequest{
		{Name: "alice", Password: adminPW, TOTP: string(wrong)},
		{Name: "alice", Password: "wrong password!!", TOTP: a.code(t, e.Now())},
		{Name: "ghost", Password: adminPW, TOTP: a.code(t, e.Now())},
	} {
		_, err := e.agent.AdminLogin(ctx, &req)
		wantCode(t, err, 401, adminapi.CodeUnauthorized, "admin sign-in failed")
	}
	reasons := map[string]int{}
	for _, ev := range e.audit("admin.login") {
		reasons[ev.Outcome+":"+ev.Details["reason"]]++
	}
	for _, r := range []string{"failure:totp replayed", "failure:wrong totp", "failure:wrong password", "failure:unknown admin", "success:"} {
		if reasons[r] == 0 {
			t.Errorf("no admin.login %s event: %v", r, reasons)
		}
	}
	if strings.Contains(e.Logs(), adminPW) {
		t.Error("password in the log")
	}
}

// TestAdminSelfProtection: an owner cannot disable or delete the
// account they are signed in with.
func TestAdminSelfProtection(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	a := newAdmin(t, e, "olivia", "owner")
	resp := must[*adminapi.AdminLoginResponse](t)(e.agent.AdminLogin(ctx, &adminapi.AdminLoginRequest{Name: "olivia", Password: adminPW, TOTP: a.code(t, e.Now())}))
	c := must[*adminapi.Client](t)(adminapi.New(e.URL, resp.Token, e.CAPEM))
	defer c.Close()
	_, err := c.SetAdminDisabled(ctx, "olivia", true)
	wantCode(t, err, 409, adminapi.CodeConflict, "your own")
	wantCode(t, c.DeleteAdmin(ctx, "olivia"), 409, adminapi.CodeConflict, "your own")
	// A token name may not pass for an account in the audit trail.
	_, err = c.CreateAdminToken(ctx, &adminapi.CreateAdminTokenRequest{Name: "olivia", Role: "auditor", TTL: "1h"})
	wantCode(t, err, 409, adminapi.CodeConflict, "admin account")
	// Nor an account for a token in use.
	must[*adminapi.CreateAdminTokenResponse](t)(c.CreateAdminToken(ctx, &adminapi.CreateAdminTokenRequest{Name: "ci", Role: "auditor", TTL: "1h"}))
	_, err = c.CreateAdmin(ctx, &adminapi.CreateAdminRequest{Name: "ci", Role: "auditor", Password: adminPW})
	wantCode(t, err, 409, adminapi.CodeConflict, "admin token")
}

// TestRecoveryCodes: codes come with the user, each signs in once in place
// of the TOTP code (method recovery-code, counted as MFA), regenerating
// voids the old ones.
func TestRecoveryCodes(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	const pw = "correct horse battery"
	u := must[*adminapi.CreateUserResponse](t)(e.admin.CreateUser(ctx, &adminapi.CreateUserRequest{Name: "nurse", Password: pw}))
	if len(u.RecoveryCodes) != 10 {
		t.Fatalf("%d recovery codes", len(u.RecoveryCodes))
	}
	req := func(code string) *controlproto.LoginRequest {
		return &controlproto.LoginRequest{
			Username: "nurse", Password: pw, RecoveryCode: code,
			DeviceEnroll: controlproto.DeviceEnroll{Hostname: "ward3-pc", PublicKey: wgPub(t), CSR: csr(t, "x")},
		}
	}
	resp := must[*controlproto.EnrollResponse](t)(e.agent.Login(ctx, req(strings.ToUpper(u.RecoveryCodes[3]))))
	sess, err := e.Store.ListSessions(ctx, store.SessionFilter{DeviceID: resp.ID})
	if err != nil || len(sess) != 1 || sess[0].Method != "recovery-code" || !sess[0].MFAAt.Equal(e.Now()) {
		t.Fatalf("session after recovery-code sign-in: %+v %v", sess, err)
	}
	if evs := e.audit("auth.recovery_code"); len(evs) != 1 || evs[0].Details["remaining"] != "9" {
		t.Errorf("auth.recovery_code audit %+v", evs)
	}
	// Used once: never again.
	_, err = e.agent.Login(ctx, req(u.RecoveryCodes[3]))
	wantCode(t, err, 401, adminapi.CodeUnauthorized, "login failed")
	// Wrong password with a good code: refused, and the code is not spent.
	bad := req(u.RecoveryCodes[4])
	bad.Password = "wrong password!!"
	_, err = e.agent.Login(ctx, bad)
	wantCode(t, err, 401, adminapi.CodeUnauthorized)
	// Both a TOTP code and a recovery code: a usage error.
	both := req(u.RecoveryCodes[4])
	both.TOTP = "123456"
	_, err = e.agent.Login(ctx, both)
	wantCode(t, err, 400, adminapi.CodeInvalid, "not both")

	// Regenerate: the old codes die, the new ones work.
	regen := must[*adminapi.RecoveryCodesResponse](t)(e.admin.RegenerateRecoveryCodes(ctx, "nurse"))
	if len(regen.Codes) != 10 || regen.Codes[0] == u.RecoveryCodes[0] {
		t.Fatalf("regenerate = %+v", regen)
	}
	_, err = e.agent.Login(ctx, req(u.RecoveryCodes[4]))
	wantCode(t, err, 401, adminapi.CodeUnauthorized)
	must[*controlproto.EnrollResponse](t)(e.agent.Login(ctx, req(regen.Codes[0])))
	_, err = e.admin.RegenerateRecoveryCodes(ctx, "ghost")
	wantCode(t, err, 404, adminapi.CodeNotFound)

	reasons := map[string]int{}
	for _, ev := range e.audit("auth.login") {
		if ev.Outcome == "failure" {
			reasons[ev.Details["reason"]]++
		}
	}
	if reasons["recovery code already used"] != 1 || reasons["wrong recovery code"] != 1 || reasons["wrong password"] != 1 {
		t.Errorf("failure reasons %v", reasons)
	}
	for _, c := range append(u.RecoveryCodes, regen.Codes...) {
		if strings.Contains(e.Logs(), c) {
			t.Fatal("a recovery code appears in the log")
		}
	}
}

// TestRecoveryCodeConcurrent: 50 simultaneous sign-ins with one recovery
// code: exactly one succeeds.
func TestRecoveryCodeConcurrent(t *testing.T) {
	e := newEnv(t, apitest.Options{Throttle: auth.NewThrottle(auth.ThrottleConfig{FreeUserAttempts: 1000, FreeIPAttempts: 1000})})
	ctx := t.Context()
	const pw = "correct horse battery"
	u := must[*adminapi.CreateUserResponse](t)(e.admin.CreateUser(ctx, &adminapi.CreateUserRequest{Name: "nurse", Password: pw}))
	const n = 50
	reqs := make([]*controlproto.LoginRequest, n)
	for i := range reqs {
		reqs[i] = &controlproto.LoginRequest{
			Username: "nurse", Password: pw, RecoveryCode: u.RecoveryCodes[0],
			DeviceEnroll: controlproto.DeviceEnroll{Hostname: fmt.Sprintf("pc-%d", i), PublicKey: wgPub(t), CSR: csr(t, "x")},
		}
	}
	errs := together(n, func(i int) error {
		_, err := e.agent.Login(ctx, reqs[i])
		return err
	})
	okN := 0
	for i, err := range errs {
		switch {
		case err == nil:
			okN++
		case !adminapi.IsCode(err, adminapi.CodeUnauthorized):
			t.Errorf("sign-in %d: %v", i, err)
		}
	}
	if okN != 1 {
		t.Fatalf("%d of %d concurrent sign-ins with one recovery code succeeded, want exactly 1", okN, n)
	}
	devs := must[[]adminapi.Device](t)(e.admin.ListDevices(ctx))
	if len(devs) != 1 {
		t.Fatalf("%d devices enrolled, want 1", len(devs))
	}
}

// TestLoginAlert: the threshold-th failure of one user within the window
// raises exactly one auth.alert (and a WARN log line); further failures in
// the window raise none; admin sign-ins are counted too.
func TestLoginAlert(t *testing.T) {
	e := newLoginEnv(t, apitest.Options{
		LoginAlert: auth.NewFailureAlert(auth.AlertConfig{Threshold: 5, Window: 15 * time.Minute}),
		Throttle:   auth.NewThrottle(auth.ThrottleConfig{FreeUserAttempts: 100, FreeIPAttempts: 100}),
	})
	ctx := t.Context()
	alerts := func() []store.AuditEvent { return e.audit("auth.alert") }
	for i := range 4 {
		r := e.req()
		r.Password = "wrong password!!"
		_, err := e.agent.Login(ctx, r)
		wantCode(t, err, 401, adminapi.CodeUnauthorized)
		if n := len(alerts()); n != 0 {
			t.Fatalf("alert after %d failures", i+1)
		}
		e.Advance(time.Minute)
	}
	r := e.req()
	r.Password = "wrong password!!"
	e.agent.Login(ctx, r)
	got := alerts()
	// Both the user and the source (127.0.0.1) reached 5.
	if len(got) != 2 {
		t.Fatalf("alerts after 5 failures: %+v", got)
	}
	var user store.AuditEvent
	for _, ev := range got {
		if ev.Details["kind"] == "user" {
			user = ev
		}
	}
	if user.Outcome != "alert" || user.Subject != "nurse" || user.Details["failures"] != "5" || user.Details["window"] != "15m0s" || user.Details["source"] != "127.0.0.1" {
		t.Fatalf("user alert %+v", user)
	}
	if !strings.Contains(e.Logs(), "level=WARN") || !strings.Contains(e.Logs(), "repeated failed sign-ins") {
		t.Error("no WARN log line for the alert")
	}
	// More failures in the window: no new alert.
	for range 5 {
		r := e.req()
		r.Password = "wrong password!!"
		e.agent.Login(ctx, r)
	}
	if n := len(alerts()); n != 2 {
		t.Fatalf("%d alerts, want still 2 within the window", n)
	}
	// Admin sign-in failures count under their own name.
	e.Advance(time.Hour)
	for range 5 {
		e.agent.AdminLogin(ctx, &adminapi.AdminLoginRequest{Name: "root", Password: "wrong password!!", TOTP: "123456"})
	}
	var adminAlert bool
	for _, ev := range alerts() {
		if ev.Details["account"] == "admin" && ev.Details["kind"] == "user" && ev.Subject == "admin/root" {
			adminAlert = true
		}
	}
	if !adminAlert {
		t.Errorf("no alert for admin sign-in failures: %+v", alerts())
	}
}
