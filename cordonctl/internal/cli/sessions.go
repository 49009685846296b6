package cli

import (
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/pkg/adminapi"
)

// Sessions and device revocation.

func (a *app) printSessions(w io.Writer, xs []adminapi.Session) error {
	now := a.io.Now()
	t := newTable(w, "ID", "USER", "DEVICE", "METHOD", "SOURCE", "STARTED", "LAST ACTIVITY", "MFA", "STATE")
	for _, x := range xs {
		state := "active"
		if !x.Active {
			state = "ended " + fmtTime(x.EndedAt) + " (" + x.EndReason + ")"
		}
		mfa := "-"
		if !x.MFAAt.IsZero() {
			mfa = fmtTime(x.MFAAt)
		}
		t.row(x.ID, x.User, x.DeviceID, x.Method, x.Source, fmtTime(x.StartedAt), ago(now, x.LastActivity), mfa, state)
	}
	return t.flush()
}

// ago renders how long before now t was, to the second.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return now.Sub(t).Truncate(time.Second).String() + " ago"
}

func (a *app) sessionCmd() *cobra.Command {
	var q adminapi.SessionQuery
	list := &cobra.Command{
		Use:     "list [--user NAME] [--device ID] [--all]",
		Aliases: []string{"ls"},
		Short:   "List signed-in sessions (active ones unless --all), newest first",
		Example: `  cordonctl session list
  cordonctl session list --user nurse --all   # the access review: every session of a user`,
		Args: args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			var out []adminapi.Session
			printed, err := a.do(cmd, http.MethodGet, adminapi.SessionsPath(q), nil, &out)
			if err != nil || printed {
				return err
			}
			return a.printSessions(a.io.Out, out)
		}),
	}
	list.Flags().StringVar(&q.User, "user", "", "only this user's sessions")
	list.Flags().StringVar(&q.DeviceID, "device", "", "only this device's sessions")
	list.Flags().BoolVar(&q.All, "all", false, "include ended sessions")

	var req adminapi.EndSessionsRequest
	end := &cobra.Command{
		Use:   "end (ID | --user NAME | --device ID) [--comment TEXT]",
		Short: "End sessions now: every gateway drops the device and cuts its connections; the user must sign in again",
		Example: `  cordonctl session end ses-3f2a9c01d2
  cordonctl session end --user nurse --comment "left the shift, ticket 4411"`,
		Args: cobra.MaximumNArgs(1),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				req.ID = args[0]
			}
			n := 0
			for _, v := range []string{req.ID, req.User, req.DeviceID} {
				if v != "" {
					n++
				}
			}
			if n != 1 {
				return usagef("give exactly one of a session ID, --user or --device")
			}
			var out []adminapi.Session
			printed, err := a.do(cmd, http.MethodPost, "/v1/sessions/end", &req, &out)
			if err != nil || printed {
				return err
			}
			if len(out) == 0 {
				_, err := io.WriteString(a.io.Out, "No active session matched; nothing ended\n")
				return err
			}
			return a.printSessions(a.io.Out, out)
		}),
	}
	end.Flags().StringVar(&req.User, "user", "", "end every session of this user")
	end.Flags().StringVar(&req.DeviceID, "device", "", "end the session of this device")
	end.Flags().StringVar(&req.Comment, "comment", "", "why, recorded in the audit trail")
	return a.group("session", "List and end signed-in sessions", list, end)
}

func (a *app) deviceRevokeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a device: it loses its session, every gateway drops it, and it can never sign in again (it stays listed)",
		Args:  args("ID"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			return createAndPrint(a, cmd, "/v1/devices/"+esc(args[0])+"/revoke", nil, printDevices)
		}),
	}
}
