package state

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
	"golang.org/x/mod/sumdb/tlog"
)

// This file: retention and archiving of audit records.
//
// Records are kept RetentionYears (6 by default: 45 CFR 164.316(b)(2)
// keeps documentation six years from its creation) and nothing removes
// them on its own. Archiving takes the bodies of the oldest records out
// of the database and keeps their tree hashes, so the log still verifies
// (ledger.Verify) and the bodies live on in an export bundle the
// requester wrote first. Before the newest record of the range is past
// its retention end it takes two admins: one requests
// (RequestArchive), another approves (ApproveArchive) before the request
// expires; the approval is used up in the transaction that archives.
// Past retention, one admin's request archives at once. Every step, and
// every refusal, is an audit record.

// Retention defaults and floor.
const (
	// DefaultRetentionYears is how long records are kept by default.
	DefaultRetentionYears = 6
	// MinRetentionYears is the shortest retention the controller accepts:
	// HIPAA's six years. Longer is allowed (a state's law may ask more).
	MinRetentionYears = 6
	// DefaultArchiveRequestTTL is how long a request waits for its
	// second admin.
	DefaultArchiveRequestTTL = 72 * time.Hour
)

// ErrArchiveRefused classifies a refused archive request or approval;
// the Refused message says why.
var ErrArchiveRefused = errors.New("archive refused")

// ArchiveAsk is what the requesting admin sends.
type ArchiveAsk struct {
	ToSeq        int64  // archive the records not archived yet up to this seq
	Reason       string // required
	BundleSHA256 string // hex SHA-256 of the export bundle of the range, written first
}

// ArchiveResult is what RequestArchive did: a request waiting for a
// second admin, or (records past retention) the archive itself.
type ArchiveResult struct {
	Request *store.ArchiveRequest
	Archive *store.AuditArchive
	// RetentionEnd is when the newest record of the range is past its
	// retention.
	RetentionEnd time.Time
}

// RetentionYears is the configured retention.
func (s *State) RetentionYears() int { return s.retentionYears }

// RetentionEnd is when a record made at t may be archived by one admin.
func (s *State) RetentionEnd(t time.Time) time.Time { return t.AddDate(s.retentionYears, 0, 0) }

func validBundleHash(h string) bool {
	if len(h) != 64 {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil
}

// RequestArchive asks to archive the records after the archived prefix
// up to ask.ToSeq. admin names the requesting admin (their account, so
// two tokens of one account count as one admin). If every record of the
// range is past its retention end the records are archived now;
// otherwise a request is stored that another admin must approve.
func (s *State) RequestArchive(ctx context.Context, o Origin, admin string, ask ArchiveAsk) (ArchiveResult, error) {
	var res ArchiveResult
	var from int64
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		res = ArchiveResult{}
		switch {
		case admin == "":
			return errors.New("state: archive request without an admin (a bug)")
		case ask.Reason == "":
			return refuse(ErrArchiveRefused, "a reason is required")
		case len(ask.Reason) > 1000:
			return refuse(ErrArchiveRefused, "the reason is longer than 1000 bytes")
		case !validBundleHash(ask.BundleSHA256):
			return refuse(ErrArchiveRefused, "bundle_sha256 must be the hex SHA-256 of the export bundle of the range (cordonctl audit archive writes it first)")
		}
		var err error
		if from, err = nextArchiveSeq(ctx, tx); err != nil {
			return err
		}
		n, err := tx.AuditLogSize(ctx)
		if err != nil {
			return err
		}
		if ask.ToSeq < from || ask.ToSeq > n {
			return refuse(ErrArchiveRefused, "records up to seq %d are archived and the log ends at %d: --to must be from %d to %d", from-1, n, from, n)
		}
		newest, err := tx.ReadNewestAuditTime(ctx, from, ask.ToSeq)
		if err != nil {
			return err
		}
		res.RetentionEnd = s.RetentionEnd(newest)
		details := map[string]string{
			"from_seq": strconv.FormatInt(from, 10), "to_seq": strconv.FormatInt(ask.ToSeq, 10),
			"reason": ask.Reason, "bundle_sha256": ask.BundleSHA256,
		}
		if !op.at.Before(res.RetentionEnd) {
			a := store.AuditArchive{FromSeq: from, ToSeq: ask.ToSeq, BundleSHA256: ask.BundleSHA256, Reason: ask.Reason,
				RequestedBy: admin, At: op.at}
			if err := archive(ctx, tx, &a); err != nil {
				return err
			}
			details["root"] = a.Root
			details["retention_end"] = res.RetentionEnd.Format(time.RFC3339)
			op.success(audit.AuditArchivePastRetention, "to seq "+details["to_seq"], details)
			res.Archive = &a
			return nil
		}
		r := store.ArchiveRequest{ID: newRequestID(), FromSeq: from, ToSeq: ask.ToSeq, Reason: ask.Reason,
			BundleSHA256: ask.BundleSHA256, RequestedBy: admin, CreatedAt: op.at, ExpiresAt: op.at.Add(s.archiveTTL)}
		if err := tx.CreateArchiveRequest(ctx, r); err != nil {
			return err
		}
		details["request"] = r.ID
		details["expires_at"] = r.ExpiresAt.Format(time.RFC3339)
		op.success(audit.AuditArchiveRequest, r.ID, details)
		res.Request = &r
		return nil
	})
	if refused := (*Refused)(nil); errors.As(err, &refused) {
		s.recordRefusal(ctx, o, audit.AuditArchiveRequest, "to seq "+strconv.FormatInt(ask.ToSeq, 10), refused.Msg, nil)
	}
	return res, err
}

// ApproveArchive approves request id as admin and archives its range, in
// one transaction that also uses the request up. Refused (and recorded as
// a failure) when admin is the requester, the request expired, was used
// before, or the archived prefix moved since it was made.
func (s *State) ApproveArchive(ctx context.Context, o Origin, admin, id string) (store.AuditArchive, error) {
	var a store.AuditArchive
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if admin == "" {
			return errors.New("state: archive approval without an admin (a bug)")
		}
		r, err := tx.GetArchiveRequest(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return refuse(ErrArchiveRefused, "no archive request %q: list them with cordonctl audit requests", id)
		case err != nil:
			return err
		case r.ApprovedAt != nil:
			return refuse(ErrArchiveRefused, "archive request %q was approved already (by %s at %s): an approval is used once", id, r.ApprovedBy, r.ApprovedAt.Format(time.RFC3339))
		case !op.at.Before(r.ExpiresAt):
			return refuse(ErrArchiveRefused, "archive request %q expired at %s: request it again", id, r.ExpiresAt.Format(time.RFC3339))
		case r.RequestedBy == admin:
			return refuse(ErrArchiveRefused, "archive request %q was made by %s: another admin must approve it", id, admin)
		}
		if err := tx.ConsumeArchiveRequest(ctx, id, admin, op.at); err != nil {
			return err
		}
		a = store.AuditArchive{FromSeq: r.FromSeq, ToSeq: r.ToSeq, BundleSHA256: r.BundleSHA256, Reason: r.Reason,
			Request: r.ID, RequestedBy: r.RequestedBy, ApprovedBy: admin, At: op.at}
		if err := archive(ctx, tx, &a); errors.Is(err, store.ErrStale) {
			return refuse(ErrArchiveRefused, "archive request %q starts at seq %d but records were archived since: request it again", id, r.FromSeq)
		} else if err != nil {
			return err
		}
		op.success(audit.AuditArchiveApprove, id, map[string]string{
			"request": id, "from_seq": strconv.FormatInt(a.FromSeq, 10), "to_seq": strconv.FormatInt(a.ToSeq, 10),
			"reason": a.Reason, "bundle_sha256": a.BundleSHA256, "requested_by": a.RequestedBy, "root": a.Root,
		})
		return nil
	})
	if refused := (*Refused)(nil); errors.As(err, &refused) {
		s.recordRefusal(ctx, o, audit.AuditArchiveApprove, id, refused.Msg, map[string]string{"request": id})
	}
	return a, err
}

// recordRefusal records a refused archive step as a failure. A failure
// to record it is logged: the refusal itself stands.
func (s *State) recordRefusal(ctx context.Context, o Origin, typ audit.Type, subject, reason string, details map[string]string) {
	d := map[string]string{"reason": reason}
	for k, v := range details {
		d[k] = v
	}
	if err := s.Record(context.WithoutCancel(ctx), o, store.AuditEvent{Type: typ, Outcome: string(audit.Failure), Subject: subject, Details: d}); err != nil {
		s.log.ErrorContext(ctx, "record refused step", "type", typ, "error", err)
	}
}

// nextArchiveSeq is the first record not archived.
func nextArchiveSeq(ctx context.Context, tx store.Store) (int64, error) {
	as, err := tx.ListAuditArchives(ctx)
	if err != nil || len(as) == 0 {
		return 1, err
	}
	return as[len(as)-1].ToSeq + 1, nil
}

// archive fills a.Root (the log's root at a.ToSeq, from the stored
// hashes) and archives the range.
func archive(ctx context.Context, tx store.Store, a *store.AuditArchive) error {
	root, err := tlog.TreeHash(a.ToSeq, tlog.HashReaderFunc(func(ix []int64) ([]tlog.Hash, error) { return tx.ReadAuditHashes(ctx, ix) }))
	if err != nil {
		return fmt.Errorf("audit log root at seq %d: %w", a.ToSeq, err)
	}
	a.Root = root.String()
	return tx.ArchiveAudit(ctx, *a)
}

func newRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return "ar-" + hex.EncodeToString(b[:])
}
