package cli

import (
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/pkg/adminapi"
)

// auditSinksCmd is 'cordonctl audit sinks': each SIEM sink's cursor and
// lag (docs/audit.md, "SIEM export").
func (a *app) auditSinksCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "sinks",
		Short: "Show each SIEM sink the audit log is streamed to: how far it got and how far behind it is",
		Args:  args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			var xs []adminapi.AuditSink
			printed, err := a.do(cmd, "GET", adminapi.AuditSinksPath, nil, &xs)
			if err != nil || printed {
				return err
			}
			return a.printSinks(a.io.Out, xs)
		}),
	}
}

func (a *app) printSinks(w io.Writer, xs []adminapi.AuditSink) error {
	if len(xs) == 0 {
		_, err := io.WriteString(w, "no SIEM sinks (cordon-controller --siem-config)\n")
		return err
	}
	now := a.io.Now()
	t := newTable(w, "NAME", "FORMAT", "TRANSPORT", "TARGET", "CURSOR", "LOG", "LAG", "STATE", "BEHIND SINCE", "LAST SENT", "LAST ERROR")
	for _, x := range xs {
		state := "connected"
		switch {
		case x.Alerting:
			state = "ALERT: behind"
		case !x.Connected && x.LastError != "":
			state = "retrying"
		case !x.Connected:
			state = "idle"
		}
		t.row(x.Name, x.Format, x.Transport, x.Target, strconv.FormatInt(x.Cursor, 10), strconv.FormatInt(x.LogSize, 10),
			strconv.FormatInt(x.Lag, 10), state, ago(now, x.BehindSince), ago(now, x.LastSent), x.LastError)
	}
	return t.flush()
}
