package state

import (
	"context"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// PutCheckpoint stores a signed checkpoint of the audit log. It records no
// audit event: a checkpoint is a statement about the records, not one of
// them (a record per checkpoint would make the log grow because it was
// signed, for ever).
func (s *State) PutCheckpoint(ctx context.Context, c store.Checkpoint) error {
	_, err := s.apply(ctx, Origin{Actor: "controller"}, func(ctx context.Context, tx store.Store, op *op) error {
		op.bookkeeping = true
		return tx.PutCheckpoint(ctx, c)
	})
	return err
}
