package api_test

import (
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/apitest"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/internal/oidctest"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"golang.org/x/oauth2"
)

// adminOIDC signs admin account name in through the test IdP as IdP user
// user (code + PKCE, as cordonctl does) and returns the controller's
// answer.
func (e *env) adminOIDC(idp *oidctest.IdP, name, user string) (*adminapi.AdminLoginResponse, error) {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	codes := make(chan string, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		codes <- r.URL.Query().Get("code")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	v := oauth2.GenerateVerifier()
	var start controlproto.OIDCStartResponse
	if err := e.agent.Do(e.t.Context(), http.MethodPost, "/v1/admin/login/oidc/start", controlproto.OIDCStartRequest{
		IdP: "test", RedirectURI: "http://" + ln.Addr().String() + "/callback", CodeChallenge: oauth2.S256ChallengeFromVerifier(v),
	}, &start); err != nil {
		return nil, err
	}
	if err := idp.Browser(user, "pw")(e.t.Context(), start.AuthURL); err != nil {
		e.t.Fatal(err)
	}
	var out adminapi.AdminLoginResponse
	err = e.agent.Do(e.t.Context(), http.MethodPost, "/v1/admin/login/oidc", adminapi.AdminOIDCLoginRequest{
		Name: name, LoginID: start.LoginID, Code: <-codes, CodeVerifier: v,
	}, &out)
	return &out, err
}

func newAdminOIDCEnv(t *testing.T) (*env, *oidctest.IdP) {
	t.Helper()
	idp, err := oidctest.Start(oidctest.Options{DevicePoll: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	for _, u := range []string{"ada", "eve", "pat", "dan"} {
		idp.AddUser(oidctest.User{Username: u, Password: "pw", MFA: true})
	}
	idp.AddUser(oidctest.User{Username: "nomfa", Password: "pw"})
	idp.AddUser(oidctest.User{Username: "J.Smith", Password: "pw", MFA: true})
	return newEnv(t, apitest.Options{OIDCIssuer: idp.Issuer}), idp
}

// TestAdminOIDCLogin: an IdP admin account signs in through the IdP with
// MFA, gets a token of its role that lives as long as a local sign-in's,
// and is bound to its IdP subject at the first sign-in.
func TestAdminOIDCLogin(t *testing.T) {
	e, idp := newAdminOIDCEnv(t)
	ctx := t.Context()
	created := must[*adminapi.CreateAdminResponse](t)(e.admin.CreateAdmin(ctx, &adminapi.CreateAdminRequest{Name: "ada", Role: "auditor", IdP: "test"}))
	if created.TOTPSecret != "" || created.IdP != "test" || created.Subject != "" {
		t.Fatalf("created IdP admin: %+v", created)
	}
	acct := must[store.Admin](t)(e.Store.GetAdmin(ctx, "ada"))
	if acct.PasswordHash != "" || acct.TOTPSecret != "" {
		t.Fatalf("IdP admin has local credentials: %+v", acct)
	}

	resp, err := e.adminOIDC(idp, "ada", "ada")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Role != "auditor" || resp.Name != "ada" || resp.ExpiresAt.Sub(e.Now()) != adminapi.DefaultAdminSessionTTL {
		t.Fatalf("login response: %+v (now %s)", resp, e.Now())
	}
	if got := must[store.Admin](t)(e.Store.GetAdmin(ctx, "ada")); got.Subject != "sub-ada" {
		t.Fatalf("not bound at first sign-in: %+v", got)
	}
	if n := len(e.audit("admin.idp.bind")); n != 1 {
		t.Errorf("%d admin.idp.bind events, want 1", n)
	}
	ok := e.audit("admin.login")
	if len(ok) != 1 || ok[0].Outcome != "success" || ok[0].Details["method"] != "oidc:test" || ok[0].Actor != "admin:ada" {
		t.Fatalf("admin.login audit: %+v", ok)
	}

	// The token works on an auditor route and nowhere else.
	c := must[*adminapi.Client](t)(adminapi.New(e.URL, resp.Token, e.CAPEM))
	t.Cleanup(c.Close)
	if _, err := c.ListAudit(ctx, adminapi.AuditQuery{}); err != nil {
		t.Fatalf("auditor route: %v", err)
	}
	_, err = c.CreateSegment(ctx, &adminapi.CreateSegmentRequest{Name: "x", CIDRs: []string{"10.0.0.0/24"}})
	wantCode(t, err, http.StatusForbidden, adminapi.CodeForbidden, "network-admin")

	// An IdP account has no password: the local sign-in refuses it like a
	// wrong one.
	_, err = e.agent.AdminLogin(ctx, &adminapi.AdminLoginRequest{Name: "ada", Password: "anything", TOTP: "123456"})
	wantCode(t, err, http.StatusUnauthorized, adminapi.CodeUnauthorized, "wrong name, password")

	// Once bound, the subject decides, not the name: ada renamed at the
	// IdP still signs in; another IdP user now called "ada" does not.
	idp.AddUser(oidctest.User{ID: "sub-ada", Username: "ada-renamed", Password: "pw", MFA: true})
	if _, err := e.adminOIDC(idp, "ada", "ada-renamed"); err != nil {
		t.Fatalf("bound subject under a new name: %v", err)
	}
	idp.AddUser(oidctest.User{ID: "sub-imposter", Username: "ada", Password: "pw", MFA: true})
	_, err = e.adminOIDC(idp, "ada", "ada")
	wantCode(t, err, http.StatusUnauthorized, adminapi.CodeUnauthorized, "does not sign in through test as this identity-provider user")

	// A subject given at creation is the only one that may sign in.
	must[*adminapi.CreateAdminResponse](t)(e.admin.CreateAdmin(ctx, &adminapi.CreateAdminRequest{Name: "pat", Role: "owner", IdP: "test", Subject: "sub-someone-else"}))
	_, err = e.adminOIDC(idp, "pat", "pat")
	wantCode(t, err, http.StatusUnauthorized, adminapi.CodeUnauthorized, "does not sign in through test")
	must[*adminapi.CreateAdminResponse](t)(e.admin.CreateAdmin(ctx, &adminapi.CreateAdminRequest{Name: "dan", Role: "helpdesk", IdP: "test", Subject: "sub-dan"}))
	if r, err := e.adminOIDC(idp, "dan", "dan"); err != nil || r.Role != "helpdesk" {
		t.Fatalf("pinned subject: %+v %v", r, err)
	}
}

func TestAdminOIDCLoginRefusals(t *testing.T) {
	e, idp := newAdminOIDCEnv(t)
	ctx := t.Context()
	mk := func(name string, req adminapi.CreateAdminRequest) {
		t.Helper()
		req.Name, req.Role = name, "network-admin"
		must[*adminapi.CreateAdminResponse](t)(e.admin.CreateAdmin(ctx, &req))
	}
	mk("eve", adminapi.CreateAdminRequest{Password: "a long enough local password 1"})
	mk("ada", adminapi.CreateAdminRequest{IdP: "test"})
	mk("nomfa", adminapi.CreateAdminRequest{IdP: "test"})

	// No such account; a local account; another IdP user's name before
	// binding (binding by name is only for the account's own name).
	_, err := e.adminOIDC(idp, "nobody", "ada")
	wantCode(t, err, http.StatusUnauthorized, adminapi.CodeUnauthorized, "cordonctl admin create")
	_, err = e.adminOIDC(idp, "eve", "eve")
	wantCode(t, err, http.StatusUnauthorized, adminapi.CodeUnauthorized, "does not sign in through test")
	_, err = e.adminOIDC(idp, "ada", "eve")
	wantCode(t, err, http.StatusUnauthorized, adminapi.CodeUnauthorized, "does not sign in through test")
	if got := must[store.Admin](t)(e.Store.GetAdmin(ctx, "ada")); got.Subject != "" {
		t.Fatalf("a refused sign-in bound the account: %+v", got)
	}

	// A user name that only derives to the account name ("J.Smith" makes
	// "j-smith") does not bind it: binding takes the claim's own value.
	mk("j-smith", adminapi.CreateAdminRequest{IdP: "test"})
	_, err = e.adminOIDC(idp, "j-smith", "J.Smith")
	wantCode(t, err, http.StatusUnauthorized, adminapi.CodeUnauthorized, "does not sign in through test")
	if got := must[store.Admin](t)(e.Store.GetAdmin(ctx, "j-smith")); got.Subject != "" {
		t.Fatalf("a look-alike user name bound the account: %+v", got)
	}

	// No MFA at the IdP.
	_, err = e.adminOIDC(idp, "nomfa", "nomfa")
	wantCode(t, err, http.StatusUnauthorized, adminapi.CodeUnauthorized, "no second factor", "mfa_amr_values")
	if got := must[store.Admin](t)(e.Store.GetAdmin(ctx, "nomfa")); got.Subject != "" {
		t.Fatalf("a sign-in without MFA bound the account: %+v", got)
	}

	// Disabled.
	must[*adminapi.Admin](t)(e.admin.SetAdminDisabled(ctx, "ada", true))
	_, err = e.adminOIDC(idp, "ada", "ada")
	wantCode(t, err, http.StatusUnauthorized, adminapi.CodeUnauthorized, "disabled")

	fails := e.audit("admin.login")
	if len(fails) != 6 {
		t.Fatalf("%d admin.login events, want 6: %+v", len(fails), fails)
	}
	for _, f := range fails {
		if f.Outcome != "failure" || f.Details["method"] != "oidc:test" || f.Details["reason"] == "" {
			t.Errorf("refusal audit: %+v", f)
		}
	}

	// Creating: unknown IdP, both password and IdP, subject without IdP.
	for _, req := range []adminapi.CreateAdminRequest{
		{Name: "x1", Role: "owner", IdP: "nope"},
		{Name: "x2", Role: "owner", IdP: "test", Password: "a long enough local password 1"},
		{Name: "x3", Role: "owner", Subject: "sub-x", Password: "a long enough local password 1"},
	} {
		_, err := e.admin.CreateAdmin(ctx, &req)
		wantCode(t, err, http.StatusBadRequest, adminapi.CodeInvalid)
	}
	// One IdP user is at most one admin account.
	_, err = e.admin.CreateAdmin(ctx, &adminapi.CreateAdminRequest{Name: "ada2", Role: "owner", IdP: "test", Subject: "sub-ada"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.admin.CreateAdmin(ctx, &adminapi.CreateAdminRequest{Name: "ada3", Role: "owner", IdP: "test", Subject: "sub-ada"})
	wantCode(t, err, http.StatusConflict, adminapi.CodeConflict, "sub-ada")
}

// TestAdminOIDCDeviceFlow: a headless admin signs in with the device
// authorization grant, as cordonctl login --device-code does.
func TestAdminOIDCDeviceFlow(t *testing.T) {
	e, idp := newAdminOIDCEnv(t)
	ctx := t.Context()
	must[*adminapi.CreateAdminResponse](t)(e.admin.CreateAdmin(ctx, &adminapi.CreateAdminRequest{Name: "ada", Role: "helpdesk", IdP: "test"}))
	var ds controlproto.OIDCDeviceResponse
	if err := e.agent.Do(ctx, http.MethodPost, "/v1/admin/login/oidc/device", controlproto.OIDCDeviceRequest{IdP: "test"}, &ds); err != nil {
		t.Fatal(err)
	}
	poll := func() (*adminapi.AdminLoginResponse, error) {
		var out adminapi.AdminLoginResponse
		err := e.agent.Do(ctx, http.MethodPost, "/v1/admin/login/oidc", adminapi.AdminOIDCLoginRequest{Name: "ada", LoginID: ds.LoginID}, &out)
		return &out, err
	}
	_, err := poll()
	wantCode(t, err, http.StatusBadRequest, controlproto.OIDCPending)
	if err := idp.ApproveDevice(ctx, ds.UserCode, "ada", "pw"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		time.Sleep(time.Duration(ds.Interval) * time.Second)
		resp, err := poll()
		if err == nil {
			if resp.Name != "ada" || resp.Role != "helpdesk" {
				t.Fatalf("device sign-in: %+v", resp)
			}
			return
		}
		var ae *adminapi.Error
		if !errors.As(err, &ae) || ae.Code != controlproto.OIDCPending && ae.Code != controlproto.OIDCSlowDown || time.Now().After(deadline) {
			t.Fatalf("poll: %v", err)
		}
	}
}
