package state

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
)

// This file: what agents report over the control channel, and the
// admin's drain of a gateway.

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

// flowGap is the record of a hole in a spool's numbers.
func flowGap(b FlowBatch, from, to uint64) store.AuditEvent {
	u := func(n uint64) string { return strconv.FormatUint(n, 10) }
	return store.AuditEvent{Type: audit.AuditFlowGap, Outcome: string(audit.Raised), Subject: b.GatewayID,
		Details: map[string]string{"spool": b.SpoolID, "from": u(from), "to": u(to), "missing": u(to - from + 1)}}
}

// FlowBatch is numbered flow records from one gateway's spool (capability
// 9): Seqs[i] is the gateway's sequence number of Events[i].
type FlowBatch struct {
	GatewayID string
	SpoolID   string
	Events    []store.AuditEvent
	Seqs      []uint64
}

// RecordFlowBatch appends the records of b that the controller does not
// hold yet (sequence numbers above the highest committed from the same
// spool) and stores the new highest, in one transaction: a gateway that
// resends after a crash or a lost acknowledgement gets each record
// recorded once. It returns the highest sequence number committed from
// the spool, which the gateway may delete up to. A spool ID other than
// the stored one is a new spool (the gateway's was deleted): its numbers
// start again.
func (s *State) RecordFlowBatch(ctx context.Context, b FlowBatch) (uint64, error) {
	if len(b.Events) != len(b.Seqs) {
		return 0, fmt.Errorf("record flow batch: %d events but %d sequence numbers (a bug)", len(b.Events), len(b.Seqs))
	}
	var acked uint64
	_, err := s.apply(ctx, Origin{Actor: "gateway:" + b.GatewayID}, func(ctx context.Context, tx store.Store, op *op) error {
		prev, err := tx.GetFlowAck(ctx, b.GatewayID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			prev = store.FlowAck{}
		case err != nil:
			return err
		}
		high := uint64(0)
		if prev.SpoolID == b.SpoolID {
			high = prev.Seq
		}
		acked = high
		for i, ev := range b.Events {
			if b.Seqs[i] <= high {
				continue // a resend
			}
			// A hole in the numbers is records the gateway never sent
			// (unreadable in its spool) or sent out of order (a defect):
			// they are not in the trail, and the trail says so. Numbers
			// of a spool new to the controller start wherever it is.
			if high > 0 && b.Seqs[i] > high+1 {
				op.record(flowGap(b, high+1, b.Seqs[i]-1))
			}
			high = b.Seqs[i]
			op.record(ev)
		}
		if high == acked && prev.SpoolID == b.SpoolID {
			op.bookkeeping = true // nothing new
			return errNothing
		}
		op.bookkeeping = len(op.events) == 0 // a new spool's first (empty) report
		if err := tx.PutFlowAck(ctx, store.FlowAck{GatewayID: b.GatewayID, SpoolID: b.SpoolID, Seq: high, UpdatedAt: op.at}); err != nil {
			return err
		}
		acked = high
		return nil
	})
	if errors.Is(err, errNothing) {
		return acked, nil
	}
	if err != nil {
		return 0, fmt.Errorf("record flow events of gateway %s: %w", b.GatewayID, err)
	}
	return acked, nil
}

// DrainGateway drains gateway id before maintenance: clients move each of
// its segments to another gateway at their first quiet moment, and the
// gateway lets its peers go as their flows end (controlproto capability
// 14). It survives restarts (the store holds it) until UndrainGateway.
// live reports whether a gateway is up now (the control server's view):
// draining the segment's last live gateway that is not draining would cut
// every client off the segment, so it is refused unless force. Draining a
// drained gateway changes nothing.
func (s *State) DrainGateway(ctx context.Context, o Origin, id string, force bool, live func(id string) bool) error {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		gw, err := tx.GetGateway(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "gateway %q not found: 'cordonctl gateway list' shows the gateways", clip(id))
		} else if err != nil {
			return err
		}
		if !gw.DrainedAt.IsZero() {
			return errNothing
		}
		others, err := tx.ListGateways(ctx)
		if err != nil {
			return err
		}
		spare := false
		for _, g := range others {
			if g.ID != id && g.Segment == gw.Segment && g.DrainedAt.IsZero() && live(g.ID) {
				spare = true
				break
			}
		}
		if !spare && !force {
			return refuse(ErrConflict, "gateway %s (%s) is the last live gateway of segment %s that is not draining: draining it cuts every client off the segment; "+
				"enroll or start another gateway of the segment first (or undrain one), or drain with --force", gw.Name, gw.ID, gw.Segment)
		}
		if err := tx.SetGatewayDrained(ctx, id, op.at); err != nil {
			return err
		}
		details := map[string]string{"segment": gw.Segment}
		if !spare {
			details["forced"] = "true"
		}
		op.success(audit.AdminGatewayDrain, id, details)
		op.change.Gateways = []string{id}
		return nil
	})
	if errors.Is(err, errNothing) {
		return nil
	}
	return err
}

// UndrainGateway lets a drained gateway take clients again. Undraining a
// gateway that is not drained changes nothing.
func (s *State) UndrainGateway(ctx context.Context, o Origin, id string) error {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		gw, err := tx.GetGateway(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "gateway %q not found: 'cordonctl gateway list' shows the gateways", clip(id))
		} else if err != nil {
			return err
		}
		if gw.DrainedAt.IsZero() {
			return errNothing
		}
		if err := tx.SetGatewayDrained(ctx, id, time.Time{}); err != nil {
			return err
		}
		op.success(audit.AdminGatewayUndrain, id, map[string]string{"segment": gw.Segment})
		op.change.Gateways = []string{id}
		return nil
	})
	if errors.Is(err, errNothing) {
		return nil
	}
	return err
}
