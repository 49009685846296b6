package report

import (
	"context"
	"fmt"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/audit"
)

// figure is one number the report counts: the period's audit records of
// Type (with Outcome, and a detail equal to Value, when set).
type figure struct {
	ID      string
	Label   string
	Type    audit.Type
	Outcome audit.Outcome
	Detail  string
	Value   string
	// Feature names the feature that records Type, for the gap shown
	// while Type is not in the audit schema (pkg/audit) of this build.
	Feature string
	// Sections are the safeguards the figure evidences (also those a
	// missing one leaves without evidence).
	Sections []string
}

// figures is the evidence table, in the report's order. A row whose
// Type the audit schema does not know is a feature not built yet: it is
// reported as a gap, never left out, and counted as soon as a build
// records it. Add rows here; nothing else needs to change.
var figures = []figure{
	{ID: "sessions_started", Label: "Sessions started", Type: audit.SessionStart, Outcome: audit.Success,
		Sections: []string{secUniqueID, secPersonAuth}},
	{ID: "sessions_with_mfa", Label: "Sessions started with MFA", Type: audit.SessionStart, Outcome: audit.Success,
		Detail: "mfa", Value: "true", Sections: []string{secPersonAuth}},
	{ID: "signins_failed", Label: "Failed sign-ins", Type: audit.AuthLogin, Outcome: audit.Failure,
		Sections: []string{secPersonAuth, sec308LoginMonitoring}},
	{ID: "auth_alerts", Label: "Repeated-failure alerts", Type: audit.AuthAlert,
		Sections: []string{sec308LoginMonitoring}},
	{ID: "sessions_ended_idle", Label: "Sessions ended by idle logoff", Type: audit.SessionEnd, Outcome: audit.Success,
		Detail: "reason", Value: "idle", Sections: []string{secAutoLogoff}},
	{ID: "sessions_ended_absolute", Label: "Sessions ended at the absolute limit", Type: audit.SessionEnd, Outcome: audit.Success,
		Detail: "reason", Value: "absolute", Sections: []string{secAutoLogoff}},
	{ID: "sessions_ended_admin", Label: "Sessions ended by an administrator", Type: audit.SessionEnd, Outcome: audit.Success,
		Detail: "reason", Value: "admin", Sections: []string{secAccessControl, sec308Response}},
	{ID: "flows_denied", Label: "Flows denied by policy", Type: audit.FlowDeny,
		Sections: []string{secAccessControl, secAudit}},
	{ID: "flows_cut", Label: "Open flows cut when access ended", Type: audit.FlowCut,
		Sections: []string{secAccessControl}},
	{ID: "dns_denied", Label: "Name lookups of unentitled apps refused", Type: audit.DNSDeny,
		Sections: []string{secAccessControl}},
	{ID: "devices_revoked", Label: "Devices revoked", Type: audit.AdminDeviceRevoke, Outcome: audit.Success,
		Sections: []string{secAccessControl, sec308Termination}},
	{ID: "devices_quarantined", Label: "Devices quarantined", Type: audit.AdminDeviceQuarantine, Outcome: audit.Success,
		Sections: []string{secAccessControl, sec308Response}},
	{ID: "devices_released", Label: "Devices released from quarantine", Type: audit.AdminDeviceRelease, Outcome: audit.Success,
		Sections: []string{sec308Response}},
	{ID: "users_disabled", Label: "Users disabled", Type: audit.AdminUserDisable, Outcome: audit.Success,
		Sections: []string{sec308Termination}},
	{ID: "policy_changes", Label: "Policy versions applied", Type: audit.AdminPolicyApply, Outcome: audit.Success,
		Sections: []string{sec308AccessModify}},
	{ID: "integrity_alerts", Label: "Audit log integrity alerts", Type: audit.AuditLogInconsistent,
		Sections: []string{secIntegrity, secAudit}},
	{ID: "breakglass_uses", Label: "Break-glass uses", Type: audit.AuthBreakGlass, Outcome: audit.Raised,
		Feature: "break-glass emergency access", Sections: []string{secEmergency}},
	{ID: "breakglass_reviews_closed", Label: "Break-glass reviews closed", Type: audit.AdminBreakGlassReview, Outcome: audit.Success,
		Detail: "state", Value: "closed",
		Feature: "break-glass after-the-fact review", Sections: []string{secEmergency}},
	{ID: "review_campaigns_closed", Label: "Access-review campaigns closed", Type: audit.AdminReviewClose, Outcome: audit.Success,
		Feature: "access-review campaigns", Sections: []string{sec308ActivityReview, sec308AccessAuthz}},
	{ID: "review_revocations", Label: "Entitlements revoked by access reviews", Type: audit.AdminReviewDecide, Outcome: audit.Success,
		Detail: "decision", Value: "revoke", Feature: "access-review campaigns", Sections: []string{sec308AccessAuthz}},
}

// built reports whether this build records f's events.
func (f figure) built() bool {
	_, ok := audit.Lookup(f.Type)
	return ok
}

func (f figure) source() string {
	s := string(f.Type)
	if f.Outcome != "" {
		s += " " + string(f.Outcome)
	}
	if f.Detail != "" {
		s += fmt.Sprintf(", %s=%s", f.Detail, f.Value)
	}
	return s
}

func (f figure) matches(e store.AuditEvent) bool {
	return (f.Outcome == "" || e.Outcome == string(f.Outcome)) && (f.Detail == "" || e.Details[f.Detail] == f.Value)
}

// Searcher is the store's audit search (store.Store implements it).
type Searcher interface {
	SearchAudit(ctx context.Context, q store.AuditQuery) (store.AuditPage, error)
	// ReadNewestAuditTime: for the time of the first record an archive
	// left (archived records have none).
	ReadNewestAuditTime(ctx context.Context, from, to int64) (time.Time, error)
}

var _ Searcher = store.Store(nil)

// count counts the built figures over the records of [from, to) with seq
// at most maxSeq (0: every seq), one search per event type. It also
// returns the newest seq of the period.
func count(ctx context.Context, s Searcher, from, to time.Time, maxSeq int64) ([]adminapi.ReportFigure, int64, error) {
	byType := map[audit.Type][]int{}
	var order []audit.Type
	for i, f := range figures {
		if !f.built() {
			continue
		}
		if _, ok := byType[f.Type]; !ok {
			order = append(order, f.Type)
		}
		byType[f.Type] = append(byType[f.Type], i)
	}
	values := make([]int64, len(figures))
	for _, t := range order {
		q := store.AuditQuery{Type: string(t), Since: from, Until: to, Limit: store.MaxAuditSearchLimit}
		for {
			p, err := s.SearchAudit(ctx, q)
			if err != nil {
				return nil, 0, fmt.Errorf("count %s records: %w", t, err)
			}
			for _, e := range p.Events {
				if maxSeq > 0 && e.Seq > maxSeq {
					continue
				}
				for _, i := range byType[t] {
					if figures[i].matches(e) {
						values[i]++
					}
				}
			}
			if p.NextCursor == "" {
				break
			}
			q.Cursor = p.NextCursor
		}
	}
	var out []adminapi.ReportFigure
	for i, f := range figures {
		if f.built() {
			out = append(out, adminapi.ReportFigure{ID: f.ID, Label: f.Label, Value: values[i], Source: f.source()})
		}
	}
	last, err := s.SearchAudit(ctx, store.AuditQuery{Since: from, Until: to, Limit: 1})
	if err != nil {
		return nil, 0, fmt.Errorf("find the period's newest record: %w", err)
	}
	var lastSeq int64
	if len(last.Events) > 0 {
		lastSeq = last.Events[0].Seq
	}
	return out, lastSeq, nil
}
