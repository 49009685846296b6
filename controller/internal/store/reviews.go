package store

import (
	"context"
	"time"
)

// Access reviews (issue 17, 164.308(a)(1)(ii)(D) and (a)(4)): a campaign
// is one review of the entitlements in a scope, computed from the live
// policy when it opens, each line with the evidence a reviewer decides on.
// Lines are never recomputed: the campaign shows what was reviewed.

// Review campaign states, as [ReviewCampaign.State] reports them.
const (
	ReviewOpen    = "open"
	ReviewOverdue = "overdue" // open past its due date
	ReviewClosed  = "closed"
)

// Review decisions.
const (
	DecisionKeep   = "keep"
	DecisionRevoke = "revoke"
	DecisionNarrow = "narrow" // keep only some ports (KeepPorts)
)

// Review line flags.
const (
	FlagStale    = "stale"    // no flow in StaleDays (or never)
	FlagOrphaned = "orphaned" // the user is disabled, unknown to the controller, or refused by the IdP
	FlagWaiver   = "waiver"   // reached through a rule's written waiver (PHI without MFA and posture)
	FlagNew      = "new"      // granted within RecentDays
)

// ReviewCampaign is one access review.
type ReviewCampaign struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Scope     string    `json:"scope"`     // "phi", "app:NAME", "group:NAME", "segment:NAME"
	Reviewers []string  `json:"reviewers"` // admin names (token names), sorted
	Due       time.Time `json:"due"`
	// StaleDays and RecentDays are the thresholds of the stale and new
	// flags.
	StaleDays  int `json:"stale_days"`
	RecentDays int `json:"recent_days"`
	// PolicyVersion is the version the lines were computed from (0: the
	// one-by-one directory).
	PolicyVersion int64        `json:"policy_version"`
	CreatedAt     time.Time    `json:"created_at"`
	CreatedBy     string       `json:"created_by"` // actor
	ClosedAt      time.Time    `json:"closed_at,omitzero"`
	ClosedBy      string       `json:"closed_by,omitempty"`
	Lines         []ReviewLine `json:"lines"` // by N
}

// State is the campaign's state at now.
func (c *ReviewCampaign) State(now time.Time) string {
	switch {
	case !c.ClosedAt.IsZero():
		return ReviewClosed
	case now.After(c.Due):
		return ReviewOverdue
	}
	return ReviewOpen
}

// ReviewLine is one entitlement under review and its decision.
type ReviewLine struct {
	N int `json:"line"` // 1, 2, ...
	// The entitlement, as policyfile.Entitlement states it.
	Who        string `json:"who"`  // "user:alice", "idp:groups=X", "tag:kiosk"
	User       string `json:"user"` // the user name when Who is a user
	Via        string `json:"via"`  // "group:clinicians", "user:alice"
	App        string `json:"app"`
	Class      string `json:"classification"`
	Ports      string `json:"ports"`
	Rule       string `json:"rule"`
	Conditions string `json:"conditions,omitempty"`
	Waiver     string `json:"waiver,omitempty"`
	DeniedBy   string `json:"denied_by,omitempty"`

	Evidence ReviewEvidence `json:"evidence"`
	Flags    []string       `json:"flags,omitempty"`

	Decision  string    `json:"decision,omitempty"` // "" while undecided
	KeepPorts string    `json:"keep_ports,omitempty"`
	Comment   string    `json:"comment,omitempty"`
	DecidedBy string    `json:"decided_by,omitempty"` // actor
	DecidedAt time.Time `json:"decided_at,omitzero"`
	// AppliedAt is when a revoke or narrow took effect (at once, or at
	// the close); zero before.
	AppliedAt time.Time `json:"applied_at,omitzero"`
}

// ReviewEvidence is what a reviewer decides a line on, as of the
// campaign's start.
type ReviewEvidence struct {
	LastUse    time.Time `json:"last_use,omitzero"`     // newest flow.allow of the user to the app
	LastSignIn time.Time `json:"last_sign_in,omitzero"` // newest session start of the user's devices
	MFAAt      time.Time `json:"mfa_at,omitzero"`       // newest MFA of the user's devices
	// Posture is the posture checks the user's devices pass, per device
	// ("dev-1: disk,screenlock"; "no report").
	Posture string `json:"posture,omitempty"`
	// UserState is "active", "disabled", "unknown" (not a user of the
	// controller) or "idp-refused".
	UserState string `json:"user_state,omitempty"`
}

// ReviewStore keeps access review campaigns. Part of [Store].
type ReviewStore interface {
	// CreateReview stores a new campaign with its lines
	// (ErrAlreadyExists for a taken ID).
	CreateReview(ctx context.Context, c ReviewCampaign) error
	// GetReview returns a campaign with its lines (ErrNotFound).
	GetReview(ctx context.Context, id string) (ReviewCampaign, error)
	// ListReviews returns every campaign with its lines, newest first.
	ListReviews(ctx context.Context) ([]ReviewCampaign, error)
	// PutReviewLine stores the decision fields (Decision, KeepPorts,
	// Comment, DecidedBy, DecidedAt, AppliedAt) of line l.N of campaign
	// id (ErrNotFound for no such line).
	PutReviewLine(ctx context.Context, id string, l ReviewLine) error
	// CloseReview marks campaign id closed (ErrNotFound; ErrStale if it
	// is closed already).
	CloseReview(ctx context.Context, id, by string, at time.Time) error
}
