package store

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// AuditQuery is an audit search (cordonctl audit search): every non-zero
// field must match. Results come newest first by (Time, Seq), in pages.
type AuditQuery struct {
	Type    string // exact type, or a prefix ending in "." ("flow.")
	User    string // exact, as audit.KeysOf finds it
	Device  string // exact
	App     string // exact
	Outcome string // exact
	Since   time.Time
	Until   time.Time // exclusive; zero: no bound
	// Cursor is the NextCursor of the previous page ("" for the first).
	// It is only valid with the same filters.
	Cursor string
	Limit  int // 0 means 100; at most MaxAuditSearchLimit
}

// MaxAuditSearchLimit is the largest page SearchAudit returns.
const MaxAuditSearchLimit = 1000

// AuditPage is one page of a search.
type AuditPage struct {
	Events []AuditEvent
	// NextCursor continues the search after Events; "" when there is
	// nothing more. Records appended while a search pages are newer than
	// its first page and are not in it: paging never repeats or skips a
	// record that was there when it began (unless archived meanwhile).
	NextCursor string
}

// ErrBadCursor is returned for a cursor that was not made by a search
// with the same filters.
var ErrBadCursor = errors.New("invalid search cursor: start the search again without --cursor")

// SearchCursor is the position after the last record of a page.
type SearchCursor struct {
	Time time.Time
	Seq  int64
}

// cursorVersion is the first byte of an encoded cursor.
const cursorVersion = 1

// filterTag ties a cursor to its query's filters.
func (q AuditQuery) filterTag() [8]byte {
	h := sha256.New()
	for _, s := range []string{q.Type, q.User, q.Device, q.App, q.Outcome} {
		fmt.Fprintf(h, "%d:%s", len(s), s)
	}
	var t [16]byte
	binary.BigEndian.PutUint64(t[:8], uint64(q.Since.UnixMicro()))
	binary.BigEndian.PutUint64(t[8:], uint64(q.Until.UnixMicro()))
	h.Write(t[:])
	var out [8]byte
	copy(out[:], h.Sum(nil))
	return out
}

// EncodeCursor returns the opaque cursor of position c for q's filters.
func (q AuditQuery) EncodeCursor(c SearchCursor) string {
	b := make([]byte, 0, 25)
	b = append(b, cursorVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(c.Time.UnixMicro()))
	b = binary.BigEndian.AppendUint64(b, uint64(c.Seq))
	tag := q.filterTag()
	b = append(b, tag[:]...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor reads q.Cursor; ok is false for no cursor. ErrBadCursor
// for anything EncodeCursor did not write for these filters.
func (q AuditQuery) DecodeCursor() (c SearchCursor, ok bool, err error) {
	if q.Cursor == "" {
		return c, false, nil
	}
	if len(q.Cursor) > 64 {
		return c, false, ErrBadCursor
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(q.Cursor)
	if err != nil || len(b) != 25 || b[0] != cursorVersion {
		return c, false, ErrBadCursor
	}
	tag := q.filterTag()
	if [8]byte(b[17:25]) != tag {
		return c, false, ErrBadCursor
	}
	seq := int64(binary.BigEndian.Uint64(b[9:17]))
	if seq < 1 {
		return c, false, ErrBadCursor
	}
	c.Time = time.UnixMicro(int64(binary.BigEndian.Uint64(b[1:9]))).UTC()
	c.Seq = seq
	return c, true, nil
}

// ArchiveRequest is one admin's request to archive the audit records from
// FromSeq to ToSeq before their retention ends; a different admin must
// approve it (once, before ExpiresAt).
type ArchiveRequest struct {
	ID           string     `json:"id"`
	FromSeq      int64      `json:"from_seq"`
	ToSeq        int64      `json:"to_seq"`
	Reason       string     `json:"reason"`
	BundleSHA256 string     `json:"bundle_sha256"`
	RequestedBy  string     `json:"requested_by"` // the admin (account, or token name without one)
	CreatedAt    time.Time  `json:"created_at"`
	ExpiresAt    time.Time  `json:"expires_at"`
	ApprovedBy   string     `json:"approved_by,omitempty"`
	ApprovedAt   *time.Time `json:"approved_at,omitempty"`
}

// AuditArchive is a range of records whose bodies were archived: taken
// out of the database, their tree hashes kept. Ranges are a prefix of the
// log: each one starts after the one before.
type AuditArchive struct {
	FromSeq      int64     `json:"from_seq"`
	ToSeq        int64     `json:"to_seq"`
	Root         string    `json:"root"` // the log's root hash at ToSeq (base64)
	BundleSHA256 string    `json:"bundle_sha256"`
	Reason       string    `json:"reason"`
	Request      string    `json:"request,omitempty"` // "" when one admin archived records past retention
	RequestedBy  string    `json:"requested_by"`
	ApprovedBy   string    `json:"approved_by,omitempty"`
	At           time.Time `json:"at"`
}

// Archive errors callers branch on.
var (
	ErrRequestUsed = errors.New("archive request already approved (an approval is single-use)")
	ErrExpired     = errors.New("expired")
)

// AuditArchiveStore keeps audit search and archiving. Only the state owner
// calls its writes.
type AuditArchiveStore interface {
	// SearchAudit returns one page of the records (not archived) that
	// match q. ErrBadCursor for a cursor of other filters.
	SearchAudit(ctx context.Context, q AuditQuery) (AuditPage, error)

	// CreateArchiveRequest stores a new request (ErrAlreadyExists).
	CreateArchiveRequest(ctx context.Context, r ArchiveRequest) error
	// GetArchiveRequest returns one (ErrNotFound).
	GetArchiveRequest(ctx context.Context, id string) (ArchiveRequest, error)
	// ListArchiveRequests returns every request, newest first.
	ListArchiveRequests(ctx context.Context) ([]ArchiveRequest, error)
	// ConsumeArchiveRequest marks the request approved by approver at
	// `at`: ErrNotFound, ErrRequestUsed if it was approved before. Of
	// concurrent approvals exactly one succeeds.
	ConsumeArchiveRequest(ctx context.Context, id, approver string, at time.Time) error
	// ArchiveAudit takes the bodies of records a.FromSeq..a.ToSeq out of
	// the database, keeps their tree hashes, and stores a, in one
	// transaction. a.FromSeq must be the first record not archived yet
	// (ErrStale otherwise) and a.ToSeq a stored record (ErrNotFound).
	ArchiveAudit(ctx context.Context, a AuditArchive) error
	// ListAuditArchives returns the archived ranges, oldest first.
	ListAuditArchives(ctx context.Context) ([]AuditArchive, error)
	// ReadNewestAuditTime returns the latest Time of the records from
	// seq from to to (ErrNotFound if none is stored).
	ReadNewestAuditTime(ctx context.Context, from, to int64) (time.Time, error)
}
