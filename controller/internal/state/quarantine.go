package state

import (
	"context"
	"errors"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// This file: device quarantine (ZTMM Devices, Optimal). A quarantined
// device is no gateway's peer and its map entitles it to nothing (the map
// engine reads Device.Quarantine), but it keeps its control channel and
// session: its user is told why and its posture keeps reporting. The
// quarantine is stored on the device, so neither a controller restart nor
// a new sign-in of the device ends it; only ReleaseDevice does.

// QuarantineDevice quarantines device id for reason (shown to its user),
// with its admin.device.quarantine record, and has every map that names
// the device recomputed.
func (s *State) QuarantineDevice(ctx context.Context, o Origin, id, reason string) (store.Device, error) {
	return s.setQuarantine(ctx, o, id, func(op *op, d store.Device) (store.Quarantine, error) {
		if !d.RevokedAt.IsZero() {
			return store.Quarantine{}, refuse(ErrConflict, "device %q was revoked on %s: it reaches nothing already", d.ID, d.RevokedAt.Format(time.RFC3339))
		}
		if q := d.Quarantine; q.Active() {
			return store.Quarantine{}, refuse(ErrConflict, "device %q is quarantined already (since %s by %s: %q); to change the reason, release it first (cordonctl device release)",
				d.ID, q.At.Format(time.RFC3339), q.By, q.Reason)
		}
		op.success(audit.AdminDeviceQuarantine, d.ID, map[string]string{"user": d.User, "reason": reason})
		return store.Quarantine{At: op.at, By: o.Actor, Reason: reason}, nil
	})
}

// ReleaseDevice ends device id's quarantine, with its admin.device.release
// record (comment: the admin's, may be empty); the device reaches its apps
// again.
func (s *State) ReleaseDevice(ctx context.Context, o Origin, id, comment string) (store.Device, error) {
	return s.setQuarantine(ctx, o, id, func(op *op, d store.Device) (store.Quarantine, error) {
		q := d.Quarantine
		if !q.Active() {
			return store.Quarantine{}, refuse(ErrConflict, "device %q is not quarantined (cordonctl device show %s)", d.ID, d.ID)
		}
		details := map[string]string{"user": d.User, "quarantined_at": q.At.Format(time.RFC3339), "quarantined_by": q.By, "reason": q.Reason}
		if comment != "" {
			details["comment"] = comment
		}
		op.success(audit.AdminDeviceRelease, d.ID, details)
		return store.Quarantine{}, nil
	})
}

// setQuarantine reads device id, lets decide check it and record the
// event, and stores the quarantine decide returns, in one transaction.
func (s *State) setQuarantine(ctx context.Context, o Origin, id string, decide func(*op, store.Device) (store.Quarantine, error)) (store.Device, error) {
	var d store.Device
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		var err error
		d, err = tx.GetDevice(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "device %q not found (cordonctl device list)", clip(id))
		} else if err != nil {
			return err
		}
		q, err := decide(op, d)
		if err != nil {
			return err
		}
		if err := tx.SetDeviceQuarantine(ctx, id, q); err != nil {
			return err
		}
		d.Quarantine = q
		op.change.Devices = append(op.change.Devices, id)
		return nil
	})
	return d, err
}

// keyQuarantined refuses a sign-in that would put key, held by a
// quarantined device other than deviceID, on another device (a new
// enrollment, or the sign-in of another device).
func keyQuarantined(ctx context.Context, tx store.Store, key wgkey.Public, deviceID string) error {
	holders, err := tx.ListDevicesByKey(ctx, key)
	if err != nil {
		return err
	}
	for _, d := range holders {
		if d.ID != deviceID && d.Quarantine.Active() {
			return refuse(ErrConflict, "this computer's key belongs to device %s, which is %s", d.ID, controlproto.QuarantineMessage(d.Quarantine.Reason))
		}
	}
	return nil
}
