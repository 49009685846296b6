package state

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
)

// This file: admin accounts and admin tokens. None of it changes a
// network map.

// CreateAdmin creates an admin account. Its name must not be that of a
// usable standalone admin token: both act as "admin:<name>" in the audit
// trail, and an account must not pass for a token.
func (s *State) CreateAdmin(ctx context.Context, o Origin, x store.Admin) (store.Admin, error) {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		toks, err := tx.ListAdminTokens(ctx)
		if err != nil {
			return err
		}
		for _, t := range toks {
			if t.Admin == "" && t.Name == x.Name && t.Usable(op.at) {
				return refuse(store.ErrAlreadyExists, "%q is the name of admin token %s: give the account another name (or revoke the token)", x.Name, t.ID)
			}
		}
		x.CreatedAt = op.at
		if err := tx.CreateAdmin(ctx, x); errors.Is(err, store.ErrAlreadyExists) {
			if x.Subject != "" {
				return refuse(store.ErrAlreadyExists, "admin %q already exists, or the subject %q of %s is already another admin account", x.Name, clip(x.Subject), x.IdP)
			}
			return refuse(store.ErrAlreadyExists, "admin %q already exists", x.Name)
		} else if err != nil {
			return err
		}
		d := map[string]string{"role": x.Role}
		if x.IdP != "" {
			d["idp"], d["idp_subject"] = x.IdP, x.Subject
		}
		op.success(audit.AdminAdminCreate, x.Name, d)
		return nil
	})
	return x, err
}

// SetAdminDisabled disables or enables an admin account.
func (s *State) SetAdminDisabled(ctx context.Context, o Origin, name string, disabled bool) (store.Admin, error) {
	var x store.Admin
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if err := tx.SetAdminDisabled(ctx, name, disabled); errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "admin %q not found", name)
		} else if err != nil {
			return err
		}
		typ := audit.AdminAdminEnable
		if disabled {
			typ = audit.AdminAdminDisable
		}
		op.success(typ, name, nil)
		var err error
		x, err = tx.GetAdmin(ctx, name)
		return err
	})
	return x, err
}

// DeleteAdmin deletes an admin account and its tokens.
func (s *State) DeleteAdmin(ctx context.Context, o Origin, name string) error {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if err := tx.DeleteAdmin(ctx, name); errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "admin %q not found", name)
		} else if err != nil {
			return err
		}
		op.success(audit.AdminAdminDelete, name, nil)
		return nil
	})
	return err
}

// createAdminToken stores t (Hash set by the caller) with a new ID, valid
// for ttl from the op's time.
func createAdminToken(ctx context.Context, tx store.Store, op *op, t store.AdminToken, ttl time.Duration) (store.AdminToken, error) {
	t.CreatedAt = op.at
	t.ExpiresAt = t.CreatedAt.Add(ttl)
	var err error
	for range idAttempts {
		t.ID = NewID("adt-")
		if err = tx.CreateAdminToken(ctx, t); !errors.Is(err, store.ErrAlreadyExists) {
			break
		}
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return t, refuse(store.ErrNotFound, "admin %q not found", cmp.Or(t.Admin, t.Account))
	case err != nil:
		return t, fmt.Errorf("store admin token: %w", err)
	}
	return t, nil
}

// CreateAdminToken issues a standalone admin token (t.Hash set by the
// caller). Its name must not be an admin account's.
func (s *State) CreateAdminToken(ctx context.Context, o Origin, t store.AdminToken, ttl time.Duration) (store.AdminToken, error) {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if _, err := tx.GetAdmin(ctx, t.Name); err == nil {
			return refuse(store.ErrAlreadyExists, "%q is the name of an admin account: give the token another name", t.Name)
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		var err error
		if t, err = createAdminToken(ctx, tx, op, t, ttl); err != nil {
			return err
		}
		d := map[string]string{"name": t.Name, "role": t.Role, "expires_at": t.ExpiresAt.Format(time.RFC3339)}
		if len(t.Scopes) > 0 {
			d["scopes"] = strings.Join(t.Scopes, ",")
		}
		op.success(audit.AdminTokenCreate, t.ID, d)
		return nil
	})
	return t, err
}

// AdminSignIn issues the sign-in token (t.Hash set by the caller) of an
// admin account that proved who it is; details describe the sign-in for
// its admin.login record. Tokens that ended a month ago are pruned.
func (s *State) AdminSignIn(ctx context.Context, t store.AdminToken, ttl time.Duration, details map[string]string) (store.AdminToken, error) {
	_, err := s.apply(ctx, Origin{Actor: "admin:" + t.Admin}, func(ctx context.Context, tx store.Store, op *op) error {
		var err error
		if t, err = createAdminToken(ctx, tx, op, t, ttl); err != nil {
			return err
		}
		d := map[string]string{"token": t.ID, "role": t.Role, "expires_at": t.ExpiresAt.Format(time.RFC3339)}
		for k, v := range details {
			d[k] = v
		}
		op.success(audit.AdminLogin, t.Admin, d)
		if t.Role == string(auth.RoleOwner) {
			if err := revokeBootstrapTokens(ctx, tx, op, t.Admin); err != nil {
				return err
			}
		}
		// Forget tokens that ended long ago, so sign-ins do not grow the
		// table without bound; a month keeps them for a review of recent use.
		_, err = tx.PruneAdminTokens(ctx, op.at.Add(-30*24*time.Hour))
		return err
	})
	return t, err
}

// RevokeAdminToken revokes an admin token; reason ("logout", or "") goes
// into the record. quiet: a token already gone is no error (a logout).
func (s *State) RevokeAdminToken(ctx context.Context, o Origin, id, reason string, quiet bool) error {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		err := tx.RevokeAdminToken(ctx, id, op.at)
		switch {
		case errors.Is(err, store.ErrNotFound) && quiet:
			return errNothing
		case errors.Is(err, store.ErrNotFound):
			return refuse(store.ErrNotFound, "admin token %q not found or already revoked (cordonctl token list)", clip(id))
		case err != nil:
			return err
		}
		var d map[string]string
		if reason != "" {
			d = map[string]string{"reason": reason}
		}
		op.success(audit.AdminTokenRevoke, id, d)
		return nil
	})
	if errors.Is(err, errNothing) {
		return nil
	}
	return err
}

// BootstrapCreator is store.AdminToken.CreatedBy of the owner token the
// controller makes when no owner credential exists.
const BootstrapCreator = "controller:bootstrap"

// revokeBootstrapTokens revokes the usable bootstrap owner tokens once an
// owner account has signed in: the account works, so the token's one job
// (creating it) is done, and a copy of it left in a terminal, a ticket or
// the data directory must not stay an owner credential for the rest of
// its day. (At an owner account's creation it would be too early: an
// account whose sign-in does not work yet would leave nobody able to act
// until the controller restarts.)
func revokeBootstrapTokens(ctx context.Context, tx store.Store, op *op, admin string) error {
	toks, err := tx.ListAdminTokens(ctx)
	if err != nil {
		return err
	}
	for _, bt := range toks {
		if bt.CreatedBy != BootstrapCreator || !bt.Usable(op.at) {
			continue
		}
		if err := tx.RevokeAdminToken(ctx, bt.ID, op.at); err != nil {
			return fmt.Errorf("revoke bootstrap token %s: %w", bt.ID, err)
		}
		op.success(audit.AdminTokenRevoke, bt.ID, map[string]string{
			"reason": fmt.Sprintf("owner account %q signed in: the bootstrap owner token is no longer needed", admin)})
	}
	return nil
}

// BootstrapOwnerToken stores the owner token made when no owner credential
// exists (ID, Hash and times set by the caller), with its record, recorded
// by the controller.
func (s *State) BootstrapOwnerToken(ctx context.Context, t store.AdminToken, details map[string]string) error {
	_, err := s.apply(ctx, Origin{Actor: "controller"}, func(ctx context.Context, tx store.Store, op *op) error {
		if err := tx.CreateAdminToken(ctx, t); err != nil {
			return err
		}
		op.record(store.AuditEvent{Time: t.CreatedAt, Type: audit.AdminTokenCreate, Outcome: "success", Subject: t.ID, Details: details})
		return nil
	})
	return err
}
