package state

import (
	"context"
	"errors"
	"fmt"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
)

// This file: links to identity providers, and bookkeeping writes that the
// audit trail does not track.

// LinkIdentity links an IdP subject to its Cordon user at sign-in (creating
// the user at the first one, with an auth.idp.link record) or refreshes
// the claims of a known link. source is the client's address.
func (s *State) LinkIdentity(ctx context.Context, id store.Identity, source string) (store.Identity, error) {
	_, err := s.apply(ctx, Origin{Actor: "idp:" + id.IdP}, func(ctx context.Context, tx store.Store, op *op) error {
		id.LastRefresh, id.CreatedAt = op.at, op.at
		linked, err := tx.LinkIdentity(ctx, id)
		if errors.Is(err, store.ErrAlreadyExists) {
			return refuse(store.ErrAlreadyExists, "user name %q taken by another account", id.User)
		} else if err != nil {
			return err
		}
		if linked.CreatedAt.Equal(op.at) {
			op.success(audit.AuthIdPLink, linked.User, map[string]string{"source": source, "idp_subject": id.Subject, "email": id.Email, "comment": "user created at first sign-in"})
		} else {
			op.bookkeeping = true
		}
		op.change.Users = []string{linked.User} // its IdP groups may have changed
		id = linked
		return nil
	})
	return id, err
}

// BindAdminSubject binds an admin account that signs in through idp to the
// IdP subject of its first sign-in. ErrAlreadyExists: the subject is
// another account's; ErrTokenInvalid: the account was bound meanwhile.
func (s *State) BindAdminSubject(ctx context.Context, name, idp, subject string, details map[string]string) error {
	_, err := s.apply(ctx, Origin{Actor: "idp:" + idp}, func(ctx context.Context, tx store.Store, op *op) error {
		if err := tx.BindAdminSubject(ctx, name, idp, subject); err != nil {
			return err
		}
		op.success(audit.AdminIdPBind, name, details)
		return nil
	})
	return err
}

// TouchAdminToken notes when an admin token was last used (bookkeeping).
func (s *State) TouchAdminToken(ctx context.Context, id string) error {
	_, err := s.apply(ctx, Origin{}, func(ctx context.Context, tx store.Store, op *op) error {
		op.bookkeeping = true
		return tx.TouchAdminToken(ctx, id, op.at)
	})
	return err
}

// RefreshIdentity stores an identity's refreshed tokens and claims
// (bookkeeping), with ev when its groups or claim changed (ev.Type "":
// unchanged, no record).
func (s *State) RefreshIdentity(ctx context.Context, next store.Identity, ev store.AuditEvent) error {
	_, err := s.apply(ctx, Origin{Actor: "idp:" + next.IdP}, func(ctx context.Context, tx store.Store, op *op) error {
		if err := tx.UpdateIdentity(ctx, next); err != nil {
			return err
		}
		if ev.Type == "" {
			op.bookkeeping = true
			return nil
		}
		op.record(ev)
		op.change.Users = []string{next.User}
		return nil
	})
	return err
}

// CutOffIdentity ends every session of an identity's user because its
// provider refused the user or could not vouch for it in time: ev says
// why, each ended session gets its session.end record (reason, comment),
// and when update is set the identity is stored as given (marked invalid)
// in the same transaction. It returns how many sessions ended.
func (s *State) CutOffIdentity(ctx context.Context, id store.Identity, update bool, ev store.AuditEvent, reason, comment string) (int, error) {
	n := 0
	_, err := s.apply(ctx, Origin{Actor: "idp:" + id.IdP}, func(ctx context.Context, tx store.Store, op *op) error {
		if update {
			if err := tx.UpdateIdentity(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		op.record(ev)
		ended, err := tx.EndSessions(ctx, store.SessionFilter{User: id.User}, op.at, reason)
		if err != nil {
			return fmt.Errorf("end sessions of %s: %w", id.User, err)
		}
		op.sessionsEnded(ended, comment)
		op.change.Users = []string{id.User}
		n = len(ended)
		return nil
	})
	return n, err
}
