package adminapi

import (
	"context"
	"fmt"
	"net/url"
	"time"
)

// The HIPAA and CISA ZTMM evidence report (docs/hipaa.md). Route, needing
// audit.read (owner, network-admin, auditor):
//
//	GET /v1/reports/hipaa?from=RFC3339&to=RFC3339   HIPAAReport
//
// The controller computes the report's data from its live configuration
// and its audit log alone; cordonctl renders it (HTML, PDF, JSON). The
// JSON form is described by docs/hipaa-report.schema.json.

// HIPAAReportPath is the request path of the report of [from, to).
func HIPAAReportPath(from, to time.Time) string {
	q := url.Values{}
	q.Set("from", from.UTC().Format(time.RFC3339))
	q.Set("to", to.UTC().Format(time.RFC3339))
	return "/v1/reports/hipaa?" + q.Encode()
}

// HIPAAReport fetches the report of [from, to). It may take a while: the
// controller verifies its whole audit log first.
func (c *Client) HIPAAReport(ctx context.Context, from, to time.Time) (HIPAAReport, error) {
	var out HIPAAReport
	return out, c.StreamJSON(ctx, HIPAAReportPath(from, to), &out)
}

// Statuses of a safeguard row.
const (
	StatusMet     = "met"     // the mechanism is built and configured
	StatusPartial = "partial" // built, with a gap in configuration or evidence
	StatusGap     = "gap"     // not met: see the row's gaps
)

// Requirement levels of 45 CFR 164.312 (and 164.308): standards and
// required implementation specifications must be met; addressable ones
// met or documented as not reasonable.
const (
	Required    = "required"
	Addressable = "addressable"
)

// ZTMM v2 maturity stages, lowest first.
const (
	StageTraditional = "Traditional"
	StageInitial     = "Initial"
	StageAdvanced    = "Advanced"
	StageOptimal     = "Optimal"
)

// HIPAAReport is the evidence report of one period.
type HIPAAReport struct {
	Generated time.Time `json:"generated"`
	From      time.Time `json:"from"` // inclusive
	To        time.Time `json:"to"`   // exclusive
	// Settings are the live settings the safeguards rest on.
	Settings ReportSettings `json:"settings"`
	// Figures are the period's evidence, counted from the audit records
	// the report's checkpoint covers.
	Figures []ReportFigure `json:"figures"`
	// Technical are the 164.312 standards and implementation
	// specifications, every one of them, in the rule's order.
	Technical []Safeguard `json:"technical"`
	// Administrative are the 164.308 items the product supports.
	Administrative []Safeguard `json:"administrative"`
	// ZTMM is the CISA Zero Trust Maturity Model v2 self-assessment, one
	// entry per pillar and cross-cutting capability.
	ZTMM []ZTMMPillar `json:"ztmm"`
	// Gaps are everything not met, never left out.
	Gaps []ReportGap `json:"gaps"`
	// AuditLog is the verification of the log the figures come from,
	// with the signed checkpoint it covers.
	AuditLog ReportAuditLog `json:"audit_log"`
}

// ReportSettings are the live settings.
type ReportSettings struct {
	// PolicyVersion is the active policy version (0: none applied; the
	// directory's rules are in force).
	PolicyVersion int64  `json:"policy_version"`
	PolicyFile    string `json:"policy_file,omitempty"`
	PolicySHA256  string `json:"policy_sha256,omitempty"`
	// IdleLimits are the automatic logoff limits: the default and one
	// per data classification that has its own.
	IdleLimits []ReportIdleLimit `json:"idle_limits"`
	// AbsoluteSeconds is the session's absolute limit.
	AbsoluteSeconds int64 `json:"absolute_seconds"`
	// AccessRules are the allow rules that reach PHI apps, with their
	// MFA and posture conditions or waiver.
	AccessRules []ReportAccessRule `json:"access_rules"`
	// Ciphers are the protocols and ciphers of each channel.
	Ciphers             []ReportCipher `json:"ciphers"`
	AuditRetentionYears int            `json:"audit_retention_years"`
	// SIEMSinks are the names of the configured SIEM sinks.
	SIEMSinks []string `json:"siem_sinks"`
	// IdentityProviders are the configured OIDC providers' names.
	IdentityProviders []string        `json:"identity_providers"`
	Inventory         ReportInventory `json:"inventory"`
}

// ReportIdleLimit is one idle limit; Classification "default" applies to
// every classification without its own.
type ReportIdleLimit struct {
	Classification string `json:"classification"`
	Seconds        int64  `json:"seconds"`
}

// ReportAccessRule is one allow rule reaching PHI apps.
type ReportAccessRule struct {
	Rule         string   `json:"rule"`
	Apps         []string `json:"apps"`
	MFA          bool     `json:"mfa"`
	MFAMaxAgeSec int64    `json:"mfa_max_age_seconds,omitempty"` // step-up: MFA no older than this
	Posture      []string `json:"posture"`
	Waiver       string   `json:"waiver,omitempty"`
}

// ReportCipher is one channel's protection.
type ReportCipher struct {
	Channel  string `json:"channel"`
	Protocol string `json:"protocol"`
	Ciphers  string `json:"ciphers"`
}

// ReportInventory counts what the configuration holds.
type ReportInventory struct {
	Users    int `json:"users"`
	Devices  int `json:"devices"`
	Apps     int `json:"apps"`
	PHIApps  int `json:"phi_apps"`
	Gateways int `json:"gateways"`
}

// ReportFigure is one number of evidence for the period.
type ReportFigure struct {
	ID     string `json:"id"` // stable: "sessions_started"
	Label  string `json:"label"`
	Value  int64  `json:"value"`
	Source string `json:"source"` // which records were counted
}

// Safeguard is one standard or implementation specification.
type Safeguard struct {
	Section     string `json:"section"` // "164.312(a)(2)(i)"
	Title       string `json:"title"`
	Standard    bool   `json:"standard"`    // a standard (false: an implementation specification)
	Requirement string `json:"requirement"` // Required or Addressable
	Mechanism   string `json:"mechanism"`
	// Settings are the live settings this row rests on, as sentences.
	Settings []string `json:"settings"`
	// Figures are the IDs of the period's figures that evidence it.
	Figures []string `json:"figures"`
	Status  string   `json:"status"` // StatusMet, StatusPartial or StatusGap
	// Gaps are the IDs of the report's gaps that concern this row.
	Gaps []string `json:"gaps"`
}

// ZTMMPillar is the stage reached in one pillar or capability.
type ZTMMPillar struct {
	Pillar string   `json:"pillar"`
	Stage  string   `json:"stage"`
	Why    []string `json:"why"`
	Next   string   `json:"next,omitempty"` // what the next stage needs
}

// ReportGap is something not met or not yet built.
type ReportGap struct {
	ID       string   `json:"id"`
	Sections []string `json:"sections"`
	Title    string   `json:"title"`
	Detail   string   `json:"detail"`
}

// ReportAuditLog is the audit log verification the report rests on.
type ReportAuditLog struct {
	Verified bool   `json:"verified"`
	Records  int64  `json:"records"`
	Key      string `json:"key,omitempty"` // the log's note verifier key
	// Checkpoint is the signed checkpoint the figures were counted under
	// (records with seq at most CheckpointSize); save it and run
	// 'cordonctl audit verify --checkpoint FILE' later to prove the log
	// still extends it.
	Checkpoint     string    `json:"checkpoint,omitempty"`
	CheckpointSize int64     `json:"checkpoint_size"`
	CheckpointTime time.Time `json:"checkpoint_time,omitzero"`
	// PeriodLastSeq is the newest record of the period; the checkpoint
	// covers the whole period when CheckpointSize is at least it.
	PeriodLastSeq int64    `json:"period_last_seq"`
	Covered       bool     `json:"covered"`
	Problems      []string `json:"problems,omitempty"`
}

// FormatLimit writes a limit the way the report shows it: "15 min",
// "12 h", or Go's form for anything finer.
func FormatLimit(d time.Duration) string {
	switch {
	case d > 0 && d%time.Hour == 0:
		return fmt.Sprintf("%d h", d/time.Hour)
	case d > 0 && d%time.Minute == 0:
		return fmt.Sprintf("%d min", d/time.Minute)
	}
	return d.String()
}
