package state

import (
	"context"
	"errors"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// This file: what agents report over the control channel.

// SetGatewayEndpoint stores the endpoint a gateway says it listens on
// (bookkeeping: the gateway reports it at every connect). Clients' maps
// carry it.
func (s *State) SetGatewayEndpoint(ctx context.Context, id, endpoint string) error {
	_, err := s.apply(ctx, Origin{Actor: "gateway:" + id}, func(ctx context.Context, tx store.Store, op *op) error {
		op.bookkeeping = true
		gw, err := tx.GetGateway(ctx, id)
		if err != nil {
			return err
		}
		if gw.Endpoint == endpoint {
			return errNothing
		}
		if err := tx.UpdateGatewayEndpoint(ctx, id, endpoint); err != nil {
			return err
		}
		op.change.Gateways = []string{id}
		return nil
	})
	if errors.Is(err, errNothing) {
		return nil
	}
	return err
}

// PutPosture stores a device's posture report, with its posture.report
// record when ev is not nil (a changed report, or the periodic one), in
// one transaction. affectsMap: the checks the device passes changed, so its
// maps must be computed again.
func (s *State) PutPosture(ctx context.Context, rec store.PostureRecord, ev *store.AuditEvent, affectsMap bool) error {
	_, err := s.apply(ctx, Origin{Actor: "device:" + rec.DeviceID}, func(ctx context.Context, tx store.Store, op *op) error {
		if err := tx.PutPosture(ctx, rec); err != nil {
			return err
		}
		if ev != nil {
			op.record(*ev)
		} else {
			op.bookkeeping = true
		}
		if affectsMap {
			op.change.Devices = []string{rec.DeviceID}
		}
		return nil
	})
	return err
}
