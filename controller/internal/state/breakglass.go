package state

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
)

// This file: break-glass emergency access (HIPAA 164.312(a)(2)(ii)).
//
// An emergency account is a local user marked BreakGlass, with an argon2id
// password and sealed one-time codes (its recovery codes: the same store,
// hashing and single-use update), and no TOTP and no identity provider,
// so it signs in with every IdP down. Each sign-in with one is a use:
//
//	sign-in (password + one code + justification)
//	   │  one transaction: code used up, session with its own time
//	   │  bound, use record, auth.break_glass alert
//	   ▼
//	session active ── reaches emergency apps only ──▶ time bound passes:
//	   │                                              session.end (expired);
//	   │                                              never renewed
//	   ▼
//	use open ── review by admin A ──▶ open (1 of 2) ── review by admin B ──▶ closed
//
// The use stays open until ReviewsToClose different admins, none of them
// the account's user, have signed it off.

// ReviewsToClose is how many different admins must review a break-glass
// use before it is closed.
const ReviewsToClose = 2

// BreakGlassUseOpen reports whether u still waits for reviews.
func BreakGlassUseOpen(u store.BreakGlassUse) bool { return len(u.Reviews) < ReviewsToClose }

// BreakGlass is the emergency part of a SignIn.
type BreakGlass struct {
	Justification string        // the user's written reason, checked by the caller
	For           time.Duration // the session's time bound (> 0)
}

// CreateBreakGlass creates emergency account u (PasswordHash set, no TOTP)
// with its one-time codes (hashes), in one transaction with its
// admin.breakglass.create record.
func (s *State) CreateBreakGlass(ctx context.Context, o Origin, u store.User, codes [][]byte) (store.User, error) {
	u.BreakGlass, u.TOTPSecret = true, ""
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if u.PasswordHash == "" || len(codes) == 0 {
			return errors.New("state: emergency account without password or codes (a bug)")
		}
		u.CreatedAt = op.at
		if err := tx.CreateUser(ctx, u); errors.Is(err, store.ErrAlreadyExists) {
			return refuse(store.ErrAlreadyExists, "a user named %q already exists: choose another name for the emergency account", u.Name)
		} else if err != nil {
			return err
		}
		if err := tx.ReplaceRecoveryCodes(ctx, u.Name, codes, op.at); err != nil {
			return fmt.Errorf("store the one-time codes of emergency account %s: %w", u.Name, err)
		}
		op.success(audit.AdminBreakGlassCreate, u.Name, map[string]string{"codes": strconv.Itoa(len(codes))})
		op.change.Users = []string{u.Name}
		return nil
	})
	return u, err
}

// startBreakGlass records use of the emergency account in the sign-in's
// transaction: the use, and its auth.break_glass alert. sess is the
// session about to start; its ExpiresAt and BreakGlass are set here.
func startBreakGlass(ctx context.Context, tx store.Store, op *op, in SignIn, sess *store.Session, remaining int) error {
	sess.ExpiresAt = op.at.Add(in.BreakGlass.For)
	use := store.BreakGlassUse{User: in.User, DeviceID: sess.DeviceID, SessionID: sess.ID, Source: in.Source,
		Justification: in.BreakGlass.Justification, StartedAt: op.at, ExpiresAt: sess.ExpiresAt}
	var err error
	for range idAttempts {
		use.ID = NewID("bg-")
		if err = tx.CreateBreakGlassUse(ctx, use); !errors.Is(err, store.ErrAlreadyExists) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("record break-glass use of %s: %w", in.User, err)
	}
	sess.BreakGlass = use.ID
	op.record(store.AuditEvent{Type: audit.AuthBreakGlass, Outcome: string(audit.Raised), Subject: use.ID, Details: map[string]string{
		"user": in.User, "source": in.Source, "device": sess.DeviceID, "session": sess.ID,
		"justification": use.Justification, "expires_at": use.ExpiresAt.Format(time.RFC3339), "remaining": strconv.Itoa(remaining),
	}})
	return nil
}

// ReviewBreakGlass signs off use id as admin (who the two-admin rule
// counts: "account:NAME" or "token:NAME"), with the reviewer's comment,
// in one transaction with its admin.breakglass.review record. Refused
// (and recorded as a failure) for an unknown or closed use, a second
// review by the same admin, or a review by the account's own user.
func (s *State) ReviewBreakGlass(ctx context.Context, o Origin, admin, id, comment string) (store.BreakGlassUse, error) {
	var u store.BreakGlassUse
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if admin == "" {
			return errors.New("state: break-glass review without an admin (a bug)")
		}
		var err error
		u, err = tx.GetBreakGlassUse(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return refuse(store.ErrNotFound, "no break-glass use %q: list them with cordonctl breakglass list", clip(id))
		case err != nil:
			return err
		case !BreakGlassUseOpen(u):
			return refuse(ErrConflict, "break-glass use %q is closed already (reviewed by %s and %s)", id, u.Reviews[0].Reviewer, u.Reviews[1].Reviewer)
		case sameAccount(admin, u.User):
			return refuse(ErrConflict, "break-glass use %q was made by %s: its own user cannot review it; two other admins must", id, u.User)
		}
		for _, r := range u.Reviews {
			if r.Reviewer == admin {
				return refuse(ErrConflict, "break-glass use %q was reviewed by %s already (at %s): a different admin must sign it off", id, admin, r.At.Format(time.RFC3339))
			}
		}
		r := store.BreakGlassReview{Reviewer: admin, At: op.at, Comment: comment}
		if err := tx.AddBreakGlassReview(ctx, id, r); errors.Is(err, store.ErrAlreadyExists) {
			return refuse(ErrConflict, "break-glass use %q was reviewed by %s already: a different admin must sign it off", id, admin)
		} else if err != nil {
			return err
		}
		u.Reviews = append(u.Reviews, r)
		state := "open"
		if !BreakGlassUseOpen(u) {
			state = "closed"
		}
		op.success(audit.AdminBreakGlassReview, id, map[string]string{
			"user": u.User, "comment": comment, "reviews": strconv.Itoa(len(u.Reviews)), "state": state,
		})
		return nil
	})
	if refused := (*Refused)(nil); errors.As(err, &refused) {
		s.recordRefusal(ctx, o, audit.AdminBreakGlassReview, clip(id), refused.Msg, nil)
	}
	return u, err
}

// sameAccount reports whether the two-admin key admin names the user
// (an admin account or token of the same name as the emergency account).
func sameAccount(admin, user string) bool {
	_, name, _ := strings.Cut(admin, ":")
	return strings.EqualFold(name, user)
}
