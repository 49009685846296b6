package cli

import (
	"fmt"
	"io"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/pkg/adminapi"
)

// Break-glass emergency access: accounts, their uses, and the two-admin
// review of each use.

func (a *app) breakGlassCmd() *cobra.Command {
	var pwStdin bool
	var pwFile string
	create := &cobra.Command{
		Use:   "create NAME (--password-stdin | --password-file FILE)",
		Short: "Create an emergency (break-glass) account; prints its sealed one-time codes, shown only once",
		Long: fmt.Sprintf(`create makes a pre-provisioned emergency account for when normal sign-in is
impossible (every identity provider down, an authenticator lost in a crisis).
It is a local account: it needs no identity provider. It signs in only with
'cordon login --break-glass --justification "..."', its password (at least %d
characters) and one of the ten one-time codes printed here; each code works
once. Print them, seal them in an envelope with the password and store it where
the procedure says (docs/operations.md). They cannot be shown again; for new
ones, run 'cordonctl user recovery-codes regenerate NAME'.

A break-glass session reaches only apps marked emergency (that the policy
grants the account), ends at the controller's --break-glass-duration and is
never extended; each use raises an alert at once and stays open until two
different admins review it (cordonctl breakglass review).`, adminapi.MinBreakGlassPasswordLength),
		Example: `  cordonctl breakglass create er-emergency-1 --password-file /media/usb/er1.pw`,
		Args:    args("NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			pw, err := a.readPassword(pwStdin, pwFile)
			if err != nil {
				return err
			}
			var out adminapi.CreateBreakGlassResponse
			printed, err := a.do(cmd, http.MethodPost, "/v1/breakglass", &adminapi.CreateBreakGlassRequest{Name: args[0], Password: pw}, &out)
			if err != nil || printed {
				return err
			}
			w := a.io.Out
			fmt.Fprintf(w, "Created emergency account %s.\n\n", sanitize(out.Name))
			fmt.Fprintln(w, "Sealed one-time codes (each signs in once, with")
			fmt.Fprintln(w, "'cordon login --break-glass --justification \"...\" --recovery-code CODE'):")
			for _, c := range out.Codes {
				fmt.Fprintf(w, "  %s\n", sanitize(c))
			}
			fmt.Fprintln(w, "They are shown only this once: print them, seal them in an envelope with the")
			fmt.Fprintln(w, "password and store it as your break-glass procedure says. Do not keep a copy.")
			return nil
		}),
	}
	create.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from standard input (first line)")
	create.Flags().StringVar(&pwFile, "password-file", "", "read the password from FILE (first line)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List break-glass uses, newest first, with their review state",
		Args:  cobra.NoArgs,
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			var xs []adminapi.BreakGlassUse
			printed, err := a.do(cmd, http.MethodGet, "/v1/breakglass/uses", nil, &xs)
			if err != nil || printed {
				return err
			}
			return printBreakGlassUses(a.io.Out, xs)
		}),
	}
	show := &cobra.Command{
		Use:   "show USE",
		Short: "Show one break-glass use: who, when, why, until when, and its reviews",
		Args:  args("USE"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			var u adminapi.BreakGlassUse
			printed, err := a.do(cmd, http.MethodGet, "/v1/breakglass/uses/"+esc(args[0]), nil, &u)
			if err != nil || printed {
				return err
			}
			return printBreakGlassUse(a.io.Out, u)
		}),
	}
	var req adminapi.ReviewBreakGlassRequest
	review := &cobra.Command{
		Use:     "review USE --comment TEXT",
		Short:   "Sign off a break-glass use after the fact; it closes when two different admins have (not the account's own user)",
		Example: `  cordonctl breakglass review bg-3f2a9c01d2 --comment "ED downtime 02:10-02:40, confirmed with the charge nurse; access matched the justification"`,
		Args:    args("USE"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			if req.Comment == "" {
				return usagef("--comment is required: say what you checked and found")
			}
			var u adminapi.BreakGlassUse
			printed, err := a.do(cmd, http.MethodPost, "/v1/breakglass/uses/"+esc(args[0])+"/review", &req, &u)
			if err != nil || printed {
				return err
			}
			return printBreakGlassUse(a.io.Out, u)
		}),
	}
	review.Flags().StringVar(&req.Comment, "comment", "", "what you checked and found (required; recorded in the audit trail)")
	return a.group("breakglass", "Emergency (break-glass) access: accounts, uses and their review", create, list, show, review)
}

func printBreakGlassUses(w io.Writer, xs []adminapi.BreakGlassUse) error {
	t := newTable(w, "USE", "USER", "STARTED", "EXPIRES", "STATE", "REVIEWS", "JUSTIFICATION")
	for _, x := range xs {
		t.row(x.ID, x.User, fmtTime(x.StartedAt), fmtTime(x.ExpiresAt), x.State, fmt.Sprintf("%d/2", len(x.Reviews)), x.Justification)
	}
	return t.flush()
}

func printBreakGlassUse(w io.Writer, u adminapi.BreakGlassUse) error {
	lines := [][2]string{
		{"Use", u.ID}, {"User", u.User}, {"Device", u.DeviceID}, {"Session", u.SessionID}, {"Source", u.Source},
		{"Started", fmtTime(u.StartedAt)}, {"Expires", fmtTime(u.ExpiresAt)}, {"Justification", u.Justification},
		{"State", u.State},
	}
	for _, r := range u.Reviews {
		lines = append(lines, [2]string{"Reviewed", fmtTime(r.At) + " by " + r.Reviewer + ": " + r.Comment})
	}
	for _, l := range lines {
		if _, err := fmt.Fprintf(w, "%-14s %s\n", l[0]+":", sanitize(l[1])); err != nil {
			return err
		}
	}
	return nil
}
