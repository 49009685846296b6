package state

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cordonhq/cordon/controller/internal/review"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// This file: access reviews (issue 17). A campaign's lines are computed
// by package review from a snapshot; here they are stored, decided and,
// at the close (or at once, per decision), their revocations applied
// through the same change path as any other: a policy version whose
// reason names the campaign, or group membership removals, committed
// with the campaign's records in one transaction, then published so the
// gateways cut what they no longer allow.

// NewReviewID returns a campaign ID: "rv-" and 8 random hex digits (a
// valid part of a deny rule's name).
func NewReviewID() string {
	var b [4]byte
	rand.Read(b[:])
	return "rv-" + hex.EncodeToString(b[:])
}

// StartReview stores campaign c, whose lines the caller computed, with
// its admin.review.start record. ID, CreatedAt and CreatedBy are set.
func (s *State) StartReview(ctx context.Context, o Origin, c store.ReviewCampaign) (store.ReviewCampaign, error) {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if c.ID == "" {
			c.ID = NewReviewID()
		}
		c.CreatedAt, c.CreatedBy = op.at, o.Actor
		if err := tx.CreateReview(ctx, c); errors.Is(err, store.ErrAlreadyExists) {
			return refuse(store.ErrAlreadyExists, "campaign %q exists already", c.ID)
		} else if err != nil {
			return err
		}
		flagged := 0
		for _, l := range c.Lines {
			if len(l.Flags) > 0 {
				flagged++
			}
		}
		op.success(audit.AdminReviewStart, c.ID, map[string]string{
			"name": c.Name, "scope": c.Scope, "reviewers": strings.Join(c.Reviewers, ","),
			"due": c.Due.Format(time.RFC3339), "lines": strconv.Itoa(len(c.Lines)),
			"flagged": strconv.Itoa(flagged), "policy_version": strconv.FormatInt(c.PolicyVersion, 10),
		})
		return nil
	})
	return c, err
}

// Decision is a reviewer's decision on one line.
type Decision struct {
	Line      int
	Decision  string // store.DecisionKeep, DecisionRevoke, DecisionNarrow
	KeepPorts string // narrow: the ports kept
	Comment   string
	// ApplyNow applies a revoke or narrow at once instead of at the close.
	ApplyNow bool
}

// DecideReview records the decision of the admin o names (who must be
// one of the campaign's reviewers) on a line of campaign id, with its
// admin.review.decide record, and applies a revocation at once if asked.
// A decision can change until it is applied or the campaign closes.
func (s *State) DecideReview(ctx context.Context, o Origin, id string, d Decision) (store.ReviewLine, error) {
	var line store.ReviewLine
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		c, err := openCampaign(ctx, tx, id)
		if err != nil {
			return err
		}
		if name, _ := strings.CutPrefix(o.Actor, "admin:"); !slices.Contains(c.Reviewers, name) {
			return refuse(ErrForbidden, "%s is not a reviewer of campaign %s (its reviewers: %s)", o.Actor, id, strings.Join(c.Reviewers, ", "))
		}
		i := slices.IndexFunc(c.Lines, func(l store.ReviewLine) bool { return l.N == d.Line })
		if i < 0 {
			return refuse(store.ErrNotFound, "campaign %s has no line %d (it has %d: cordonctl review show %s)", id, d.Line, len(c.Lines), id)
		}
		l := c.Lines[i]
		if !l.AppliedAt.IsZero() {
			return refuse(ErrConflict, "line %d was %sd and applied at %s; it cannot be decided again", l.N, l.Decision, l.AppliedAt.Format(time.RFC3339))
		}
		l.Decision, l.KeepPorts, l.Comment, l.DecidedBy, l.DecidedAt = d.Decision, "", d.Comment, o.Actor, op.at
		if d.Decision == store.DecisionNarrow {
			l.KeepPorts = d.KeepPorts
		}
		file, err := policyActive(ctx, tx)
		if err != nil {
			return err
		}
		// Refuse now what the close could not apply.
		if _, err := review.Plan(id, file, []store.ReviewLine{l}); err != nil {
			return refuse(ErrConflict, "%v", err)
		}
		details := map[string]string{"line": strconv.Itoa(l.N), "user": l.Who, "app": l.App,
			"decision": l.Decision, "comment": l.Comment}
		if l.KeepPorts != "" {
			details["keep_ports"] = l.KeepPorts
		}
		if d.ApplyNow && l.Decision != store.DecisionKeep {
			details["apply_now"] = "true"
			if err := s.applyRevocations(ctx, tx, op, c, []store.ReviewLine{l}); err != nil {
				return err
			}
			l.AppliedAt = op.at
		}
		op.success(audit.AdminReviewDecide, id, details)
		line = l
		return tx.PutReviewLine(ctx, id, l)
	})
	return line, err
}

// ReviewDecisionRecord is one entry of the decisions of an
// admin.review.close record.
type ReviewDecisionRecord struct {
	Line      int       `json:"line"`
	Who       string    `json:"who"`
	App       string    `json:"app"`
	Via       string    `json:"via"`
	Decision  string    `json:"decision"`
	KeepPorts string    `json:"keep_ports,omitempty"`
	Comment   string    `json:"comment"`
	By        string    `json:"by"`
	At        time.Time `json:"at"`
	AppliedAt time.Time `json:"applied_at,omitzero"`
}

// CloseReview closes campaign id: the revocations decided and not yet
// applied take effect, in one transaction with the campaign record
// (admin.review.close: who decided what, when) and the record of each
// change (admin.policy.apply or admin.group.remove_member). Undecided
// lines change nothing.
func (s *State) CloseReview(ctx context.Context, o Origin, id string) (store.ReviewCampaign, error) {
	var c store.ReviewCampaign
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		var err error
		if c, err = openCampaign(ctx, tx, id); err != nil {
			return err
		}
		var pending []store.ReviewLine
		for _, l := range c.Lines {
			if l.AppliedAt.IsZero() && (l.Decision == store.DecisionRevoke || l.Decision == store.DecisionNarrow) {
				pending = append(pending, l)
			}
		}
		if err := s.applyRevocations(ctx, tx, op, c, pending); err != nil {
			return err
		}
		counts := map[string]int{}
		var decisions []ReviewDecisionRecord
		for i := range c.Lines {
			l := &c.Lines[i]
			counts[l.Decision]++
			if l.Decision == "" {
				continue
			}
			if l.AppliedAt.IsZero() && l.Decision != store.DecisionKeep {
				l.AppliedAt = op.at
				if err := tx.PutReviewLine(ctx, id, *l); err != nil {
					return err
				}
			}
			decisions = append(decisions, ReviewDecisionRecord{Line: l.N, Who: l.Who, App: l.App, Via: l.Via,
				Decision: l.Decision, KeepPorts: l.KeepPorts, Comment: l.Comment, By: l.DecidedBy, At: l.DecidedAt, AppliedAt: l.AppliedAt})
		}
		if decisions == nil {
			decisions = []ReviewDecisionRecord{}
		}
		js, err := json.Marshal(decisions)
		if err != nil {
			return err
		}
		details := map[string]string{
			"name": c.Name, "scope": c.Scope, "due": c.Due.Format(time.RFC3339),
			"overdue": strconv.FormatBool(op.at.After(c.Due)), "lines": strconv.Itoa(len(c.Lines)),
			"kept": strconv.Itoa(counts[store.DecisionKeep]), "revoked": strconv.Itoa(counts[store.DecisionRevoke]),
			"narrowed": strconv.Itoa(counts[store.DecisionNarrow]), "undecided": strconv.Itoa(counts[""]),
			"decisions": string(js),
		}
		for _, ev := range op.events {
			switch ev.Type {
			case audit.AdminPolicyApply:
				details["policy_version"] = ev.Details["version"]
			case audit.AdminGroupRemoveMember:
				details["removed_members"] = joinNonEmpty(details["removed_members"], ev.Subject+":"+ev.Details["user"])
			}
		}
		if err := tx.CloseReview(ctx, id, o.Actor, op.at); err != nil {
			return err
		}
		c.ClosedAt, c.ClosedBy = op.at, o.Actor
		op.success(audit.AdminReviewClose, id, details)
		return nil
	})
	return c, err
}

// ErrForbidden classifies a refusal by who asks: an admin deciding a
// campaign they do not review.
var ErrForbidden = errors.New("forbidden")

// openCampaign reads campaign id and refuses a closed one.
func openCampaign(ctx context.Context, tx store.Store, id string) (store.ReviewCampaign, error) {
	c, err := tx.GetReview(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return c, refuse(store.ErrNotFound, "campaign %q not found (cordonctl review list)", clip(id))
	} else if err != nil {
		return c, err
	}
	if !c.ClosedAt.IsZero() {
		return c, refuse(ErrConflict, "campaign %s was closed at %s by %s; start a new one", id, c.ClosedAt.Format(time.RFC3339), c.ClosedBy)
	}
	return c, nil
}

// policyActive reports whether a policy file is active (else the
// one-by-one directory decides access).
func policyActive(ctx context.Context, tx store.Store) (bool, error) {
	_, err := tx.ActivePolicy(ctx)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	}
	return false, fmt.Errorf("read the active policy: %w", err)
}

// applyRevocations applies the revoke and narrow decisions of lines of
// campaign c inside op's transaction, recording each change.
func (s *State) applyRevocations(ctx context.Context, tx store.Store, op *op, c store.ReviewCampaign, lines []store.ReviewLine) error {
	file, err := policyActive(ctx, tx)
	if err != nil {
		return err
	}
	ch, err := review.Plan(c.ID, file, lines)
	if err != nil {
		return refuse(ErrConflict, "%v", err)
	}
	if ch.IsZero() {
		return nil
	}
	for _, m := range ch.Members {
		if err := tx.RemoveMember(ctx, m.Group, m.User); errors.Is(err, store.ErrNotFound) {
			continue // gone already: the access is too
		} else if err != nil {
			return err
		}
		op.success(audit.AdminGroupRemoveMember, m.Group, map[string]string{"user": m.User, "review": c.ID})
		op.change.Users, op.change.Groups = append(op.change.Users, m.User), append(op.change.Groups, m.Group)
	}
	if len(ch.Denies) == 0 {
		return nil
	}
	v, err := tx.ActivePolicy(ctx)
	if err != nil {
		return fmt.Errorf("read the active policy: %w", err)
	}
	src, err := policyfile.AppendDenies(v.Source, ch.Denies)
	if err != nil {
		return fmt.Errorf("add the revocations of campaign %s to policy version %d: %w", c.ID, v.Version, err)
	}
	if _, _, err := policyfile.Validate(v.File, src); err != nil {
		return refuse(ErrConflict, "the revocations of campaign %s would make the policy invalid, so nothing was applied: %v; "+
			"change the policy (its tests may assert the access being revoked), or decide differently", c.ID, err)
	}
	reason := fmt.Sprintf("access review %s (%s): %d revocation(s)", c.ID, c.Name, len(ch.Denies))
	stored, err := tx.PutPolicyVersion(ctx, v.Version, store.PolicyVersion{File: v.File, Source: src, Reason: reason, Actor: op.origin.Actor, CreatedAt: op.at})
	if err != nil {
		return fmt.Errorf("store the policy with the revocations of campaign %s: %w", c.ID, err)
	}
	ver := strconv.FormatInt(stored.Version, 10)
	op.success(audit.AdminPolicyApply, "version "+ver, map[string]string{
		"reason": reason, "file": v.File, "old_version": strconv.FormatInt(v.Version, 10),
		"old_sha256": v.SHA256, "new_sha256": stored.SHA256, "version": ver, "review": c.ID,
	})
	op.change.Policy = true
	return nil
}

func joinNonEmpty(a, b string) string {
	if a == "" {
		return b
	}
	return a + "," + b
}
