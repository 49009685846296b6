package api

import (
	"net/http"
	"time"

	"github.com/cordonhq/cordon/controller/internal/report"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// The HIPAA and ZTMM evidence report (GET /v1/reports/hipaa, see
// pkg/adminapi/report.go): the handler gathers the live configuration and
// the audit log's verification; package report computes the rest.

func (a *API) hipaaReport(w http.ResponseWriter, r *http.Request, _ string) error {
	var period [2]time.Time
	for i, name := range []string{"from", "to"} {
		s := r.URL.Query().Get(name)
		if s == "" {
			return invalidf("parameter %q is required: an RFC 3339 time (2026-10-01T00:00:00Z)", name)
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return invalidf("parameter %q: %q is not an RFC 3339 time (2026-10-01T00:00:00Z)", name, clip(s))
		}
		period[i] = t
	}
	from, to := period[0], period[1]
	if !from.Before(to) {
		return invalidf("from (%s) must be before to (%s)", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	if to.Sub(from) > report.MaxPeriod {
		return invalidf("the period from %s to %s is longer than %d days: make one report per quarter or year",
			from.Format(time.RFC3339), to.Format(time.RFC3339), int(report.MaxPeriod.Hours()/24))
	}
	ctx := r.Context()
	in := report.Input{From: from, To: to, Now: a.now(), Limits: a.limits, RetentionYears: a.state.RetentionYears()}
	v, pol, err := a.activePolicy(ctx)
	if err != nil {
		return err
	}
	if v.Version > 0 {
		in.Version = &v
	}
	in.Policy = pol
	snap, err := a.st.Snapshot(ctx)
	if err != nil {
		return err
	}
	// Apps as the policy in force defines them (the directory's, when no
	// file is applied); people and machines from the store.
	in.Inventory = adminapi.ReportInventory{Users: len(snap.Users), Devices: len(snap.Devices), Apps: len(pol.AppNames), Gateways: len(snap.Gateways)}
	for _, app := range pol.Apps {
		if app.Classification == policyfile.ClassPHI {
			in.Inventory.PHIApps++
		}
	}
	if a.sinks != nil {
		for _, s := range a.sinks() {
			in.SIEMSinks = append(in.SIEMSinks, s.Name)
		}
	}
	if a.oidc != nil {
		for _, p := range a.oidc.Providers() {
			in.IdPs = append(in.IdPs, p.Name)
		}
	}
	if a.ledger != nil {
		if in.Log, err = a.ledger.Verify(ctx); err != nil {
			return err
		}
		in.LogKey = a.ledger.Key().VerifierKey()
	}
	rep, err := report.Build(ctx, a.st, in)
	if err != nil {
		return err
	}
	return ok(w, rep)
}
