package store

import (
	"context"
	"time"

	"github.com/cordonhq/cordon/pkg/posture"
)

// PostureRecord is the latest posture report of one device, as the
// device reported it: every field of Report is self-reported (the
// controller validated its shape, not its truth).
type PostureRecord struct {
	DeviceID string         `json:"device_id"`
	Report   posture.Report `json:"report"`
	// Digest identifies the report's content apart from its collection
	// time: a device re-sending the same posture keeps the same digest.
	Digest string `json:"digest"`
	// ReceivedAt is when the controller last received this report (the
	// controller's clock, unlike Report.CollectedAt).
	ReceivedAt time.Time `json:"received_at"`
	// ChangedAt is when the content (Digest) last changed.
	ChangedAt time.Time `json:"changed_at"`
	// AuditedAt is when a posture.report audit event was last recorded
	// for this device (unchanged reports are audited at most hourly).
	AuditedAt time.Time `json:"audited_at,omitzero"`
	// Passing are the posture checks the report passed under the policy
	// active when it was received, sorted (for the audit trail; maps are
	// computed from Report under the policy active then).
	Passing []string `json:"passing"`
}

// PostureStore keeps the latest posture report of each device (issue 5).
// Part of [Store].
type PostureStore interface {
	// PutPosture stores r as its device's latest report, replacing the
	// previous one (ErrNotFound if the device does not exist). Deleting
	// the device deletes its report.
	PutPosture(ctx context.Context, r PostureRecord) error
	// GetPosture returns a device's latest report (ErrNotFound if none).
	GetPosture(ctx context.Context, deviceID string) (PostureRecord, error)
}
