package api

import (
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// This file: break-glass emergency access (state/breakglass.go says what
// it is). An emergency account is a local user whose second factor is a
// sheet of sealed one-time codes: the recovery-code machinery, whose codes
// carry 78 random bits each, so a SHA-256 of them is as safe to store as
// an argon2id hash and costs nothing to check against ten.

// MethodBreakGlass is the sign-in method of a break-glass session.
const MethodBreakGlass = "break-glass"

func (a *API) createBreakGlass(w http.ResponseWriter, r *http.Request, actor string) error {
	var req adminapi.CreateBreakGlassRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkName("name", req.Name); err != nil {
		return err
	}
	if req.Password == "" {
		return invalidf("field \"password\": required")
	}
	if n := utf8.RuneCountInString(req.Password); n < adminapi.MinBreakGlassPasswordLength {
		return invalidf("field \"password\": an emergency account's password must be at least %d characters long (got %d): it is written down and sealed, so make it long",
			adminapi.MinBreakGlassPasswordLength, n)
	}
	if err := auth.CheckPasswordPolicy(req.Password); err != nil {
		return invalidf("field \"password\": %v", err)
	}
	hash, err := a.pw.Hash(req.Password)
	if err != nil {
		return err
	}
	codes, hashes := auth.NewRecoveryCodes(req.Name, auth.RecoveryCodeCount)
	u, err := a.state.CreateBreakGlass(r.Context(), origin(r, actor), store.User{Name: req.Name, PasswordHash: hash}, hashes)
	if err != nil {
		return err
	}
	return created(w, adminapi.CreateBreakGlassResponse{User: userOut(u), Codes: codes})
}

func breakGlassUseOut(u store.BreakGlassUse) adminapi.BreakGlassUse {
	out := adminapi.BreakGlassUse{ID: u.ID, User: u.User, DeviceID: u.DeviceID, SessionID: u.SessionID, Source: u.Source,
		Justification: u.Justification, StartedAt: u.StartedAt, ExpiresAt: u.ExpiresAt,
		State: adminapi.BreakGlassClosed, Reviews: []adminapi.BreakGlassReview{}}
	if state.BreakGlassUseOpen(u) {
		out.State = adminapi.BreakGlassOpen
	}
	for _, rv := range u.Reviews {
		out.Reviews = append(out.Reviews, adminapi.BreakGlassReview(rv))
	}
	return out
}

func (a *API) listBreakGlassUses(w http.ResponseWriter, r *http.Request, _ string) error {
	xs, err := a.st.ListBreakGlassUses(r.Context())
	if err != nil {
		return err
	}
	return ok(w, mapSlice(xs, breakGlassUseOut))
}

// maxUseID bounds a use ID in a path ("bg-" and 10 hex digits).
const maxUseID = 64

func (a *API) getBreakGlassUse(w http.ResponseWriter, r *http.Request, _ string) error {
	id := r.PathValue("id")
	if len(id) > maxUseID {
		return invalidf("break-glass use ID longer than %d characters", maxUseID)
	}
	u, err := a.st.GetBreakGlassUse(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return notFoundf("no break-glass use %q: list them with cordonctl breakglass list", clip(id))
	} else if err != nil {
		return err
	}
	return ok(w, breakGlassUseOut(u))
}

// maxReviewComment bounds a reviewer's comment, in bytes.
const maxReviewComment = 1000

func (a *API) reviewBreakGlass(w http.ResponseWriter, r *http.Request, actor string) error {
	id := r.PathValue("id")
	if len(id) > maxUseID {
		return invalidf("break-glass use ID longer than %d characters", maxUseID)
	}
	var req adminapi.ReviewBreakGlassRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	comment := strings.TrimSpace(req.Comment)
	if comment == "" {
		return invalidf("field \"comment\": required: say what you checked and found")
	}
	if err := checkText("comment", comment, maxReviewComment); err != nil {
		return err
	}
	// Two tokens of one admin account are one admin (archivingAdmin: the
	// audit archive's two-admin rule counts the same way).
	u, err := a.state.ReviewBreakGlass(r.Context(), origin(r, actor), archivingAdmin(r), id, comment)
	if err != nil {
		return err
	}
	return ok(w, breakGlassUseOut(u))
}

// checkBreakGlassLogin checks the shape of a break-glass sign-in: a
// justification and a one-time code, no TOTP.
func checkBreakGlassLogin(req *controlproto.LoginRequest) error {
	if !req.BreakGlass {
		if req.Justification != "" {
			return invalidf("field \"justification\": only for a break-glass sign-in (\"break_glass\": true)")
		}
		return nil
	}
	if req.TOTP != "" || req.RecoveryCode == "" {
		return invalidf("field \"recovery_code\": required for a break-glass sign-in: one of the account's sealed one-time codes (no \"totp\")")
	}
	req.Justification = strings.TrimSpace(req.Justification)
	if req.Justification == "" {
		return invalidf("field \"justification\": required for a break-glass sign-in: say in words why you need emergency access")
	}
	return checkText("justification", req.Justification, controlproto.MaxJustification)
}
