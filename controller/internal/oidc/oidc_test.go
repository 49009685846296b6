package oidc

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/controller/internal/store/storetest"
	"github.com/cordonhq/cordon/internal/oidctest"
	"github.com/cordonhq/cordon/pkg/wgkey"
	"golang.org/x/oauth2"
)

// rig is a real OIDC provider, a store and a Manager whose clock the test
// can move.
type rig struct {
	idp     *oidctest.IdP
	st      store.Store
	m       *Manager
	offset  atomic.Int64 // added to the Manager's clock
	changed atomic.Int32
}

func newRig(t *testing.T, opts oidctest.Options, edit func(*ProviderConfig)) *rig {
	t.Helper()
	return newRigWith(t, opts, edit, nil)
}

// newRigWith is newRig with the Manager's Config edited by cfgEdit.
func newRigWith(t *testing.T, opts oidctest.Options, edit func(*ProviderConfig), cfgEdit func(*Config)) *rig {
	t.Helper()
	idp, err := oidctest.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	idp.AddUser(oidctest.User{Username: "alice", Password: "pw-alice", Email: "alice@hospital.example", Groups: []string{"Physicians", "Staff"}})
	idp.AddUser(oidctest.User{Username: "bob", Password: "pw-bob", Email: "bob@hospital.example", MFA: true})
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "cordon.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := &rig{idp: idp, st: st}
	pc := ProviderConfig{Name: "test", Issuer: idp.Issuer, ClientID: "cordon", AllowHTTP: true, DeviceFlow: true}
	if opts.ClientID != "" {
		pc.ClientID = opts.ClientID
	}
	if edit != nil {
		edit(&pc)
	}
	key := make([]byte, 32)
	rand.Read(key)
	cfg := Config{
		Providers: []ProviderConfig{pc}, Store: storetest.CheckAudit(t, st), TokenKey: key,
		Now:     func() time.Time { return time.Now().Add(time.Duration(r.offset.Load())) },
		Changed: func() { r.changed.Add(1) },
	}
	if cfgEdit != nil {
		cfgEdit(&cfg)
	}
	r.m, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.m.Close() })
	return r
}

// device plays the client: a loopback listener for the redirect, PKCE.
type device struct {
	redirect string
	codes    chan url2
}

type url2 struct{ code, state, err string }

func newDevice(t *testing.T) *device {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &device{redirect: "http://" + ln.Addr().String() + "/callback", codes: make(chan url2, 4)}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		d.codes <- url2{q.Get("code"), q.Get("state"), q.Get("error")}
		w.Write([]byte("signed in"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return d
}

// codeLogin runs the browser part of a code flow and returns the login ID,
// code and verifier, without finishing.
func (r *rig) codeLogin(t *testing.T, d *device, user, pw string) (loginID, code, verifier string) {
	t.Helper()
	verifier = oauth2.GenerateVerifier()
	start, err := r.m.StartCode(t.Context(), testSource, "test", d.redirect, oauth2.S256ChallengeFromVerifier(verifier))
	if err != nil {
		t.Fatalf("StartCode: %v", err)
	}
	if err := r.idp.Browser(user, pw)(t.Context(), start.AuthURL); err != nil {
		t.Fatalf("browser: %v", err)
	}
	got := <-d.codes
	if got.state != start.State || got.code == "" {
		t.Fatalf("redirect: %+v, want state %q and a code", got, start.State)
	}
	return start.LoginID, got.code, verifier
}

func (r *rig) signIn(t *testing.T, user, pw string) Result {
	t.Helper()
	id, code, v := r.codeLogin(t, newDevice(t), user, pw)
	res, err := r.m.FinishCode(t.Context(), id, code, v)
	if err != nil {
		t.Fatalf("FinishCode: %v", err)
	}
	return res
}

func TestCodeFlow(t *testing.T) {
	r := newRig(t, oidctest.Options{}, nil)
	res := r.signIn(t, "alice", "pw-alice")
	c := res.Claims
	if c.Subject != "sub-alice" || c.Username != "alice" || c.Email != "alice@hospital.example" || c.MFA {
		t.Errorf("claims = %+v", c)
	}
	if !slices.Equal(c.Groups, []string{"Physicians", "Staff"}) || res.PolicyClaim != "groups" {
		t.Errorf("groups = %v (claim %q)", c.Groups, res.PolicyClaim)
	}
	if res.RefreshToken == "" {
		t.Fatal("no refresh token (offline_access)")
	}
	rt, err := r.m.open(res.RefreshToken, "test", c.Subject)
	if err != nil || rt == "" || strings.Contains(res.RefreshToken, rt) {
		t.Errorf("sealed refresh token: open = %q, %v", rt, err)
	}
	if _, err := r.m.open(res.RefreshToken, "test", "someone-else"); err == nil {
		t.Error("a sealed token opened for another subject")
	}

	// MFA from amr.
	if c := r.signIn(t, "bob", "pw-bob").Claims; !c.MFA || !slices.Contains(c.AMR, "otp") {
		t.Errorf("bob (MFA at the IdP): claims %+v", c)
	}
}

func TestCodeReplay(t *testing.T) {
	r := newRig(t, oidctest.Options{}, nil)
	d := newDevice(t)
	id, code, v := r.codeLogin(t, d, "alice", "pw-alice")
	if _, err := r.m.FinishCode(t.Context(), id, code, v); err != nil {
		t.Fatal(err)
	}
	// The same login again: consumed.
	if _, err := r.m.FinishCode(t.Context(), id, code, v); !errors.Is(err, ErrUnknownLogin) {
		t.Errorf("replayed login: %v, want ErrUnknownLogin", err)
	}
	// The same code in a new login: the IdP refuses it (and that login's
	// nonce would not match anyway).
	id2, _, _ := r.codeLogin(t, d, "alice", "pw-alice")
	if _, err := r.m.FinishCode(t.Context(), id2, code, v); !errors.Is(err, ErrCodeRefused) {
		t.Errorf("replayed code: %v, want ErrCodeRefused", err)
	}
}

func TestWrongNonce(t *testing.T) {
	r := newRig(t, oidctest.Options{}, nil)
	id, code, v := r.codeLogin(t, newDevice(t), "alice", "pw-alice")
	r.m.mu.Lock()
	r.m.pending[id].nonce = "another-sign-ins-nonce" // the token was minted for another sign-in
	r.m.mu.Unlock()
	_, err := r.m.FinishCode(t.Context(), id, code, v)
	if !errors.Is(err, ErrTokenInvalid) || !strings.Contains(err.Error(), "nonce") {
		t.Errorf("wrong nonce: %v", err)
	}
}

func TestPKCEVerifierMismatch(t *testing.T) {
	r := newRig(t, oidctest.Options{}, nil)
	id, code, _ := r.codeLogin(t, newDevice(t), "alice", "pw-alice")
	_, err := r.m.FinishCode(t.Context(), id, code, oauth2.GenerateVerifier())
	if !errors.Is(err, ErrCodeRefused) || !strings.Contains(err.Error(), "invalid_grant") {
		t.Errorf("wrong verifier: %v, want invalid_grant", err)
	}
}

func TestStartCodeChecks(t *testing.T) {
	r := newRig(t, oidctest.Options{}, nil)
	ch := oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())
	for _, tc := range []struct {
		idp, redirect, challenge string
		want                     error
	}{
		{"nope", "http://127.0.0.1:1234/cb", ch, ErrUnknownProvider},
		{"test", "https://evil.example/cb", ch, ErrRedirect},
		{"test", "http://10.0.0.1:1234/cb", ch, ErrRedirect},
		{"test", "http://127.0.0.1/cb", ch, ErrRedirect}, // no port
		{"test", "http://127.0.0.1:1234/cb", "plain", nil},
	} {
		_, err := r.m.StartCode(t.Context(), testSource, tc.idp, tc.redirect, tc.challenge)
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("StartCode(%q, %q, %q) = %v, want %v", tc.idp, tc.redirect, tc.challenge, err, tc.want)
		}
	}
}

// rawIDToken gets a fresh ID token for alice straight from the IdP.
func (r *rig) rawIDToken(t *testing.T) string {
	t.Helper()
	d := newDevice(t)
	id, code, v := r.codeLogin(t, d, "alice", "pw-alice")
	l, err := r.m.take(id, false)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := l.idp.oauth2(t.Context(), l.redirect)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cfg.Exchange(t.Context(), code, oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	return tok.Extra("id_token").(string)
}

func TestExpiredIDToken(t *testing.T) {
	r := newRig(t, oidctest.Options{IDTokenLifetime: time.Minute}, nil)
	raw := r.rawIDToken(t)
	p := r.m.providers["test"]
	r.offset.Store(int64(10 * time.Minute))
	_, err := p.verify(t.Context(), raw, "")
	if !errors.Is(err, ErrTokenInvalid) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v", err)
	}
}

func TestClockSkew(t *testing.T) {
	r := newRig(t, oidctest.Options{IDTokenLifetime: time.Minute}, nil) // clock_skew 2m
	raw := r.rawIDToken(t)
	p := r.m.providers["test"]
	for _, tc := range []struct {
		offset time.Duration
		ok     bool
		want   string
	}{
		{0, true, ""},
		{90 * time.Second, true, ""},        // controller ahead: expired 30 s ago, within skew
		{-90 * time.Second, true, ""},       // controller behind: issued 90 s "in the future", within skew
		{4 * time.Minute, false, "expired"}, // beyond skew
		{-10 * time.Minute, false, "issued in the future"},
	} {
		r.offset.Store(int64(tc.offset))
		_, err := p.verify(t.Context(), raw, "")
		if tc.ok && err != nil || !tc.ok && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("clock %+v: %v", tc.offset, err)
		}
	}
}

func TestWrongAudience(t *testing.T) {
	r := newRig(t, oidctest.Options{}, nil)
	raw := r.rawIDToken(t)
	// The same IdP, but the controller registered as another client: a
	// token minted for "cordon" must not be accepted by "ehr-portal".
	other, err := newProvider(ProviderConfig{Name: "test", Issuer: r.idp.Issuer, ClientID: "ehr-portal", AllowHTTP: true, ClockSkew: Duration(time.Minute)}, time.Now, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	other.cfg.check()
	_, err = other.verify(t.Context(), raw, "")
	if !errors.Is(err, ErrTokenInvalid) || !strings.Contains(err.Error(), "audience") {
		t.Errorf("token for another audience: %v", err)
	}
	// And a forged signature.
	parts := strings.Split(raw, ".")
	_, err = r.m.providers["test"].verify(t.Context(), parts[0]+"."+parts[1]+".AAAA", "")
	if !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("bad signature: %v", err)
	}
}

func TestIdPDown(t *testing.T) {
	r := newRig(t, oidctest.Options{}, nil)
	r.idp.SetDown(true)
	ch := oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())
	_, err := r.m.StartCode(t.Context(), testSource, "test", "http://127.0.0.1:9/cb", ch)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), r.idp.Issuer) {
		t.Errorf("IdP down: %v, want ErrUnavailable naming the issuer", err)
	}
	// Back up: discovery is retried.
	r.idp.SetDown(false)
	if _, err := r.m.StartCode(t.Context(), testSource, "test", "http://127.0.0.1:9/cb", ch); err != nil {
		t.Errorf("IdP back: %v", err)
	}
	// Gone entirely (connection refused) after discovery: the token
	// endpoint error is ErrUnavailable too.
	id, code, v := r.codeLogin(t, newDevice(t), "alice", "pw-alice")
	r.idp.Close()
	if _, err := r.m.FinishCode(t.Context(), id, code, v); !errors.Is(err, ErrUnavailable) {
		t.Errorf("IdP closed: %v, want ErrUnavailable", err)
	}
}

func TestDeviceFlow(t *testing.T) {
	r := newRig(t, oidctest.Options{DevicePoll: time.Second}, nil)
	ds, err := r.m.StartDevice(t.Context(), testSource, "test")
	if err != nil {
		t.Fatal(err)
	}
	if ds.UserCode == "" || ds.VerificationURI == "" || ds.Interval != 1 {
		t.Fatalf("device start: %+v", ds)
	}
	if _, err := r.m.PollDevice(t.Context(), ds.LoginID); !errors.Is(err, ErrPending) {
		t.Fatalf("first poll: %v, want ErrPending", err)
	}
	if _, err := r.m.PollDevice(t.Context(), ds.LoginID); !errors.Is(err, ErrSlowDown) {
		t.Fatalf("immediate second poll: %v, want ErrSlowDown", err)
	}
	if err := r.idp.ApproveDevice(t.Context(), ds.UserCode, "alice", "pw-alice"); err != nil {
		t.Fatal(err)
	}
	res := pollUntil(t, r.m, ds)
	if res.Claims.Username != "alice" || res.RefreshToken == "" {
		t.Errorf("device result: %+v", res)
	}
	if _, err := r.m.PollDevice(t.Context(), ds.LoginID); !errors.Is(err, ErrUnknownLogin) {
		t.Errorf("poll after success: %v, want ErrUnknownLogin (consumed)", err)
	}

	// Denied at the IdP.
	ds, err = r.m.StartDevice(t.Context(), testSource, "test")
	if err != nil {
		t.Fatal(err)
	}
	r.idp.DenyDevice(t.Context(), ds.UserCode)
	if _, err := pollErr(t, r.m, ds); !errors.Is(err, ErrDenied) {
		t.Errorf("denied: %v, want ErrDenied", err)
	}
}

func TestDeviceFlowExpired(t *testing.T) {
	r := newRig(t, oidctest.Options{DevicePoll: time.Second, DeviceLifetime: 2 * time.Second}, nil)
	ds, err := r.m.StartDevice(t.Context(), testSource, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pollErr(t, r.m, ds); !errors.Is(err, ErrExpired) {
		t.Errorf("never confirmed: %v, want ErrExpired", err)
	}
}

func TestDeviceFlowDisabled(t *testing.T) {
	r := newRig(t, oidctest.Options{}, func(p *ProviderConfig) { p.DeviceFlow = false })
	if _, err := r.m.StartDevice(t.Context(), testSource, "test"); !errors.Is(err, ErrNoDeviceFlow) {
		t.Errorf("StartDevice: %v, want ErrNoDeviceFlow", err)
	}
}

// pollErr polls at the announced interval until the login is not pending.
func pollErr(t *testing.T, m *Manager, ds DeviceStart) (Result, error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		res, err := m.PollDevice(t.Context(), ds.LoginID)
		if !errors.Is(err, ErrPending) && !errors.Is(err, ErrSlowDown) {
			return res, err
		}
		select {
		case <-time.After(time.Duration(ds.Interval) * time.Second):
		case <-t.Context().Done():
			return Result{}, t.Context().Err()
		}
	}
	t.Fatal("device login still pending after 30 s")
	return Result{}, nil
}

func pollUntil(t *testing.T, m *Manager, ds DeviceStart) Result {
	t.Helper()
	res, err := pollErr(t, m, ds)
	if err != nil {
		t.Fatalf("device login: %v", err)
	}
	return res
}

// TestRefreshDeprovisions: a refresh updates groups; a user deactivated
// at the IdP loses every session at the next refresh; an IdP that is down
// ends nothing.
func TestRefreshDeprovisions(t *testing.T) {
	r := newRig(t, oidctest.Options{}, nil)
	ctx := t.Context()
	res := r.signIn(t, "alice", "pw-alice")
	id, err := r.st.LinkIdentity(ctx, store.Identity{IdP: res.IdP, Subject: res.Claims.Subject, User: res.Claims.Username,
		Claim: res.PolicyClaim, Groups: res.Claims.Groups, RefreshToken: res.RefreshToken, LastRefresh: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	var sessions []string
	for i := range 2 {
		dev, err := r.st.CreateDevice(ctx, store.Device{ID: fmt.Sprintf("dev-%d", i), User: id.User, PublicKey: testKey(t, i)})
		if err != nil {
			t.Fatal(err)
		}
		sid := "ses-" + dev.ID
		if _, err := r.st.StartSession(ctx, store.Session{ID: sid, DeviceID: dev.ID, User: id.User, Method: "oidc:test", StartedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, sid)
	}

	// bob is linked but has no session: the refresher leaves him (and the
	// IdP) alone.
	rb := r.signIn(t, "bob", "pw-bob")
	if _, err := r.st.LinkIdentity(ctx, store.Identity{IdP: rb.IdP, Subject: rb.Claims.Subject, User: rb.Claims.Username,
		Claim: rb.PolicyClaim, RefreshToken: rb.RefreshToken, LastRefresh: time.Now()}); err != nil {
		t.Fatal(err)
	}

	// Groups change at the IdP: the refresh picks them up.
	r.idp.SetGroups("alice", "Radiology")
	st, err := r.m.refreshAll(ctx)
	if err != nil || st.Refreshed != 1 {
		evs, _ := r.st.ListAudit(ctx, store.AuditFilter{})
		t.Fatalf("refresh: %+v %v %+v", st, err, evs)
	}
	got, _ := r.st.GetIdentity(ctx, "test", id.Subject)
	if !slices.Equal(got.Groups, []string{"Radiology"}) || got.RefreshToken == "" || r.changed.Load() != 1 {
		t.Errorf("after refresh: %+v (changed %d)", got, r.changed.Load())
	}

	// IdP down: nothing ends.
	r.idp.SetDown(true)
	if st, err := r.m.refreshAll(ctx); err == nil || st.Unreachable != 1 || st.Deprovisioned != 0 {
		t.Errorf("refresh with IdP down: %+v %v", st, err)
	}
	r.idp.SetDown(false)
	active, _ := r.st.ListSessions(ctx, store.SessionFilter{User: id.User, ActiveOnly: true})
	if len(active) != 2 {
		t.Fatalf("IdP down ended sessions: %+v", active)
	}

	// Deactivated at the IdP: every session ends at the next refresh.
	r.idp.SetDisabled("alice", true)
	if st, err := r.m.refreshAll(ctx); err != nil || st.Deprovisioned != 1 {
		t.Fatalf("refresh after deactivation: %+v %v", st, err)
	}
	for _, sid := range sessions {
		s, err := r.st.GetSession(ctx, sid)
		if err != nil || s.Active() || s.EndReason != store.EndIdPRefused {
			t.Errorf("session %s: %+v %v", sid, s, err)
		}
	}
	got, _ = r.st.GetIdentity(ctx, "test", id.Subject)
	if got.InvalidAt.IsZero() || got.RefreshToken != "" {
		t.Errorf("identity after deprovisioning: %+v", got)
	}
	evs, _ := r.st.ListAudit(ctx, store.AuditFilter{Type: "session.end"})
	if len(evs) != 2 || evs[0].Actor != "idp:test" {
		t.Errorf("audit: %+v", evs)
	}
	if r.changed.Load() != 2 {
		t.Errorf("Changed called %d times, want 2", r.changed.Load())
	}
	// Nothing left to refresh.
	if st, _ := r.m.refreshAll(ctx); st != (RefreshStats{}) {
		t.Errorf("refresh of an invalid identity: %+v", st)
	}
}

func testKey(t *testing.T, i int) wgkey.Public {
	t.Helper()
	k, err := wgkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	_ = i
	return k.Public()
}

// TestConfidentialClient: with a client secret (client_secret_file) the
// controller authenticates to the token endpoint; a wrong secret is a
// refused exchange, not a sign-in.
func TestConfidentialClient(t *testing.T) {
	r := newRig(t, oidctest.Options{ClientSecret: "s3cret"}, func(p *ProviderConfig) { p.secret = "s3cret" })
	if res := r.signIn(t, "alice", "pw-alice"); res.Claims.Username != "alice" || res.RefreshToken == "" {
		t.Fatalf("result %+v", res)
	}
	r2 := newRig(t, oidctest.Options{ClientSecret: "s3cret"}, func(p *ProviderConfig) { p.secret = "wrong" })
	id, code, v := r2.codeLogin(t, newDevice(t), "alice", "pw-alice")
	if _, err := r2.m.FinishCode(t.Context(), id, code, v); !errors.Is(err, ErrCodeRefused) {
		t.Errorf("wrong client secret: %v, want ErrCodeRefused", err)
	}
}
