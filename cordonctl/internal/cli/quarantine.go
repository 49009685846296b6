package cli

import (
	"fmt"
	"io"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/pkg/adminapi"
)

// Device show, quarantine and release.

func (a *app) deviceShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show one device, with its quarantine if it has one",
		Args:  args("ID"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			var d adminapi.Device
			printed, err := a.do(cmd, http.MethodGet, "/v1/devices/"+esc(args[0]), nil, &d)
			if err != nil || printed {
				return err
			}
			return printDevice(a.io.Out, d)
		}),
	}
}

// printDevice prints one device as "Key: value" lines.
func printDevice(w io.Writer, d adminapi.Device) error {
	state := "active"
	switch {
	case !d.RevokedAt.IsZero():
		state = "revoked " + fmtTime(d.RevokedAt)
	case d.Quarantine != nil:
		state = "quarantined"
	}
	lines := [][2]string{
		{"ID", d.ID}, {"User", d.User}, {"Hostname", d.Hostname},
		{"Overlay", addrString(d.OverlayAddr.IsValid(), d.OverlayAddr.String())},
		{"Public key", d.PublicKey.String()}, {"Created", fmtTime(d.CreatedAt)}, {"State", state},
	}
	if q := d.Quarantine; q != nil {
		lines = append(lines, [2]string{"Quarantined", fmtTime(q.At) + " by " + q.By}, [2]string{"Reason", q.Reason})
	}
	for _, l := range lines {
		if _, err := fmt.Fprintf(w, "%-12s %s\n", l[0]+":", l[1]); err != nil {
			return err
		}
	}
	return nil
}

func (a *app) deviceQuarantineCmd() *cobra.Command {
	var req adminapi.QuarantineRequest
	c := &cobra.Command{
		Use:   "quarantine ID --reason TEXT",
		Short: "Isolate a device: every gateway drops it and cuts its connections, it reaches no app until released; it keeps its control channel, so its user sees the reason and its posture keeps reporting",
		Long: `quarantine isolates a device in one call: within a second every gateway
drops it as a peer (its open connections are cut, new ones refused) and its
map entitles it to nothing. It stays signed in: 'cordon status' on the device
says "quarantined by your IT security team: REASON; ... contact your IT
service desk", and its posture reports keep arriving. Signing in again or
re-enrolling with the same key does not end it, nor does a controller
restart; only 'cordonctl device release' does. Both are audited
(admin.device.quarantine, admin.device.release).`,
		Example: `  cordonctl device quarantine dev-3f2a9c01d2 --reason "EDR malware alert, ticket 4411"
  cordonctl device show dev-3f2a9c01d2
  cordonctl device release dev-3f2a9c01d2 --comment "reimaged, ticket 4411 closed"`,
		Args: args("ID"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			if req.Reason == "" {
				return usagef("--reason is required: the device's user is told why")
			}
			return a.deviceAction(cmd, args[0], "quarantine", &req)
		}),
	}
	c.Flags().StringVar(&req.Reason, "reason", "", "why, shown to the device's user and recorded in the audit trail (required)")
	return c
}

func (a *app) deviceReleaseCmd() *cobra.Command {
	var req adminapi.ReleaseRequest
	c := &cobra.Command{
		Use:   "release ID [--comment TEXT]",
		Short: "End a device's quarantine: it reaches its apps again",
		Args:  args("ID"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			return a.deviceAction(cmd, args[0], "release", &req)
		}),
	}
	c.Flags().StringVar(&req.Comment, "comment", "", "why, recorded in the audit trail")
	return c
}

// deviceAction POSTs req to device id's action and prints the device.
func (a *app) deviceAction(cmd *cobra.Command, id, action string, req any) error {
	var d adminapi.Device
	printed, err := a.do(cmd, http.MethodPost, "/v1/devices/"+esc(id)+"/"+action, req, &d)
	if err != nil || printed {
		return err
	}
	return printDevice(a.io.Out, d)
}
