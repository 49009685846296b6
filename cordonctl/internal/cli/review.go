package cli

// Access reviews (issue 17): cordonctl review start|list|show|decide|close.

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/pkg/adminapi"
)

func (a *app) reviewCmd() *cobra.Command {
	return a.group("review", "Access reviews: who can reach what, with evidence, decided by reviewers; revocations in one step",
		a.reviewStartCmd(), listCommand(a, "List campaigns with their state, and the undecided lines of overdue ones", "/v1/reviews", printReviews),
		a.reviewShowCmd(), a.reviewDecideCmd(), a.reviewCloseCmd())
}

// parseDue reads a due date: a day (due at its end, UTC) or RFC 3339.
func parseDue(s string) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t.Add(24*time.Hour - time.Second), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, usagef("--due %q: write a day (2026-03-31) or a time (2026-03-31T17:00:00Z)", s)
	}
	return t, nil
}

func (a *app) reviewStartCmd() *cobra.Command {
	var (
		req adminapi.ReviewStartRequest
		due string
	)
	c := &cobra.Command{
		Use:   "start --scope phi|app:NAME|group:NAME|segment:NAME --due DATE [--reviewer ADMIN]... [--name TEXT]",
		Short: "Open an access review campaign over the entitlements in a scope",
		Long: `start opens a campaign: one line per entitlement in the scope (a user, IdP
group or device tag that may reach an app, on which ports, through which
rule or group), computed from the live policy as 'cordonctl policy who-can'
computes it, with evidence as of now: the last flow to the app, the last
sign-in, MFA and posture of the user's devices, the user's state. Lines are
flagged stale (no flow in --stale-days, or never), orphaned (user disabled,
unknown, or refused by the IdP), waiver (reached through a rule's written
waiver) and new (granted within --recent-days).

Reviewers (admin accounts whose role may decide reviews) decide each line
with 'cordonctl review decide'; without --reviewer, every enabled admin with
the reviewer role reviews.`,
		Example: `  cordonctl review start --scope phi --due 2026-03-31 --reviewer compliance-1
  cordonctl review start --scope app:pacs --due 2026-03-31 --stale-days 30 --name "Q1 PACS review"`,
		Args: args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			if req.Scope == "" || due == "" {
				return usagef("--scope and --due are required")
			}
			var err error
			if req.Due, err = parseDue(due); err != nil {
				return err
			}
			var out adminapi.ReviewCampaign
			printed, err := a.do(cmd, http.MethodPost, "/v1/reviews", req, &out)
			if err != nil || printed {
				return err
			}
			return printReview(a.io.Out, out)
		}),
	}
	f := c.Flags()
	f.StringVar(&req.Scope, "scope", "", "phi (every PHI app), app:NAME, group:NAME (what the group grants) or segment:NAME")
	f.StringVar(&due, "due", "", "when the reviewers must have decided: a day (2026-03-31) or RFC 3339")
	f.StringSliceVar(&req.Reviewers, "reviewer", nil, "admin who decides the lines (repeatable; default: every admin with the reviewer role)")
	f.StringVar(&req.Name, "name", "", "the campaign's name (default: the scope and today's date)")
	f.IntVar(&req.StaleDays, "stale-days", 90, "flag lines with no flow in this many days")
	f.IntVar(&req.RecentDays, "recent-days", 30, "flag lines granted within this many days")
	return c
}

func (a *app) reviewShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show CAMPAIGN",
		Short: "Show a campaign's lines with their evidence, flags and decisions",
		Args:  args("CAMPAIGN"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			var out adminapi.ReviewCampaign
			printed, err := a.do(cmd, http.MethodGet, "/v1/reviews/"+esc(args[0]), nil, &out)
			if err != nil || printed {
				return err
			}
			return printReview(a.io.Out, out)
		}),
	}
}

func (a *app) reviewDecideCmd() *cobra.Command {
	var req adminapi.ReviewDecideRequest
	c := &cobra.Command{
		Use:   "decide CAMPAIGN LINE keep|revoke|narrow --comment TEXT [--ports PORTS] [--apply-now]",
		Short: "Decide one line of a campaign you review",
		Long: `decide records your decision on a line, with a comment for the campaign
record. A revoke or narrow (keep only --ports) takes effect when the
campaign closes, or at once with --apply-now. With a policy file active it
is applied as deny rules (review-CAMPAIGN-LINE) in a new policy version
whose reason names the campaign; with the one-by-one directory, a revoke
removes the user from the group the line comes through (which takes every
app that group grants), and narrowing needs a policy file. A decision can
change until it is applied.`,
		Example: `  cordonctl review decide rv-3f2a9c01 4 revoke --comment "left radiology in May"
  cordonctl review decide rv-3f2a9c01 7 narrow --ports tcp/443 --comment "web viewer only"
  cordonctl review decide rv-3f2a9c01 2 keep --comment "on-call physician"`,
		Args: args("CAMPAIGN", "LINE", "DECISION"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[1])
			if err != nil || n <= 0 {
				return usagef("LINE %q: a line number from cordonctl review show", args[1])
			}
			req.Decision = args[2]
			if req.Comment == "" {
				return usagef("--comment is required: say why")
			}
			var out adminapi.ReviewLine
			printed, err := a.do(cmd, http.MethodPost, fmt.Sprintf("/v1/reviews/%s/lines/%d/decide", esc(args[0]), n), req, &out)
			if err != nil || printed {
				return err
			}
			state := "applies when the campaign closes"
			switch {
			case !out.AppliedAt.IsZero():
				state = "applied " + fmtTime(out.AppliedAt)
			case out.Decision == adminapi.DecisionKeep:
				state = "nothing changes"
			}
			_, err = fmt.Fprintf(a.io.Out, "line %d (%s → %s): %s by %s; %s\n", out.N, sanitize(out.Who), sanitize(out.App),
				out.Decision, sanitize(out.DecidedBy), state)
			return err
		}),
	}
	c.Flags().StringVar(&req.Comment, "comment", "", "why (required; goes into the campaign record)")
	c.Flags().StringVar(&req.Ports, "ports", "", "narrow: the ports to keep, some of the line's (tcp/443)")
	c.Flags().BoolVar(&req.ApplyNow, "apply-now", false, "apply a revoke or narrow at once instead of at the close")
	return c
}

func (a *app) reviewCloseCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "close CAMPAIGN",
		Short: "Close a campaign: its revocations take effect in one step, and the campaign record goes to the audit log",
		Args:  args("CAMPAIGN"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			var out adminapi.ReviewCampaign
			printed, err := a.do(cmd, http.MethodPost, "/v1/reviews/"+esc(args[0])+"/close", struct{}{}, &out)
			if err != nil || printed {
				return err
			}
			return printReview(a.io.Out, out)
		}),
	}
}

func printReviews(w io.Writer, cs []adminapi.ReviewCampaign) error {
	t := newTable(w, "ID", "NAME", "SCOPE", "STATE", "DUE", "LINES", "UNDECIDED", "REVIEWERS")
	for _, c := range cs {
		t.row(c.ID, c.Name, c.Scope, c.State, fmtTime(c.Due), strconv.Itoa(len(c.Lines)), strconv.Itoa(c.Undecided), strings.Join(c.Reviewers, ","))
	}
	if err := t.flush(); err != nil {
		return err
	}
	for _, c := range cs {
		if c.State != adminapi.ReviewOverdue || c.Undecided == 0 {
			continue
		}
		fmt.Fprintf(w, "\nOverdue since %s: %s (%s), undecided lines:\n", fmtTime(c.Due), sanitize(c.ID), sanitize(c.Name))
		if err := printReviewLines(w, c.Lines, true); err != nil {
			return err
		}
	}
	return nil
}

// printReview prints a campaign and its lines.
func printReview(w io.Writer, c adminapi.ReviewCampaign) error {
	fmt.Fprintf(w, "Campaign:  %s (%s)\nScope:     %s\nState:     %s\nDue:       %s\nReviewers: %s\n",
		sanitize(c.ID), sanitize(c.Name), sanitize(c.Scope), c.State, fmtTime(c.Due), sanitize(strings.Join(c.Reviewers, ", ")))
	if !c.ClosedAt.IsZero() {
		fmt.Fprintf(w, "Closed:    %s by %s\n", fmtTime(c.ClosedAt), sanitize(c.ClosedBy))
	}
	fmt.Fprintf(w, "Lines:     %d (%d undecided); stale after %d days, new within %d\n\n", len(c.Lines), c.Undecided, c.StaleDays, c.RecentDays)
	return printReviewLines(w, c.Lines, false)
}

func printReviewLines(w io.Writer, ls []adminapi.ReviewLine, undecidedOnly bool) error {
	t := newTable(w, "LINE", "WHO", "APP", "PORTS", "VIA", "RULE", "LAST-USE", "SIGN-IN", "MFA", "USER", "POSTURE", "FLAGS", "DECISION", "BY", "COMMENT")
	for _, l := range ls {
		if undecidedOnly && l.Decision != "" {
			continue
		}
		decision := l.Decision
		if l.KeepPorts != "" {
			decision += " to " + l.KeepPorts
		}
		if !l.AppliedAt.IsZero() {
			decision += " (applied)"
		}
		lastUse := fmtTime(l.Evidence.LastUse)
		if lastUse == "" && l.User != "" {
			lastUse = "never"
		}
		t.row(strconv.Itoa(l.N), l.Who, l.App, l.Ports, l.Via, l.Rule, lastUse, fmtTime(l.Evidence.LastSignIn),
			fmtTime(l.Evidence.MFAAt), l.Evidence.UserState, l.Evidence.Posture, strings.Join(l.Flags, ","), decision,
			strings.TrimPrefix(l.DecidedBy, "admin:"), l.Comment)
	}
	return t.flush()
}
