package state

import (
	"context"
	"errors"

	"github.com/cordonhq/cordon/controller/internal/store"
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
			op.success(store.AuditIdPLink, linked.User, map[string]string{"source": source, "idp_subject": id.Subject, "email": id.Email, "comment": "user created at first sign-in"})
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
		op.success("admin.idp.bind", name, details)
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
