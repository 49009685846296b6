package api_test

import (
	"context"
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

func newOIDCEnv(t *testing.T) (*env, *oidctest.IdP) {
	t.Helper()
	idp, err := oidctest.Start(oidctest.Options{DevicePoll: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	idp.AddUser(oidctest.User{Username: "alice", Password: "pw", Email: "alice@hospital.example", Groups: []string{"Physicians"}})
	idp.AddUser(oidctest.User{Username: "carol", Password: "pw"})
	idp.AddUser(oidctest.User{Username: "bob", Password: "pw", MFA: true})
	return newEnv(t, apitest.Options{OIDCIssuer: idp.Issuer}), idp
}

// oidcCode runs a code+PKCE sign-in the way the client does and returns
// the controller's answer.
func (e *env) oidcCode(idp *oidctest.IdP, user string, verifier func(string) string) (*controlproto.EnrollResponse, error) {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	codes := make(chan [2]string, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		codes <- [2]string{r.URL.Query().Get("code"), r.URL.Query().Get("state")}
	})}
	go srv.Serve(ln)
	defer srv.Close()
	v := oauth2.GenerateVerifier()
	var start controlproto.OIDCStartResponse
	if err := e.agent.Do(e.t.Context(), http.MethodPost, "/v1/login/oidc/start", controlproto.OIDCStartRequest{
		IdP: "test", RedirectURI: "http://" + ln.Addr().String() + "/callback", CodeChallenge: oauth2.S256ChallengeFromVerifier(v),
	}, &start); err != nil {
		return nil, err
	}
	if err := idp.Browser(user, "pw")(e.t.Context(), start.AuthURL); err != nil {
		e.t.Fatal(err)
	}
	got := <-codes
	if got[1] != start.State {
		e.t.Fatalf("state %q, want %q", got[1], start.State)
	}
	if verifier != nil {
		v = verifier(v)
	}
	var out controlproto.EnrollResponse
	err = e.agent.Do(e.t.Context(), http.MethodPost, "/v1/login/oidc", controlproto.OIDCLoginRequest{
		LoginID: start.LoginID, Code: got[0], CodeVerifier: v,
		DeviceEnroll: controlproto.DeviceEnroll{Hostname: "ward3-pc", PublicKey: wgPub(e.t), CSR: csr(e.t, "x")},
	}, &out)
	return &out, err
}

func TestOIDCLogin(t *testing.T) {
	e, idp := newOIDCEnv(t)
	ctx := t.Context()
	var provs controlproto.OIDCProviders
	if err := e.agent.Do(ctx, http.MethodGet, "/v1/oidc/providers", nil, &provs); err != nil || len(provs.Providers) != 1 || provs.Providers[0].Issuer != idp.Issuer {
		t.Fatalf("providers: %+v %v", provs, err)
	}

	resp, err := e.oidcCode(idp, "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.User != "alice" || resp.Certificate == "" {
		t.Fatalf("enroll response: %+v", resp)
	}
	u := must[store.User](t)(e.Store.GetUser(ctx, "alice"))
	if u.PasswordHash != "" || u.TOTPSecret != "" {
		t.Errorf("OIDC user has local credentials: %+v", u)
	}
	id := must[store.Identity](t)(e.Store.GetIdentity(ctx, "test", "sub-alice"))
	if id.User != "alice" || len(id.Groups) != 1 || id.Groups[0] != "Physicians" || id.RefreshToken == "" {
		t.Errorf("identity: %+v", id)
	}
	ss := must[[]store.Session](t)(e.Store.ListSessions(ctx, store.SessionFilter{User: "alice", ActiveOnly: true}))
	if len(ss) != 1 || ss[0].Method != "oidc:test" || !ss[0].MFAAt.IsZero() {
		t.Errorf("sessions: %+v", ss)
	}
	if n := len(e.audit("auth.idp.link")); n != 1 {
		t.Errorf("%d auth.idp.link events, want 1", n)
	}

	// The user has no local password: a password login must fail like any
	// wrong password.
	err = e.agent.Do(ctx, http.MethodPost, "/v1/login", controlproto.LoginRequest{Username: "alice", Password: "", TOTP: "123456",
		DeviceEnroll: controlproto.DeviceEnroll{Hostname: "x", PublicKey: wgPub(t), CSR: csr(t, "x")}}, nil)
	var ae *adminapi.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized && ae.Status != http.StatusBadRequest {
		t.Errorf("password login of an OIDC user: %v", err)
	}
	err = e.agent.Do(ctx, http.MethodPost, "/v1/login", controlproto.LoginRequest{Username: "alice", Password: "anything", TOTP: "123456",
		DeviceEnroll: controlproto.DeviceEnroll{Hostname: "x", PublicKey: wgPub(t), CSR: csr(t, "x")}}, nil)
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Errorf("password login of an OIDC user: %v, want 401", err)
	}

	// MFA at the IdP shows in the session.
	if _, err := e.oidcCode(idp, "bob", nil); err != nil {
		t.Fatal(err)
	}
	ss = must[[]store.Session](t)(e.Store.ListSessions(ctx, store.SessionFilter{User: "bob", ActiveOnly: true}))
	if len(ss) != 1 || ss[0].MFAAt.IsZero() {
		t.Errorf("bob's session (amr otp): %+v", ss)
	}

	// A PKCE verifier other than the one challenged is refused.
	_, err = e.oidcCode(idp, "alice", func(string) string { return oauth2.GenerateVerifier() })
	wantCode(t, err, http.StatusUnauthorized, adminapi.CodeUnauthorized, "invalid_grant")
}

func TestOIDCLoginRefusals(t *testing.T) {
	e, idp := newOIDCEnv(t)
	ctx := t.Context()

	// A local account of the same name is never taken over.
	must[struct{}](t)(struct{}{}, e.Store.CreateUser(ctx, store.User{Name: "carol", PasswordHash: "x"}))
	_, err := e.oidcCode(idp, "carol", nil)
	wantCode(t, err, http.StatusConflict, adminapi.CodeConflict, "username_prefix")

	// A user disabled in Cordon cannot sign in through the IdP either.
	if _, err := e.oidcCode(idp, "alice", nil); err != nil {
		t.Fatal(err)
	}
	must[[]store.Session](t)(e.Store.SetUserDisabled(ctx, "alice", true, time.Now()))
	_, err = e.oidcCode(idp, "alice", nil)
	wantCode(t, err, http.StatusUnauthorized, adminapi.CodeUnauthorized, "disabled")

	// Unknown login IDs and providers.
	err = e.agent.Do(ctx, http.MethodPost, "/v1/login/oidc", controlproto.OIDCLoginRequest{LoginID: "login-nope", Code: "c", CodeVerifier: "v",
		DeviceEnroll: controlproto.DeviceEnroll{Hostname: "x", PublicKey: wgPub(t), CSR: csr(t, "x")}}, nil)
	wantCode(t, err, http.StatusBadRequest, adminapi.CodeInvalid, "start again")
	err = e.agent.Do(ctx, http.MethodPost, "/v1/login/oidc/start", controlproto.OIDCStartRequest{IdP: "okta", RedirectURI: "http://127.0.0.1:1/cb", CodeChallenge: "x"}, nil)
	wantCode(t, err, http.StatusNotFound, adminapi.CodeNotFound, "okta")

	// IdP down: a clear 502.
	idp.SetDown(true)
	err = e.agent.Do(ctx, http.MethodPost, "/v1/login/oidc/device", controlproto.OIDCDeviceRequest{IdP: "test"}, nil)
	wantCode(t, err, http.StatusBadGateway, controlproto.OIDCIdPUnavailable, "unreachable", idp.Issuer)
}

func TestOIDCNotConfigured(t *testing.T) {
	e := newEnv(t)
	var provs controlproto.OIDCProviders
	if err := e.agent.Do(t.Context(), http.MethodGet, "/v1/oidc/providers", nil, &provs); err != nil || len(provs.Providers) != 0 {
		t.Fatalf("providers: %+v %v", provs, err)
	}
	err := e.agent.Do(t.Context(), http.MethodPost, "/v1/login/oidc/device", controlproto.OIDCDeviceRequest{IdP: "test"}, nil)
	wantCode(t, err, http.StatusNotFound, adminapi.CodeNotFound, "--oidc-config")
}

func TestOIDCDeviceFlow(t *testing.T) {
	e, idp := newOIDCEnv(t)
	ctx := t.Context()
	var ds controlproto.OIDCDeviceResponse
	if err := e.agent.Do(ctx, http.MethodPost, "/v1/login/oidc/device", controlproto.OIDCDeviceRequest{IdP: "test"}, &ds); err != nil {
		t.Fatal(err)
	}
	poll := func() (*controlproto.EnrollResponse, error) {
		var out controlproto.EnrollResponse
		err := e.agent.Do(ctx, http.MethodPost, "/v1/login/oidc", controlproto.OIDCLoginRequest{LoginID: ds.LoginID,
			DeviceEnroll: controlproto.DeviceEnroll{Hostname: "lab-analyzer", PublicKey: wgPub(t), CSR: csr(t, "x")}}, &out)
		return &out, err
	}
	_, err := poll()
	wantCode(t, err, http.StatusBadRequest, controlproto.OIDCPending)
	_, err = poll()
	wantCode(t, err, http.StatusBadRequest, controlproto.OIDCSlowDown)
	if err := idp.ApproveDevice(ctx, ds.UserCode, "alice", "pw"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		time.Sleep(time.Duration(ds.Interval) * time.Second) // the protocol's own poll interval
		resp, err := poll()
		if err == nil {
			if resp.User != "alice" {
				t.Fatalf("device login: %+v", resp)
			}
			break
		}
		var ae *adminapi.Error
		if !errors.As(err, &ae) || ae.Code != controlproto.OIDCPending && ae.Code != controlproto.OIDCSlowDown || time.Now().After(deadline) {
			t.Fatalf("poll: %v", err)
		}
	}
}

// TestOIDCDeprovisioning: a user deactivated at the IdP loses every
// session at the next refresh.
func TestOIDCDeprovisioning(t *testing.T) {
	e, idp := newOIDCEnv(t)
	ctx := t.Context()
	for range 2 {
		if _, err := e.oidcCode(idp, "alice", nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(must[[]store.Session](t)(e.Store.ListSessions(ctx, store.SessionFilter{User: "alice", ActiveOnly: true}))); n != 2 {
		t.Fatalf("%d active sessions, want 2 (two devices)", n)
	}
	before := e.Changed()
	must[struct{}](t)(struct{}{}, e.RefreshOIDC(ctx))
	if n := len(must[[]store.Session](t)(e.Store.ListSessions(ctx, store.SessionFilter{User: "alice", ActiveOnly: true}))); n != 2 {
		t.Fatalf("a successful refresh ended sessions: %d left", n)
	}
	must[struct{}](t)(struct{}{}, idp.SetDisabled("alice", true))
	must[struct{}](t)(struct{}{}, e.RefreshOIDC(ctx))
	if ss := must[[]store.Session](t)(e.Store.ListSessions(ctx, store.SessionFilter{User: "alice", ActiveOnly: true})); len(ss) != 0 {
		t.Fatalf("sessions after IdP deactivation: %+v", ss)
	}
	if e.Changed() == before {
		t.Error("deprovisioning did not report a map change")
	}
	if evs := e.audit("auth.idp.refresh"); len(evs) != 1 || evs[0].Outcome != "failure" {
		t.Errorf("audit: %+v", evs)
	}
	_ = context.Background
}
