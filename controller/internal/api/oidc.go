package api

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/cordonhq/cordon/controller/internal/oidc"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// OIDC is the OIDC relying party the sign-in routes use; *oidc.Manager
// implements it. Nil: no identity provider is configured.
type OIDC interface {
	Providers() []oidc.ProviderInfo
	// StartCode and StartDevice count pending sign-ins per source (the
	// client's IP address) and refuse a source over its share with an
	// *oidc.BusyError.
	StartCode(ctx context.Context, source, idp, redirectURI, challenge string) (oidc.CodeStart, error)
	FinishCode(ctx context.Context, loginID, code, verifier string) (oidc.Result, error)
	StartDevice(ctx context.Context, source, idp string) (oidc.DeviceStart, error)
	PollDevice(ctx context.Context, loginID string) (oidc.Result, error)
}

var _ OIDC = (*oidc.Manager)(nil)

// maxOIDCField bounds the free-text fields of the OIDC routes.
const maxOIDCField = 2048

var errNoOIDC = notFoundf("no identity provider is configured on this controller: sign in with a user name and password, or ask an administrator to configure one (--oidc-config)")

func (a *API) oidcProviders(w http.ResponseWriter, r *http.Request) error {
	out := controlproto.OIDCProviders{Providers: []controlproto.OIDCProvider{}}
	if a.oidc != nil {
		for _, p := range a.oidc.Providers() {
			out.Providers = append(out.Providers, controlproto.OIDCProvider{
				Name: p.Name, DisplayName: p.DisplayName, Issuer: p.Issuer, ClientID: p.ClientID, DeviceFlow: p.DeviceFlow,
				RedirectHost: p.RedirectHost, RedirectPort: p.RedirectPort,
			})
		}
	}
	return ok(w, out)
}

func (a *API) oidcStart(w http.ResponseWriter, r *http.Request) error {
	if a.oidc == nil {
		return errNoOIDC
	}
	var req controlproto.OIDCStartRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.IdP == "" || len(req.RedirectURI) > maxOIDCField || len(req.CodeChallenge) > maxOIDCField {
		return invalidf("fields \"idp\", \"redirect_uri\" and \"code_challenge\" are required (at most %d bytes each)", maxOIDCField)
	}
	start, err := a.oidc.StartCode(r.Context(), source(r), req.IdP, req.RedirectURI, req.CodeChallenge)
	if err != nil {
		return a.oidcStartError(w, r, req.IdP, err)
	}
	return ok(w, controlproto.OIDCStartResponse{LoginID: start.LoginID, AuthURL: start.AuthURL, State: start.State})
}

func (a *API) oidcDevice(w http.ResponseWriter, r *http.Request) error {
	if a.oidc == nil {
		return errNoOIDC
	}
	var req controlproto.OIDCDeviceRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.IdP == "" {
		return invalidf("field \"idp\": required")
	}
	ds, err := a.oidc.StartDevice(r.Context(), source(r), req.IdP)
	if err != nil {
		return a.oidcStartError(w, r, req.IdP, err)
	}
	return ok(w, controlproto.OIDCDeviceResponse{
		LoginID: ds.LoginID, UserCode: ds.UserCode, VerificationURI: ds.VerificationURI,
		VerificationURIComplete: ds.VerificationURIComplete, ExpiresAt: ds.ExpiresAt, Interval: ds.Interval,
	})
}

// oidcLogin finishes an OIDC sign-in (code flow) or polls one (device
// flow); once the provider vouched for the user, it links the identity
// (creating the user at the first sign-in) and signs the device in.
func (a *API) oidcLogin(w http.ResponseWriter, r *http.Request) error {
	if a.oidc == nil {
		return errNoOIDC
	}
	var req controlproto.OIDCLoginRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.LoginID == "" || len(req.LoginID) > 128 || len(req.Code) > maxOIDCField || len(req.CodeVerifier) > 128 {
		return invalidf("field \"login_id\": required: the login_id from /v1/login/oidc/start or /v1/login/oidc/device")
	}
	if (req.Code == "") != (req.CodeVerifier == "") {
		return invalidf("fields \"code\" and \"code_verifier\" go together")
	}
	if err := checkDeviceEnroll(&req.DeviceEnroll); err != nil {
		return err
	}
	ctx := r.Context()
	var res oidc.Result
	var err error
	if req.Code != "" {
		res, err = a.oidc.FinishCode(ctx, req.LoginID, req.Code, req.CodeVerifier)
	} else {
		res, err = a.oidc.PollDevice(ctx, req.LoginID)
	}
	if err != nil {
		return a.oidcError(r, "", err)
	}

	c := res.Claims
	method := MethodOIDCPrefix + res.IdP
	src := source(r)
	fail := func(user, reason string) {
		a.record(ctx, store.AuditEvent{
			Type: audit.AuthLogin, Actor: "user:" + user, Outcome: "failure", Subject: user,
			Details: map[string]string{"source": src, "device": req.DeviceID, "method": method, "idp_subject": c.Subject, "reason": reason},
		})
	}
	if err := checkName("user", c.Username); err != nil {
		fail(c.Username, "unusable user name from the IdP")
		return err
	}
	id, err := a.state.LinkIdentity(ctx, store.Identity{
		IdP: res.IdP, Subject: c.Subject, User: c.Username, Email: c.Email,
		Claim: res.PolicyClaim, Groups: c.Groups, RefreshToken: res.RefreshToken,
	}, src)
	switch {
	case errors.Is(err, store.ErrAlreadyExists):
		fail(c.Username, "user name taken by another account")
		return conflictf("the identity provider's user %q maps to the Cordon user name %q, which is already another account: an administrator must set username_prefix or username_claim for this provider, or remove that account", clip(c.Subject), c.Username)
	case err != nil:
		return err
	}
	u, err := a.st.GetUser(ctx, id.User)
	if err != nil {
		return err
	}
	if u.Disabled {
		fail(u.Name, "user disabled")
		return errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized, "account %q is disabled: contact your administrator", u.Name)
	}
	return a.signIn(w, r, u, &req.DeviceEnroll, method, c.MFA, nil, nil)
}

// oidcStartError answers a failed start of a sign-in (user or admin). A
// source with too many sign-ins pending, or a full controller, gets 429
// with Retry-After; the refusal is audited once per window, not per
// request, so a flood does not flood the audit log too.
func (a *API) oidcStartError(w http.ResponseWriter, r *http.Request, idp string, err error) error {
	var busy *oidc.BusyError
	if !errors.As(err, &busy) {
		return a.oidcError(r, idp, err)
	}
	if busy.Audit {
		typ, actor := audit.AuthLogin, "user:unknown"
		if strings.HasPrefix(r.URL.Path, "/v1/admin/") {
			typ, actor = audit.AdminLogin, "admin:unknown"
		}
		reason := "too many sign-ins pending from this source"
		if !busy.PerSource {
			reason = "too many sign-ins pending on the controller"
		}
		a.log.WarnContext(r.Context(), "oidc sign-in starts refused", "source", source(r), "reason", reason)
		a.record(r.Context(), store.AuditEvent{
			Type: typ, Actor: actor, Outcome: "failure", Subject: "unknown",
			Details: map[string]string{
				"source": source(r), "method": "oidc", "idp": clip(idp), "reason": reason,
				"comment": "further refusals are not audited for " + oidc.BusyAuditWindow.String(),
			},
		})
	}
	w.Header().Set("Retry-After", retryAfterSeconds(busy.RetryAfter))
	return errorf(http.StatusTooManyRequests, adminapi.CodeRateLimited, "%s", err)
}

// oidcError maps an OIDC failure of a user sign-in to an answer,
// auditing refusals.
func (a *API) oidcError(r *http.Request, idp string, err error) error {
	return a.oidcErrorAs(r, idp, err, audit.AuthLogin, "user:unknown", "unknown")
}

// oidcErrorAs maps an OIDC failure to an answer; a refusal is audited as
// an event of type typ by actor about subject.
func (a *API) oidcErrorAs(r *http.Request, idp string, err error, typ audit.Type, actor, subject string) error {
	code := func(status int, c string) error {
		return errorf(status, c, "%s", err.Error())
	}
	switch {
	case errors.Is(err, oidc.ErrPending):
		return errorf(http.StatusBadRequest, controlproto.OIDCPending, "waiting for the user to confirm the code at the identity provider")
	case errors.Is(err, oidc.ErrSlowDown):
		return errorf(http.StatusBadRequest, controlproto.OIDCSlowDown, "polled too fast: wait the interval between polls")
	case errors.Is(err, oidc.ErrUnknownProvider):
		return notFoundf("%s: see GET /v1/oidc/providers", err)
	case errors.Is(err, oidc.ErrBusy):
		return errorf(http.StatusTooManyRequests, adminapi.CodeRateLimited, "%s", err)
	case errors.Is(err, oidc.ErrUnknownLogin):
		return code(http.StatusBadRequest, adminapi.CodeInvalid)
	case errors.Is(err, oidc.ErrRedirect), errors.Is(err, oidc.ErrNoDeviceFlow):
		return code(http.StatusBadRequest, adminapi.CodeInvalid)
	case errors.Is(err, oidc.ErrIdPConfig):
		a.log.ErrorContext(r.Context(), "identity provider misconfigured", "idp", idp, logErr, err)
		return errorf(http.StatusBadGateway, controlproto.OIDCIdPMisconfigured, "%s: this is a configuration error on the controller, not an outage, so trying again will not help: tell your administrator", err)
	case errors.Is(err, oidc.ErrUnavailable):
		a.log.WarnContext(r.Context(), "identity provider unreachable", "idp", idp, logErr, err)
		return errorf(http.StatusBadGateway, controlproto.OIDCIdPUnavailable, "%s: try again in a minute; if it persists, tell your administrator", err)
	}
	reason := "id token refused"
	c := adminapi.CodeUnauthorized
	switch {
	case errors.Is(err, oidc.ErrExpired):
		reason, c = "device code expired", controlproto.OIDCExpired
	case errors.Is(err, oidc.ErrDenied):
		reason, c = "denied at the identity provider", controlproto.OIDCDenied
	case errors.Is(err, oidc.ErrCodeRefused):
		reason = "authorization code refused"
	case !errors.Is(err, oidc.ErrTokenInvalid):
		return code(http.StatusBadRequest, adminapi.CodeInvalid)
	}
	a.record(r.Context(), store.AuditEvent{
		Type: typ, Actor: actor, Outcome: "failure", Subject: subject,
		Details: map[string]string{"source": source(r), "method": "oidc", "reason": reason, "error": clip(err.Error())},
	})
	return errorf(http.StatusUnauthorized, c, "sign-in refused: %s: sign in again", err)
}
