package state

import (
	"context"
	"errors"
	"strconv"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
)

// PutPolicy stores a checked policy file as the next version and makes it
// active, if version prev is still the active one (0: none). typ is
// audit.AdminPolicyApply or AdminPolicyRollback; details go into the audit
// record, with the new version added.
func (s *State) PutPolicy(ctx context.Context, o Origin, typ audit.Type, prev int64, nv store.PolicyVersion, details map[string]string) (store.PolicyVersion, error) {
	var stored store.PolicyVersion
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		nv.Actor, nv.CreatedAt = o.Actor, op.at
		var err error
		stored, err = tx.PutPolicyVersion(ctx, prev, nv)
		if errors.Is(err, store.ErrStale) {
			return refuse(ErrConflict, "another policy was applied since this request read version %d; run cordonctl policy plan again", prev)
		} else if err != nil {
			return err
		}
		d := make(map[string]string, len(details)+1)
		for k, v := range details {
			d[k] = v
		}
		d["version"] = strconv.FormatInt(stored.Version, 10)
		op.success(typ, "version "+d["version"], d)
		op.change.Policy = true
		return nil
	})
	return stored, err
}

// Record appends audit events that record no change: a refused attempt, a
// failed sign-in, a flow. They carry the origin's actor and request ID
// (for correlation) but do not claim the request ID: a retry of a refused
// call is not "already applied".
func (s *State) Record(ctx context.Context, o Origin, evs ...store.AuditEvent) error {
	if len(evs) == 0 {
		return nil
	}
	op := &op{origin: o, at: s.Stamp()}
	for _, ev := range evs {
		op.record(ev)
	}
	return s.st.AppendAudit(ctx, op.events...)
}
