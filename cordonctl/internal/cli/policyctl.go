package cli

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// The policy commands below talk to the controller: plan, apply, history,
// show, diff of versions and rollback. The controller validates (tests
// included) and stores every version; cordonctl only sends the file.

// readPolicySource reads FILE for the controller, with the name errors
// will carry.
func (a *app) readPolicySource(name string) (file string, src []byte, err error) {
	src, err = a.readPolicyFile(name)
	if err != nil {
		return "", nil, err
	}
	if len(src) > policyfile.MaxFileSize {
		return "", nil, &invalidError{msg: fmt.Sprintf("%s: %d bytes, over the %d-byte limit of a policy file", name, len(src), policyfile.MaxFileSize)}
	}
	file = name
	if name == "-" {
		file = "<stdin>"
	}
	return file, src, nil
}

func parseVersion(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, usagef("version %q: want a version number from cordonctl policy history", s)
	}
	return n, nil
}

func (a *app) printChanges(changes []policyfile.Change) error {
	if len(changes) == 0 {
		fmt.Fprintln(a.io.Out, "no change in who can reach what")
		return nil
	}
	t := newTable(a.io.Out, "CHANGE", "WHO", "APP", "BEFORE", "AFTER")
	for _, c := range changes {
		t.row(c.Kind, c.Who, c.App, orDash(c.Old), orDash(c.New))
	}
	return t.flush()
}

func changesIn(cs []adminapi.PolicyChange) []policyfile.Change {
	out := make([]policyfile.Change, len(cs))
	for i, c := range cs {
		out[i] = policyfile.Change{Kind: c.Kind, Who: c.Who, App: c.App, Old: c.Old, New: c.New}
	}
	return out
}

func (a *app) policyPlanCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "plan FILE",
		Short: "Validate a policy on the controller and show who would gain or lose access (nothing is applied)",
		Long: `Send a policy file to the controller, which parses it, runs its tests and
compares it with the active policy: which users, IdP groups and device tags
gain or lose access to which apps and ports. Nothing is applied. A policy
with an error or a failing test exits 2, each problem at file:line:column.`,
		Args: args("FILE"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			file, src, err := a.readPolicySource(args[0])
			if err != nil {
				return err
			}
			c, err := a.getClient()
			if err != nil {
				return err
			}
			plan, err := c.PlanPolicy(cmd.Context(), &adminapi.PlanPolicyRequest{File: file, Source: string(src)})
			if err != nil {
				return err
			}
			if a.output == "json" {
				if err := writeJSONValue(a.io.Out, plan); err != nil {
					return err
				}
			}
			if !plan.Valid {
				return &invalidError{msg: planProblems(file, plan)}
			}
			if a.output == "json" {
				return nil
			}
			passed := 0
			for _, t := range plan.Tests {
				if t.Passed {
					passed++
				}
			}
			base := "the directory (no policy applied yet)"
			if plan.ActiveVersion > 0 {
				base = fmt.Sprintf("active version %d (%s)", plan.ActiveVersion, short(plan.ActiveSHA256))
			}
			fmt.Fprintf(a.io.Out, "%s: valid, %d/%d tests passed; changes against %s:\n", file, passed, len(plan.Tests), base)
			return a.printChanges(changesIn(plan.Changes))
		}),
	}
}

// planProblems formats a refused plan as the controller refuses an apply.
func planProblems(file string, plan *adminapi.PolicyPlan) string {
	var b strings.Builder
	if len(plan.Errors) > 0 {
		fmt.Fprintf(&b, "policy %s refused: %d problem(s)", file, len(plan.Errors))
		for _, p := range plan.Errors {
			if p.Line > 0 {
				fmt.Fprintf(&b, "\n%s:%d:%d: %s", p.File, p.Line, p.Col, p.Message)
			} else {
				fmt.Fprintf(&b, "\n%s", p.Message)
			}
		}
		return b.String()
	}
	var failed []string
	for _, t := range plan.Tests {
		if !t.Passed {
			failed = append(failed, t.Message)
		}
	}
	fmt.Fprintf(&b, "policy %s refused: %d test(s) failed\n%s", file, len(failed), strings.Join(failed, "\n"))
	return b.String()
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func (a *app) printApplied(verb string, res *adminapi.AppliedPolicy) error {
	if a.output == "json" {
		return writeJSONValue(a.io.Out, res)
	}
	v := res.Version
	fmt.Fprintf(a.io.Out, "%s version %d (sha256 %s, was %s); %d tests passed\n", verb, v.Version, short(v.SHA256), orDash(short(res.PreviousSHA)), res.TestsPassed)
	return a.printChanges(changesIn(res.Changes))
}

func (a *app) policyApplyCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "apply FILE --reason TEXT",
		Short: "Validate and apply a policy on the controller (audited)",
		Long: `Apply a policy file: the controller parses it, runs its tests and, only if
everything passes, stores it as the new active version and pushes it to
every gateway and client; flows the new policy denies are cut. The change
is audited with you, the reason and the SHA-256 of the old and new text.`,
		Example: `  cordonctl policy apply hospital.yaml --reason "CHG-1234: billing vendor off-boarded"`,
		Args:    args("FILE"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return usagef("--reason is required: say why the policy changes (it goes to the audit trail)")
			}
			file, src, err := a.readPolicySource(args[0])
			if err != nil {
				return err
			}
			c, err := a.getClient()
			if err != nil {
				return err
			}
			res, err := c.ApplyPolicy(cmd.Context(), &adminapi.ApplyPolicyRequest{File: file, Source: string(src), Reason: reason})
			if err != nil {
				return err
			}
			return a.printApplied("applied", res)
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the policy changes (required; audited)")
	return cmd
}

func (a *app) policyRollbackCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "rollback VERSION --reason TEXT",
		Short: "Re-apply an old policy version as a new version (audited)",
		Long: `Re-apply the text of an old version as a new version. It is validated
again (its tests must still pass) and audited like an apply.`,
		Args: args("VERSION"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			n, err := parseVersion(args[0])
			if err != nil {
				return err
			}
			if strings.TrimSpace(reason) == "" {
				return usagef("--reason is required: say why the policy is rolled back (it goes to the audit trail)")
			}
			c, err := a.getClient()
			if err != nil {
				return err
			}
			res, err := c.RollbackPolicy(cmd.Context(), &adminapi.RollbackPolicyRequest{Version: n, Reason: reason})
			if err != nil {
				return err
			}
			return a.printApplied(fmt.Sprintf("rolled back to version %d as", n), res)
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the policy is rolled back (required; audited)")
	return cmd
}

func (a *app) policyHistoryCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "history",
		Short: "List the applied policy versions, oldest first; the last is active",
		Args:  args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			var vs []adminapi.PolicyVersion
			printed, err := a.do(cmd, http.MethodGet, "/v1/policy/versions", nil, &vs)
			if err != nil || printed {
				return err
			}
			if len(vs) == 0 {
				fmt.Fprintln(a.io.Out, "no policy applied yet")
				return nil
			}
			t := newTable(a.io.Out, "VERSION", "APPLIED", "ACTOR", "SHA256", "FILE", "REASON")
			for i, v := range vs {
				ver := strconv.FormatInt(v.Version, 10)
				if i == len(vs)-1 {
					ver += " (active)"
				}
				reason := v.Reason
				if v.RollbackOf != 0 {
					reason = fmt.Sprintf("rollback to %d: %s", v.RollbackOf, reason)
				}
				t.row(ver, v.CreatedAt.Local().Format(time.RFC3339), v.Actor, short(v.SHA256), v.File, reason)
			}
			return t.flush()
		}),
	}
}

func (a *app) policyShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show VERSION",
		Short: "Print the text of an applied policy version",
		Args:  args("VERSION"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			n, err := parseVersion(args[0])
			if err != nil {
				return err
			}
			var v adminapi.PolicyVersion
			printed, err := a.do(cmd, http.MethodGet, fmt.Sprintf("/v1/policy/versions/%d", n), nil, &v)
			if err != nil || printed {
				return err
			}
			fmt.Fprint(a.io.Out, v.Source)
			if !strings.HasSuffix(v.Source, "\n") {
				fmt.Fprintln(a.io.Out)
			}
			return nil
		}),
	}
}

// diffVersions compares two applied versions. Their tests are not run
// again: a version's tests may depend on when they run, and what is
// compared is what was applied.
func (a *app) diffVersions(cmd *cobra.Command, va, vb string) ([]policyfile.Change, error) {
	c, err := a.getClient()
	if err != nil {
		return nil, err
	}
	var pols [2]*policyfile.Policy
	for i, s := range []string{va, vb} {
		n, err := parseVersion(s)
		if err != nil {
			return nil, err
		}
		v, err := c.GetPolicyVersion(cmd.Context(), n)
		if err != nil {
			return nil, err
		}
		if pols[i], err = policyfile.Parse(fmt.Sprintf("version %d (%s)", n, v.File), []byte(v.Source)); err != nil {
			var list policyfile.ErrorList
			if errors.As(err, &list) {
				return nil, &invalidError{msg: list.Error()}
			}
			return nil, err
		}
	}
	return policyfile.Diff(pols[0], pols[1]), nil
}

// isVersionArg reports whether both diff arguments are version numbers.
func isVersionArgs(args []string) bool {
	for _, s := range args {
		if n, err := strconv.ParseInt(s, 10, 64); err != nil || n <= 0 {
			return false
		}
	}
	return true
}
