// Package state owns the controller's state: every mutation, whoever asks
// for it (an admin through the API, a user signing in, the OIDC refresher, a
// gateway's report, the bootstrap), is one method here.
//
// A method runs as one store transaction that enforces the mutation's
// invariants and appends its audit records: the change and its record
// commit together, or neither does. A caller that sent a request ID
// (Origin.RequestID, the API's Idempotency-Key) can retry an interrupted
// call and learn that it applied (ErrApplied) instead of applying it twice.
// After the commit the method publishes a [store.Change] naming what
// changed, so the map engine recomputes only the maps it affects.
//
// Reads do not go through here: they use the store directly (readers never
// block the writer).
package state

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
)

// Origin is who asked for a mutation.
type Origin struct {
	// Actor is recorded in the audit events: "admin:alice",
	// "user:nurse", "gateway:<id>", "controller".
	Actor string
	// RequestID is the client's idempotency key ("" if it sent none).
	RequestID string
}

// AppliedError is returned when a request ID was applied before: the call
// is not applied again. Events are the audit records its first attempt
// committed.
type AppliedError struct {
	RequestID string
	Events    []store.AuditEvent
}

func (e *AppliedError) Error() string {
	return fmt.Sprintf("request %q was already applied (%d audit records); not applied again", e.RequestID, len(e.Events))
}

// Is makes errors.Is(err, store.ErrRequestSeen) hold.
func (e *AppliedError) Is(target error) bool { return target == store.ErrRequestSeen }

// Config wires a State.
type Config struct {
	Store store.Store // required
	// Publish receives what each committed mutation changed; it must not
	// block. Nil: nothing listens.
	Publish func(store.Change)
	Now     func() time.Time // default time.Now
	Logger  *slog.Logger
	// RetentionYears is how long audit records are kept before one
	// admin may archive them (archive.go): default
	// DefaultRetentionYears; New panics below MinRetentionYears (the
	// controller's flag checks it first).
	RetentionYears int
	// ArchiveRequestTTL is how long an archive request waits for its
	// approval (default DefaultArchiveRequestTTL).
	ArchiveRequestTTL time.Duration
}

// State is the controller's single writer of the store.
type State struct {
	st      store.Store
	publish func(store.Change)
	now     func() time.Time
	log     *slog.Logger

	retentionYears int
	archiveTTL     time.Duration
}

// New returns a State. It panics without a store (a wiring bug).
func New(cfg Config) *State {
	if cfg.Store == nil {
		panic("state.New: Store is required")
	}
	s := &State{st: cfg.Store, publish: cfg.Publish, now: cfg.Now, log: cfg.Logger,
		retentionYears: cfg.RetentionYears, archiveTTL: cfg.ArchiveRequestTTL}
	if s.retentionYears == 0 {
		s.retentionYears = DefaultRetentionYears
	}
	if s.retentionYears < MinRetentionYears {
		panic(fmt.Sprintf("state.New: RetentionYears %d is below the minimum %d", s.retentionYears, MinRetentionYears))
	}
	if s.archiveTTL <= 0 {
		s.archiveTTL = DefaultArchiveRequestTTL
	}
	if s.publish == nil {
		s.publish = func(store.Change) {}
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// Store returns the store, for reads.
func (s *State) Store() store.Store { return s.st }

// Stamp is the current time as stored: UTC, microsecond precision.
func (s *State) Stamp() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

// op collects what one mutation does inside its transaction.
type op struct {
	origin Origin
	at     time.Time
	events []store.AuditEvent
	change store.Change
	// bookkeeping: this op may record no event, because what it writes is
	// bookkeeping the audit trail does not track (a token's last use, a
	// gateway's endpoint, refreshed claims of a known identity).
	bookkeeping bool
}

// record adds an audit event; Actor, Time and RequestID default to the
// op's.
func (o *op) record(ev store.AuditEvent) {
	if ev.Actor == "" {
		ev.Actor = o.origin.Actor
	}
	if ev.Time.IsZero() {
		ev.Time = o.at
	}
	ev.RequestID = o.origin.RequestID
	o.events = append(o.events, ev)
}

// success records a successful mutation of subject.
func (o *op) success(typ audit.Type, subject string, details map[string]string) {
	o.record(store.AuditEvent{Type: typ, Outcome: "success", Subject: subject, Details: details})
}

// apply runs fn in one transaction with its audit records, then publishes
// its change. fn's error rolls back everything, audit included. A mutation
// must record at least one event: a change without its record is the
// defect this package exists to prevent.
func (s *State) apply(ctx context.Context, o Origin, fn func(ctx context.Context, tx store.Store, op *op) error) (store.Change, error) {
	var done op
	err := s.st.Update(ctx, func(ctx context.Context, tx store.Store) error {
		op := &op{origin: o, at: s.Stamp()}
		if o.RequestID != "" {
			if err := tx.ClaimRequest(ctx, o.RequestID, op.at); err != nil {
				return err
			}
		}
		if err := fn(ctx, tx, op); err != nil {
			return err
		}
		if len(op.events) == 0 && !op.bookkeeping {
			return errors.New("state: mutation recorded no audit event (a bug): nothing was changed")
		}
		if err := tx.AppendAudit(ctx, op.events...); err != nil { // none: a no-op
			return err
		}
		done = *op
		return nil
	})
	if errors.Is(err, store.ErrRequestSeen) {
		evs, lerr := s.st.ListAudit(context.WithoutCancel(ctx), store.AuditFilter{RequestID: o.RequestID, Limit: 1000})
		if lerr != nil {
			return store.Change{}, fmt.Errorf("request %q was applied before; reading its audit records: %w", o.RequestID, lerr)
		}
		return store.Change{}, &AppliedError{RequestID: o.RequestID, Events: evs}
	}
	if err != nil {
		return store.Change{}, err
	}
	if !done.change.IsZero() {
		s.publish(done.change)
	}
	return done.change, nil
}
