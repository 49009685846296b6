package store

import (
	"context"
	"time"
)

// BreakGlassUse is one sign-in with a break-glass account (HIPAA
// 164.312(a)(2)(ii), emergency access procedure): who, from where, why,
// the session it started and until when that session may run. It stays
// open until two different admins, neither of them the account's user,
// have reviewed it (Reviews).
type BreakGlassUse struct {
	ID            string    `json:"id"`
	User          string    `json:"user"`
	DeviceID      string    `json:"device_id"`
	SessionID     string    `json:"session_id"`
	Source        string    `json:"source"`
	Justification string    `json:"justification"`
	StartedAt     time.Time `json:"started_at"`
	ExpiresAt     time.Time `json:"expires_at"` // the session's time bound
	// Reviews are the admins' sign-offs, oldest first (at most one per
	// admin: the store refuses a second with ErrAlreadyExists).
	Reviews []BreakGlassReview `json:"reviews"`
}

// BreakGlassReview is one admin's after-the-fact review of a use.
type BreakGlassReview struct {
	Reviewer string    `json:"reviewer"` // the admin's actor, "admin:alice"
	At       time.Time `json:"at"`
	Comment  string    `json:"comment"`
}

// BreakGlassStore keeps break-glass uses and their reviews. Part of
// [Store].
type BreakGlassStore interface {
	// CreateBreakGlassUse stores a new use without reviews
	// (ErrAlreadyExists if the ID is taken).
	CreateBreakGlassUse(ctx context.Context, u BreakGlassUse) error
	// GetBreakGlassUse returns one use with its reviews (ErrNotFound).
	GetBreakGlassUse(ctx context.Context, id string) (BreakGlassUse, error)
	// ListBreakGlassUses returns every use with its reviews, newest first.
	ListBreakGlassUses(ctx context.Context) ([]BreakGlassUse, error)
	// AddBreakGlassReview adds r to use id: ErrNotFound without the use,
	// ErrAlreadyExists if r.Reviewer reviewed it before.
	AddBreakGlassReview(ctx context.Context, id string, r BreakGlassReview) error
}
