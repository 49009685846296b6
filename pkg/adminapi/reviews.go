package adminapi

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// Access reviews (issue 17): campaigns over a scope of entitlements,
// decided line by line by reviewers; see docs/operations.md.

// Review campaign states.
const (
	ReviewOpen    = "open"
	ReviewOverdue = "overdue"
	ReviewClosed  = "closed"
)

// Review decisions.
const (
	DecisionKeep   = "keep"
	DecisionRevoke = "revoke"
	DecisionNarrow = "narrow"
)

// Limits of review requests.
const (
	MaxReviewName    = 200
	MaxReviewComment = 1000
	MaxReviewers     = 50
)

// ReviewStartRequest is the body of POST /v1/reviews.
type ReviewStartRequest struct {
	Name string `json:"name,omitempty"` // default: the scope and the date
	// Scope is "phi", "app:NAME", "group:NAME" or "segment:NAME".
	Scope string `json:"scope"`
	// Reviewers are admin names; empty: every enabled admin account
	// with the reviewer role.
	Reviewers []string  `json:"reviewers,omitempty"`
	Due       time.Time `json:"due"`
	// StaleDays flags lines with no flow in as many days (0: 90);
	// RecentDays flags lines granted within as many days (0: 30).
	StaleDays  int `json:"stale_days,omitempty"`
	RecentDays int `json:"recent_days,omitempty"`
}

// ReviewCampaign is one campaign.
type ReviewCampaign struct {
	ID            string       `json:"id"`
	Name          string       `json:"name"`
	Scope         string       `json:"scope"`
	State         string       `json:"state"` // open, overdue, closed
	Reviewers     []string     `json:"reviewers"`
	Due           time.Time    `json:"due"`
	StaleDays     int          `json:"stale_days"`
	RecentDays    int          `json:"recent_days"`
	PolicyVersion int64        `json:"policy_version"`
	CreatedAt     time.Time    `json:"created_at"`
	CreatedBy     string       `json:"created_by"`
	ClosedAt      time.Time    `json:"closed_at,omitzero"`
	ClosedBy      string       `json:"closed_by,omitempty"`
	Undecided     int          `json:"undecided"`
	Lines         []ReviewLine `json:"lines"`
}

// ReviewLine is one entitlement under review, with its evidence, flags
// and decision.
type ReviewLine struct {
	N          int            `json:"line"`
	Who        string         `json:"who"`
	User       string         `json:"user,omitempty"`
	Via        string         `json:"via"`
	App        string         `json:"app"`
	Class      string         `json:"classification"`
	Ports      string         `json:"ports"`
	Rule       string         `json:"rule"`
	Conditions string         `json:"conditions,omitempty"`
	Waiver     string         `json:"waiver,omitempty"`
	DeniedBy   string         `json:"denied_by,omitempty"`
	Evidence   ReviewEvidence `json:"evidence"`
	Flags      []string       `json:"flags"` // stale, orphaned, waiver, new
	Decision   string         `json:"decision,omitempty"`
	KeepPorts  string         `json:"keep_ports,omitempty"`
	Comment    string         `json:"comment,omitempty"`
	DecidedBy  string         `json:"decided_by,omitempty"`
	DecidedAt  time.Time      `json:"decided_at,omitzero"`
	AppliedAt  time.Time      `json:"applied_at,omitzero"`
}

// ReviewEvidence is what a line is decided on, as of the campaign's
// start.
type ReviewEvidence struct {
	LastUse    time.Time `json:"last_use,omitzero"`
	LastSignIn time.Time `json:"last_sign_in,omitzero"`
	MFAAt      time.Time `json:"mfa_at,omitzero"`
	Posture    string    `json:"posture,omitempty"`
	UserState  string    `json:"user_state,omitempty"` // active, disabled, unknown, idp-refused
}

// ReviewDecideRequest is the body of POST
// /v1/reviews/{id}/lines/{n}/decide.
type ReviewDecideRequest struct {
	Decision string `json:"decision"` // keep, revoke, narrow
	// Ports are the ports a narrow keeps, some of the line's
	// ("tcp/443").
	Ports   string `json:"ports,omitempty"`
	Comment string `json:"comment"`
	// ApplyNow applies a revoke or narrow at once, not at the close.
	ApplyNow bool `json:"apply_now,omitempty"`
}

// StartReview opens a campaign.
func (c *Client) StartReview(ctx context.Context, req ReviewStartRequest) (*ReviewCampaign, error) {
	var out ReviewCampaign
	if err := c.Do(ctx, http.MethodPost, "/v1/reviews", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListReviews lists every campaign, newest first.
func (c *Client) ListReviews(ctx context.Context) ([]ReviewCampaign, error) {
	var out []ReviewCampaign
	if err := c.Do(ctx, http.MethodGet, "/v1/reviews", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// GetReview returns one campaign with its lines.
func (c *Client) GetReview(ctx context.Context, id string) (*ReviewCampaign, error) {
	var out ReviewCampaign
	if err := c.Do(ctx, http.MethodGet, pathf("/v1/reviews/%s", id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DecideReview decides line n of campaign id.
func (c *Client) DecideReview(ctx context.Context, id string, n int, req ReviewDecideRequest) (*ReviewLine, error) {
	var out ReviewLine
	if err := c.Do(ctx, http.MethodPost, pathf("/v1/reviews/%s/lines/%s/decide", id, strconv.Itoa(n)), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CloseReview closes campaign id, applying its revocations.
func (c *Client) CloseReview(ctx context.Context, id string) (*ReviewCampaign, error) {
	var out ReviewCampaign
	if err := c.Do(ctx, http.MethodPost, pathf("/v1/reviews/%s/close", id), struct{}{}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
