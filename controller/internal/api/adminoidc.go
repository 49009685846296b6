package api

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/oidc"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/audit"
)

// Admin sign-in through an identity provider.
//
// An admin account created with an IdP (cordonctl admin create NAME
// --role R --idp IDP [--subject SUB]) has no password and no TOTP secret:
// it signs in only through that provider, with the same code+PKCE or
// device flow as a device (POST /v1/admin/login/oidc/start or /device,
// then POST /v1/admin/login/oidc naming the account). The controller is
// the OIDC client as for users (package oidc); the result is an admin
// token of the account's role that lives AdminSessionTTL, like a local
// sign-in's. No IdP refresh token is kept: the token simply expires, and
// the next sign-in asks the IdP again.
//
// Binding. The account is bound to one IdP user, by the ID token's "sub"
// (stable and never reassigned, unlike a name or an e-mail address):
//   - given at creation (--subject), only that subject may sign in;
//   - otherwise the first sign-in whose user name (the provider's
//     username_claim, with its username_prefix) equals the account name
//     binds its subject, once (a conditional update decides between
//     concurrent first sign-ins); from then on only that subject may sign
//     in, whatever its user name becomes.
//
// Every IdP admin sign-in must show MFA at the provider (the amr or acr
// values configured for it); a disabled account is refused. Refusals
// are audited as admin.login failures with the method "oidc:<idp>".

// errAdminNotBound is the answer to an IdP sign-in that is not the
// account's IdP user; it does not say which check failed, so it tells
// nothing about which admin accounts exist.
func errAdminNotBound(name, idp string) error {
	return errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized,
		"admin sign-in through %s refused: admin account %q does not sign in through %s as this identity-provider user: "+
			"check the account name, or ask an owner to create it (cordonctl admin create NAME --role ROLE --idp %s)", idp, name, idp, idp)
}

func (a *API) adminOIDCLogin(w http.ResponseWriter, r *http.Request) error {
	if a.oidc == nil {
		return errNoOIDC
	}
	var req adminapi.AdminOIDCLoginRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	switch {
	case req.Name == "":
		return invalidf("field \"name\": required: the admin account to sign in as")
	case req.LoginID == "" || len(req.LoginID) > 128 || len(req.Code) > maxOIDCField || len(req.CodeVerifier) > 128:
		return invalidf("field \"login_id\": required: the login_id from /v1/admin/login/oidc/start or /v1/admin/login/oidc/device")
	case (req.Code == "") != (req.CodeVerifier == ""):
		return invalidf("fields \"code\" and \"code_verifier\" go together")
	}
	ttl, err := a.adminLoginTTL(req.TTL)
	if err != nil {
		return err
	}
	ctx := r.Context()
	name := shownName(req.Name)
	var res oidc.Result
	if req.Code != "" {
		res, err = a.oidc.FinishCode(ctx, req.LoginID, req.Code, req.CodeVerifier)
	} else {
		res, err = a.oidc.PollDevice(ctx, req.LoginID)
	}
	if err != nil {
		return a.oidcErrorAs(r, "", err, audit.AdminLogin, "admin:"+name, name)
	}

	c := res.Claims
	method := MethodOIDCPrefix + res.IdP
	src := source(r)
	fail := func(reason string) {
		a.record(ctx, store.AuditEvent{
			Type: audit.AdminLogin, Actor: "admin:" + name, Outcome: "failure", Subject: name,
			Details: map[string]string{"source": src, "method": method, "idp_subject": clip(c.Subject), "idp_user": clip(c.Username), "reason": reason},
		})
	}
	acct, err := a.st.GetAdmin(ctx, req.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		fail("unknown admin")
		return errAdminNotBound(req.Name, res.IdP)
	case err != nil:
		return err
	}
	switch {
	case acct.IdP != res.IdP:
		fail("admin does not sign in through " + res.IdP)
		return errAdminNotBound(acct.Name, res.IdP)
	case acct.Subject != "" && acct.Subject != c.Subject:
		fail("bound to another IdP subject")
		return errAdminNotBound(acct.Name, res.IdP)
	case acct.Subject == "" && (c.Username != acct.Name || !c.UsernameExact):
		// Bind only on the claim's own value: "j.smith" and "j_smith" both
		// make "j-smith", and neither may claim that account unasked.
		fail("IdP user name is not exactly the account name (first sign-in binds by user name)")
		return errAdminNotBound(acct.Name, res.IdP)
	case !c.MFA:
		fail("no MFA at the identity provider")
		return errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized,
			"admin sign-in through %s refused: the identity provider reports no second factor for this sign-in (amr %v, acr %q), and admins must use MFA: "+
				"sign in at %s with MFA (enrol a second factor there), or ask the operator to set mfa_amr_values/mfa_acr_values for this provider to what it sends",
			res.IdP, c.AMR, clip(c.ACR), res.IdP)
	case acct.Disabled:
		fail("admin disabled")
		return errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized, "admin account %q is disabled: ask an owner", acct.Name)
	}
	if acct.Subject == "" {
		bind := map[string]string{"source": src, "idp_subject": c.Subject, "idp_user": c.Username, "email": c.Email, "comment": "bound at first sign-in"}
		switch err := a.state.BindAdminSubject(ctx, acct.Name, res.IdP, c.Subject, bind); {
		case errors.Is(err, store.ErrAlreadyExists):
			fail("IdP subject already bound to another admin account")
			return conflictf("your %s user is already bound to another admin account: sign in as that account, or ask an owner", res.IdP)
		case errors.Is(err, store.ErrTokenInvalid):
			// A concurrent first sign-in bound it: to this subject?
			if acct, err = a.st.GetAdmin(ctx, acct.Name); err != nil {
				return err
			}
			if acct.Subject != c.Subject {
				fail("bound to another IdP subject")
				return errAdminNotBound(acct.Name, res.IdP)
			}
		case errors.Is(err, store.ErrNotFound):
			fail("admin changed during sign-in")
			return errAdminNotBound(acct.Name, res.IdP)
		case err != nil:
			return err
		default:
			acct.Subject = c.Subject
		}
	}
	return a.adminSignedIn(w, r, acct, ttl, method, map[string]string{"idp_subject": c.Subject})
}

// shownName is an admin name from a request as safe to record: quoted if
// it is not a valid name (it is attacker input).
func shownName(s string) string {
	if nameRE.MatchString(s) {
		return s
	}
	return strconv.Quote(clip(s))
}

// checkAdminCredential checks how a new admin account will sign in: a
// password (local) or an identity provider this controller knows.
func (a *API) checkAdminCredential(req *adminapi.CreateAdminRequest) error {
	if req.IdP == "" {
		if req.Subject != "" {
			return invalidf("field \"subject\": only with \"idp\"")
		}
		if req.Password == "" {
			return invalidf("field \"password\": required (or \"idp\" for an account that signs in through an identity provider)")
		}
		if err := auth.CheckPasswordPolicy(req.Password); err != nil {
			return invalidf("field \"password\": %v", err)
		}
		return nil
	}
	if req.Password != "" {
		return invalidf("fields \"password\" and \"idp\": give one: an IdP account has no local password")
	}
	if len(req.Subject) > 255 {
		return invalidf("field \"subject\": longer than 255 bytes")
	}
	if a.oidc == nil {
		return invalidf("field \"idp\": no identity provider is configured on this controller (--oidc-config)")
	}
	for _, p := range a.oidc.Providers() {
		if p.Name == req.IdP {
			return nil
		}
	}
	return invalidf("field \"idp\": no identity provider %q on this controller: see GET /v1/oidc/providers", clip(req.IdP))
}
