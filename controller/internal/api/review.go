package api

// Access review routes (issue 17): start, list, show, decide, close.
// Lines are computed here from one snapshot (package review); every
// change goes through the state owner.

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/netmap"
	"github.com/cordonhq/cordon/controller/internal/review"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// maxReviewDays bounds --stale-days and --recent-days (ten years).
const maxReviewDays = 3650

// startReview serves POST /v1/reviews.
func (a *API) startReview(w http.ResponseWriter, r *http.Request, actor string) error {
	ctx := r.Context()
	var req adminapi.ReviewStartRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	scope, err := review.ParseScope(req.Scope)
	if err != nil {
		return invalidf("field \"scope\": %v", err)
	}
	now := a.stamp()
	switch {
	case req.Due.IsZero():
		return invalidf("field \"due\": required: when the reviewers must have decided (e.g. 2026-03-31)")
	case !req.Due.After(now):
		return invalidf("field \"due\": %s is not in the future", req.Due.Format(time.RFC3339))
	case req.StaleDays < 0 || req.StaleDays > maxReviewDays || req.RecentDays < 0 || req.RecentDays > maxReviewDays:
		return invalidf("fields \"stale_days\" and \"recent_days\": 0 (the default) to %d days", maxReviewDays)
	case len(req.Reviewers) > adminapi.MaxReviewers:
		return invalidf("field \"reviewers\": at most %d", adminapi.MaxReviewers)
	}
	name := strings.TrimSpace(req.Name)
	if name == "" {
		name = "access review of " + scope.String() + " " + now.Format(time.DateOnly)
	}
	if err := checkText("name", name, adminapi.MaxReviewName); err != nil {
		return err
	}
	reviewers, err := a.reviewers(r, req.Reviewers)
	if err != nil {
		return err
	}
	if req.StaleDays == 0 {
		req.StaleDays = review.DefaultStaleDays
	}
	if req.RecentDays == 0 {
		req.RecentDays = review.DefaultRecentDays
	}
	snap, err := a.st.Snapshot(ctx)
	if err != nil {
		return fmt.Errorf("read the directory: %w", err)
	}
	pol := netmap.DirectoryPolicy(snap)
	var version int64
	if v := snap.Policy; v != nil {
		version = v.Version
		if pol, err = policyfile.Parse(v.File, v.Source); err != nil {
			return conflictf("the active policy version %d no longer parses, so its entitlements cannot be listed: %v", v.Version, err)
		}
	}
	before, err := review.PolicyAt(ctx, a.st, now.AddDate(0, 0, -req.RecentDays))
	if err != nil {
		return fmt.Errorf("read the policy in force %d days ago: %w", req.RecentDays, err)
	}
	lines, err := review.Lines(ctx, pol, scope, review.Input{Snapshot: snap, Now: now, StaleDays: req.StaleDays,
		RecentDays: req.RecentDays, Lookup: review.StoreLookup(a.st), Before: before})
	if errors.Is(err, review.ErrScope) {
		return invalidf("field \"scope\": %v", err)
	} else if err != nil {
		return err
	}
	c, err := a.state.StartReview(ctx, origin(r, actor), store.ReviewCampaign{
		Name: name, Scope: scope.String(), Reviewers: reviewers, Due: req.Due.UTC().Truncate(time.Microsecond),
		StaleDays: req.StaleDays, RecentDays: req.RecentDays, PolicyVersion: version, Lines: lines,
	})
	if err != nil {
		return err
	}
	return ok(w, reviewOut(c, now))
}

// reviewers checks the named reviewers: admin accounts, enabled, whose
// role may decide reviews. None named: every enabled reviewer account
// (the model has no app owners).
func (a *API) reviewers(r *http.Request, names []string) ([]string, error) {
	admins, err := a.st.ListAdmins(r.Context())
	if err != nil {
		return nil, err
	}
	var out []string
	if len(names) == 0 {
		for _, x := range admins {
			if auth.Role(x.Role) == auth.RoleReviewer && !x.Disabled {
				out = append(out, x.Name)
			}
		}
		if len(out) == 0 {
			return nil, invalidf("field \"reviewers\": none given, and no enabled admin has the reviewer role: name them (--reviewer ADMIN), or create one (cordonctl admin create NAME --role reviewer)")
		}
		return out, nil
	}
	for _, n := range names {
		i := slices.IndexFunc(admins, func(x store.Admin) bool { return x.Name == n })
		switch {
		case i < 0:
			return nil, invalidf("reviewer %q is not an admin account (cordonctl admin list)", clip(n))
		case admins[i].Disabled:
			return nil, invalidf("reviewer %q is disabled", n)
		case !auth.Role(admins[i].Role).Grants(auth.PermReviewsDecide):
			return nil, invalidf("reviewer %q has role %s, which cannot decide reviews: give them the reviewer role", n, admins[i].Role)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// listReviews serves GET /v1/reviews.
func (a *API) listReviews(w http.ResponseWriter, r *http.Request, _ string) error {
	cs, err := a.st.ListReviews(r.Context())
	if err != nil {
		return err
	}
	now := a.stamp()
	return ok(w, mapSlice(cs, func(c store.ReviewCampaign) adminapi.ReviewCampaign { return reviewOut(c, now) }))
}

// getReview serves GET /v1/reviews/{id}.
func (a *API) getReview(w http.ResponseWriter, r *http.Request, _ string) error {
	id, err := reviewPathID(r)
	if err != nil {
		return err
	}
	c, err := a.st.GetReview(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return notFoundf("campaign %q not found (cordonctl review list)", clip(id))
	} else if err != nil {
		return err
	}
	return ok(w, reviewOut(c, a.stamp()))
}

// decideReview serves POST /v1/reviews/{id}/lines/{n}/decide.
func (a *API) decideReview(w http.ResponseWriter, r *http.Request, actor string) error {
	id, err := reviewPathID(r)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || n <= 0 {
		return invalidf("line %q: want a positive number from cordonctl review show", clip(r.PathValue("n")))
	}
	var req adminapi.ReviewDecideRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	d := state.Decision{Line: n, Decision: req.Decision, Comment: strings.TrimSpace(req.Comment), ApplyNow: req.ApplyNow}
	switch req.Decision {
	case store.DecisionKeep, store.DecisionRevoke:
		if req.Ports != "" {
			return invalidf("field \"ports\": only a narrow keeps ports")
		}
	case store.DecisionNarrow:
		if strings.TrimSpace(req.Ports) == "" {
			return invalidf("field \"ports\": a narrow names the ports to keep (e.g. tcp/443)")
		}
		d.KeepPorts = strings.TrimSpace(req.Ports)
		if err := checkText("ports", d.KeepPorts, 200); err != nil {
			return err
		}
	default:
		return invalidf("field \"decision\": %q: want keep, revoke or narrow", clip(req.Decision))
	}
	if d.Comment == "" {
		return invalidf("field \"comment\": required: say why (it goes into the campaign record)")
	}
	if err := checkText("comment", d.Comment, adminapi.MaxReviewComment); err != nil {
		return err
	}
	l, err := a.state.DecideReview(r.Context(), origin(r, actor), id, d)
	if err != nil {
		return err
	}
	return ok(w, reviewLineOut(l))
}

// closeReview serves POST /v1/reviews/{id}/close.
func (a *API) closeReview(w http.ResponseWriter, r *http.Request, actor string) error {
	id, err := reviewPathID(r)
	if err != nil {
		return err
	}
	var req struct{}
	if err := decode(w, r, &req); err != nil {
		return err
	}
	c, err := a.state.CloseReview(r.Context(), origin(r, actor), id)
	if err != nil {
		return err
	}
	return ok(w, reviewOut(c, a.stamp()))
}

// reviewPathID is the campaign ID of the URL path.
func reviewPathID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if len(id) > 64 {
		return "", invalidf("campaign ID longer than 64 characters")
	}
	return id, nil
}

func reviewOut(c store.ReviewCampaign, now time.Time) adminapi.ReviewCampaign {
	out := adminapi.ReviewCampaign{
		ID: c.ID, Name: c.Name, Scope: c.Scope, State: c.State(now), Reviewers: c.Reviewers, Due: c.Due,
		StaleDays: c.StaleDays, RecentDays: c.RecentDays, PolicyVersion: c.PolicyVersion,
		CreatedAt: c.CreatedAt, CreatedBy: c.CreatedBy, ClosedAt: c.ClosedAt, ClosedBy: c.ClosedBy,
		Lines: mapSlice(c.Lines, reviewLineOut),
	}
	for _, l := range c.Lines {
		if l.Decision == "" {
			out.Undecided++
		}
	}
	return out
}

func reviewLineOut(l store.ReviewLine) adminapi.ReviewLine {
	flags := l.Flags
	if flags == nil {
		flags = []string{}
	}
	return adminapi.ReviewLine{
		N: l.N, Who: l.Who, User: l.User, Via: l.Via, App: l.App, Class: l.Class, Ports: l.Ports, Rule: l.Rule,
		Conditions: l.Conditions, Waiver: l.Waiver, DeniedBy: l.DeniedBy,
		Evidence: adminapi.ReviewEvidence{LastUse: l.Evidence.LastUse, LastSignIn: l.Evidence.LastSignIn,
			MFAAt: l.Evidence.MFAAt, Posture: l.Evidence.Posture, UserState: l.Evidence.UserState},
		Flags: flags, Decision: l.Decision, KeepPorts: l.KeepPorts, Comment: l.Comment,
		DecidedBy: l.DecidedBy, DecidedAt: l.DecidedAt, AppliedAt: l.AppliedAt,
	}
}
