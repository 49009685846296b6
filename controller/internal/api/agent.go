package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

var errTokenInvalid = errorf(http.StatusUnauthorized, adminapi.CodeTokenInvalid,
	"enrollment token is invalid, already used or expired: ask an admin for a new one (cordonctl gateway token create)")

// errLoginFailed is the one answer to every wrong credential, so the
// response does not tell which part was wrong or whether the user exists.
var errLoginFailed = errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized,
	"login failed: wrong user name, password or one-time code (a code can be used only once: wait for the next one)")

func (a *API) enrollGateway(w http.ResponseWriter, r *http.Request) error {
	var req controlproto.EnrollGatewayRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Token == "" {
		return invalidf("field \"token\": required: the enrollment token from cordonctl gateway token create")
	}
	if req.Name != "" {
		if err := checkName("name", req.Name); err != nil {
			return err
		}
	}
	if req.PublicKey.IsZero() {
		return invalidf("field \"public_key\": required: the gateway's WireGuard public key")
	}
	if err := checkEndpoint(req.Endpoint); err != nil {
		return err
	}
	if err := checkCSR(req.CSR); err != nil {
		return err
	}
	ctx := r.Context()
	src := source(r)
	fail := func(id, reason string) {
		a.record(ctx, store.AuditEvent{
			Type: audit.EnrollGateway, Actor: "gateway:" + id, Outcome: "failure", Subject: req.Name,
			Details: map[string]string{"source": src, "reason": reason},
		})
	}
	if !auth.LooksLikeEnrollToken(req.Token) {
		fail("unknown", "malformed token")
		return errTokenInvalid
	}

	gw, cert, err := a.state.EnrollGateway(ctx, auth.HashToken(req.Token),
		store.Gateway{Name: req.Name, PublicKey: req.PublicKey, Endpoint: req.Endpoint}, src,
		func(id string) (string, error) { return a.ca.IssueAgentCert(req.CSR, id, ca.KindGateway) })
	var refused *state.Refused
	switch {
	case errors.Is(err, store.ErrTokenInvalid):
		fail("unknown", "token invalid, used or expired")
		return errTokenInvalid
	case errors.As(err, &refused):
		fail("unknown", refused.Msg)
		return err
	case err != nil:
		// checkCSR passed, so this is the CA or the store failing.
		fail("unknown", "enrollment failed: "+err.Error())
		return err
	}
	return ok(w, controlproto.EnrollResponse{
		ID: gw.ID, OverlayAddr: gw.OverlayAddr, Certificate: cert, ControlAddr: a.control,
	})
}

func (a *API) login(w http.ResponseWriter, r *http.Request) error {
	var req controlproto.LoginRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Username == "" {
		return invalidf("field \"username\": required")
	}
	if req.Password == "" {
		return invalidf("field \"password\": required")
	}
	if err := checkBreakGlassLogin(&req); err != nil {
		return err
	}
	switch {
	case req.TOTP != "" && req.RecoveryCode != "":
		return invalidf("give \"totp\" or \"recovery_code\", not both")
	case req.TOTP == "" && req.RecoveryCode == "":
		return invalidf("field \"totp\": required: the 6-digit code from the authenticator app (or \"recovery_code\": one of your one-time recovery codes)")
	}
	if err := checkDeviceEnroll(&req.DeviceEnroll); err != nil {
		return err
	}

	ctx := r.Context()
	src := source(r)
	name := req.Username
	if !nameRE.MatchString(name) {
		// Audit what was tried, bounded and quoted: it is attacker input.
		name = strconv.Quote(clip(name))
	}
	fail := func(reason string) {
		a.record(ctx, store.AuditEvent{
			Type: audit.AuthLogin, Actor: "user:" + name, Outcome: "failure", Subject: name,
			Details: map[string]string{"source": src, "device": req.DeviceID, "reason": reason},
		})
		a.loginFailed(ctx, "user", req.Username, name, src)
	}

	now := a.now()
	if wait := a.throttle.Allow(req.Username, src, now); wait > 0 {
		fail("throttled")
		w.Header().Set("Retry-After", retryAfterSeconds(wait))
		return errorf(http.StatusTooManyRequests, adminapi.CodeRateLimited,
			"too many failed logins: try again in %s", retryAfterSeconds(wait)+"s")
	}

	u, err := a.st.GetUser(ctx, req.Username)
	switch {
	case errors.Is(err, store.ErrNotFound):
		a.pw.VerifyDummy(req.Password) // same cost as a real user
		fail("unknown user")
		return errLoginFailed
	case err != nil:
		return err
	}
	if u.PasswordHash == "" {
		// Users from an identity provider have no local password: refuse
		// like a wrong password, at the same cost.
		a.pw.VerifyDummy(req.Password)
		fail("no local password (identity provider user)")
		return errLoginFailed
	}
	if err := a.checkPassword("user "+u.Name, u.PasswordHash, req.Password, fail, errLoginFailed); err != nil {
		return err
	}
	// An emergency account signs in only for emergency access, and only
	// an emergency account does: told apart only after the password.
	switch {
	case u.BreakGlass && !req.BreakGlass:
		fail("emergency account without break-glass")
		return errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized,
			"account %q is an emergency (break-glass) account: sign in with 'cordon login --break-glass --justification \"...\"' and one of its sealed one-time codes", u.Name)
	case !u.BreakGlass && req.BreakGlass:
		fail("break-glass with an ordinary account")
		return errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized,
			"account %q is not an emergency account: sign in without --break-glass, or with one of the break-glass accounts from the sealed envelope", u.Name)
	}
	if req.RecoveryCode != "" {
		return a.loginWithRecoveryCode(w, r, u, &req, fail)
	}
	if err := a.checkTOTP("user "+u.Name, u.Name, u.TOTPSecret, req.TOTP, now, fail, errLoginFailed); err != nil {
		return err
	}
	// Only someone who knows both factors learns that the account is
	// disabled.
	if u.Disabled {
		fail("user disabled")
		return errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized, "account %q is disabled: contact your administrator", u.Name)
	}
	a.throttle.Succeeded(req.Username, src)
	return a.signIn(w, r, u, &req.DeviceEnroll, MethodPasswordTOTP, true, nil, nil)
}

// checkPassword verifies a password against its stored hash. A mismatch
// is audited through fail and answered with failed (the same answer for
// every wrong factor); who names the account for errors.
func (a *API) checkPassword(who, hash, password string, fail func(reason string), failed error) error {
	match, err := a.pw.Verify(hash, password)
	if err != nil {
		fail("stored password hash unusable")
		return fmt.Errorf("verify password of %s: %w", who, err)
	}
	if !match {
		fail("wrong password")
		return failed
	}
	return nil
}

// checkTOTP verifies a one-time code with replay protection under key,
// like checkPassword.
func (a *API) checkTOTP(who, key, secret, code string, now time.Time, fail func(reason string), failed error) error {
	err := a.totp.Verify(key, secret, code, now)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, auth.ErrTOTPReplayed):
		fail("totp replayed")
	case errors.Is(err, auth.ErrTOTPInvalid):
		fail("wrong totp")
	default:
		fail("stored totp secret unusable")
		return fmt.Errorf("verify TOTP of %s: %w", who, err)
	}
	return failed
}

// Sign-in methods, as sessions and the audit trail record them.
const (
	MethodPasswordTOTP = "password+totp"
	MethodRecoveryCode = "recovery-code"
	MethodOIDCPrefix   = "oidc:" // + the IdP's name
)

func checkDeviceEnroll(d *controlproto.DeviceEnroll) error {
	if d.PublicKey.IsZero() {
		return invalidf("field \"public_key\": required: the device's WireGuard public key")
	}
	if err := checkHostname(d.Hostname); err != nil {
		return err
	}
	return checkCSR(d.CSR)
}

// signIn finishes a sign-in whose every factor the caller verified, for
// user u (enabled): it enrolls or re-enrolls the device, starts the
// device's session (ending its previous one), issues the device
// certificate, audits, and answers. mfa says whether a second factor was
// proven now (the session's MFA time, for step-up rules).
//
// recovery is the hash of a recovery code to use up (nil: none).
//
// bg, if set, makes it a break-glass sign-in (recovery is then the
// emergency account's one-time code).
func (a *API) signIn(w http.ResponseWriter, r *http.Request, u store.User, req *controlproto.DeviceEnroll, method string, mfa bool, recovery []byte, bg *state.BreakGlass) error {
	ctx := r.Context()
	src := source(r)
	fail := func(reason string) {
		a.record(ctx, store.AuditEvent{
			Type: audit.AuthLogin, Actor: "user:" + u.Name, Outcome: "failure", Subject: u.Name,
			Details: map[string]string{"source": src, "device": req.DeviceID, "method": method, "reason": reason},
		})
	}
	in := state.SignIn{User: u.Name, DeviceID: req.DeviceID, Hostname: req.Hostname, Key: req.PublicKey, Method: method, MFA: mfa, Source: src,
		RecoveryCode: recovery, BreakGlass: bg}
	done, err := a.state.SignIn(ctx, in, func(id string) (string, error) { return a.ca.IssueAgentCert(req.CSR, id, ca.KindClient) })
	var refused *state.Refused
	switch {
	case errors.Is(err, store.ErrDisabled):
		fail("user disabled")
		return err
	case errors.Is(err, state.ErrSignInFailed):
		fail("user deleted meanwhile")
		return errLoginFailed
	case errors.Is(err, store.ErrTokenInvalid):
		fail("recovery code already used")
		return errLoginFailed
	case errors.As(err, &refused):
		fail("device enrollment failed: " + refused.Msg)
		return err
	case err != nil:
		fail("sign-in failed")
		return err
	}
	dev, cert := done.Device, done.Cert
	resp := controlproto.EnrollResponse{
		ID: dev.ID, User: u.Name, OverlayAddr: dev.OverlayAddr, Certificate: cert, ControlAddr: a.control,
	}
	if !mfa {
		resp.NoMFA = a.noMFA(ctx, u.Name, method)
	}
	return ok(w, resp)
}
