package cli

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

func esc(s string) string { return url.PathEscape(s) }

// deleted prints the confirmation of a delete in table mode.
func (a *app) deleted(printed bool, kind, name string) error {
	if !printed {
		fmt.Fprintf(a.io.Out, "Deleted %s %s\n", kind, name)
	}
	return nil
}

// listCommand builds a "list" command that GETs path and prints the
// items with printer (or as JSON with -o json).
func listCommand[T any](a *app, short, path string, printer func(io.Writer, []T) error) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   short,
		Args:    args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			var out []T
			printed, err := a.do(cmd, http.MethodGet, path, nil, &out)
			if err != nil || printed {
				return err
			}
			return printer(a.io.Out, out)
		}),
	}
}

// crud builds list, show and delete for a resource whose items print with
// printer.
func crudCommands[T any](a *app, kind, plural, path string, printer func(io.Writer, []T) error) []*cobra.Command {
	return []*cobra.Command{
		listCommand(a, "List "+plural, path, printer),
		{
			Use:   "show NAME",
			Short: "Show one " + kind,
			Args:  args("NAME"),
			RunE: a.run(func(cmd *cobra.Command, args []string) error {
				var out T
				printed, err := a.do(cmd, http.MethodGet, path+"/"+esc(args[0]), nil, &out)
				if err != nil || printed {
					return err
				}
				return printer(a.io.Out, []T{out})
			}),
		},
		a.deleteCmd(kind, path, "NAME"),
	}
}

func (a *app) deleteCmd(kind, path, arg string) *cobra.Command {
	return &cobra.Command{
		Use:     "delete " + arg,
		Aliases: []string{"rm"},
		Short:   "Delete a " + kind,
		Args:    args(arg),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			printed, err := a.do(cmd, http.MethodDelete, path+"/"+esc(args[0]), nil, nil)
			if err != nil {
				return err
			}
			return a.deleted(printed, kind, args[0])
		}),
	}
}

// create runs a POST and prints the result with printer.
func createAndPrint[T any](a *app, cmd *cobra.Command, path string, in any, printer func(io.Writer, []T) error) error {
	var out T
	printed, err := a.do(cmd, http.MethodPost, path, in, &out)
	if err != nil || printed {
		return err
	}
	return printer(a.io.Out, []T{out})
}

// Segments.

func printSegments(w io.Writer, xs []adminapi.Segment) error {
	t := newTable(w, "NAME", "CIDRS", "CREATED")
	for _, x := range xs {
		t.row(x.Name, join(x.CIDRs), fmtTime(x.CreatedAt))
	}
	return t.flush()
}

func (a *app) segmentCmd() *cobra.Command {
	var cidrs []string
	create := &cobra.Command{
		Use:   "create NAME --cidr PREFIX [--cidr PREFIX]...",
		Short: "Create a segment: real prefixes behind gateways",
		Example: `  cordonctl segment create clinical --cidr 10.20.0.0/24
  cordonctl segment create imaging --cidr 10.30.0.0/24 --cidr fd00:30::/64`,
		Args: args("NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			return createAndPrint(a, cmd, "/v1/segments", &adminapi.CreateSegmentRequest{Name: args[0], CIDRs: cidrs}, printSegments)
		}),
	}
	create.Flags().StringArrayVar(&cidrs, "cidr", nil, "a prefix of the segment, e.g. 10.20.0.0/24 (repeatable)")
	create.MarkFlagRequired("cidr")
	return a.group("segment", "Manage segments", append([]*cobra.Command{create},
		crudCommands(a, "segment", "segments", "/v1/segments", printSegments)...)...)
}

// Apps.

func printApps(w io.Writer, xs []adminapi.App) error {
	t := newTable(w, "NAME", "SEGMENT", "DNS NAME", "ADDRESS", "PROTO", "PORTS", "CLASS", "EMERGENCY")
	for _, x := range xs {
		t.row(x.Name, x.Segment, x.DNSName, x.Address.String(), x.Proto.String(), strings.Join(x.Ports, ","), x.Classification, yesNo(x.Emergency))
	}
	return t.flush()
}

func (a *app) appCmd() *cobra.Command {
	var req adminapi.CreateAppRequest
	create := &cobra.Command{
		Use:   "create NAME --segment S --dns-name N --address A[/bits] [--proto tcp] --port P [--port P]... [--class phi|internal|public]",
		Short: "Create an app inside a segment",
		Example: `  cordonctl app create ehr --segment clinical --dns-name ehr.hospital.internal \
      --address 10.20.0.5 --proto tcp --port 443
  cordonctl app create pacs --segment imaging --dns-name pacs.hospital.internal \
      --address 10.30.0.16/28 --port 104 --port 8000-8099 --class phi`,
		Args: args("NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			r := req
			r.Name = args[0]
			var out adminapi.App
			printed, err := a.do(cmd, http.MethodPost, "/v1/apps", &r, &out)
			if err != nil || printed { // -o json carries the warnings
				return err
			}
			for _, w := range out.Warnings {
				fmt.Fprintf(a.io.Err, "warning: %s\n", w)
			}
			return printApps(a.io.Out, []adminapi.App{out})
		}),
	}
	f := create.Flags()
	f.StringVar(&req.Segment, "segment", "", "segment the app lives in")
	f.StringVar(&req.DNSName, "dns-name", "", "name clients resolve, e.g. ehr.hospital.internal")
	f.StringVar(&req.Address, "address", "", "host address (10.20.0.5) or prefix (10.20.0.16/28) inside the segment")
	f.StringVar(&req.Proto, "proto", "tcp", "tcp, udp, icmp or any")
	f.StringArrayVar(&req.Ports, "port", nil, "port (443), range (8000-8099) or * (repeatable; required for tcp and udp)")
	f.StringVar(&req.Classification, "class", "phi", "data classification: phi, internal or public")
	f.BoolVar(&req.Emergency, "emergency", false, "mark the app for emergency access: break-glass sessions reach emergency apps (that the rules grant) and no other")
	for _, n := range []string{"segment", "dns-name", "address"} {
		create.MarkFlagRequired(n)
	}
	return a.group("app", "Manage apps", append([]*cobra.Command{create},
		crudCommands(a, "app", "apps", "/v1/apps", printApps)...)...)
}

// Users.

func printUsers(w io.Writer, xs []adminapi.User) error {
	t := newTable(w, "NAME", "DISABLED", "BREAK-GLASS", "CREATED")
	for _, x := range xs {
		t.row(x.Name, fmt.Sprint(x.Disabled), yesNo(x.BreakGlass), fmtTime(x.CreatedAt))
	}
	if err := t.flush(); err != nil {
		return err
	}
	for _, x := range xs { // only user show carries identities
		if err := printIdentities(w, x); err != nil {
			return err
		}
	}
	return nil
}

func (a *app) userCmd() *cobra.Command {
	var pwStdin bool
	var pwFile string
	create := &cobra.Command{
		Use:   "create NAME (--password-stdin | --password-file FILE)",
		Short: "Create a local user; prints the TOTP secret and recovery codes, shown only once",
		Long: `create makes a local user with a password (at least 12 characters) and a new
TOTP second factor. The TOTP secret and its otpauth:// URI are printed once:
enrol them in the user's authenticator app now (most apps read the URI as a QR
code). Ten one-time recovery codes follow, for when the authenticator is lost.
None of these can be shown again; to replace the TOTP secret, delete and
re-create the user; for new recovery codes, run 'cordonctl user recovery-codes
regenerate NAME'. The password is never taken as an argument, so it stays out
of shell history and the process list.`,
		Example: `  printf '%s\n' "$PASSWORD" | cordonctl user create nurse-jane --password-stdin
  cordonctl user create dr-smith --password-file /run/secrets/dr-smith`,
		Args: args("NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			pw, err := a.readPassword(pwStdin, pwFile)
			if err != nil {
				return err
			}
			var out adminapi.CreateUserResponse
			printed, err := a.do(cmd, http.MethodPost, "/v1/users", &adminapi.CreateUserRequest{Name: args[0], Password: pw}, &out)
			if err != nil || printed {
				return err
			}
			w := a.io.Out
			fmt.Fprintf(w, "Created user %s.\n\n", sanitize(out.Name))
			fmt.Fprintf(w, "TOTP secret: %s\n", out.TOTPSecret)
			fmt.Fprintf(w, "otpauth URI: %s\n\n", out.TOTPURI)
			if err := writeQR(w, out.TOTPURI); err != nil {
				return err
			}
			fmt.Fprintln(w)
			fmt.Fprintln(w, "WARNING: the TOTP secret is shown only this once. Enrol it in the user's")
			fmt.Fprintln(w, "authenticator app now and do not store it anywhere else.")
			fmt.Fprintln(w)
			a.printRecoveryCodes(out.RecoveryCodes)
			return nil
		}),
	}
	create.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from standard input (first line)")
	create.Flags().StringVar(&pwFile, "password-file", "", "read the password from FILE (first line)")
	toggle := func(verb, short string) *cobra.Command {
		return &cobra.Command{
			Use:   verb + " NAME",
			Short: short,
			Args:  args("NAME"),
			RunE: a.run(func(cmd *cobra.Command, args []string) error {
				return createAndPrint(a, cmd, "/v1/users/"+esc(args[0])+"/"+verb, nil, printUsers)
			}),
		}
	}
	disable := toggle("disable", "Disable a user: every device loses access at once and sign-in is refused; devices and groups are kept")
	enable := toggle("enable", "Re-enable a disabled user")
	return a.group("user", "Manage local users", append([]*cobra.Command{create, disable, enable, a.userRecoveryCmd()},
		crudCommands(a, "user", "users", "/v1/users", printUsers)...)...)
}

func (a *app) readPassword(stdin bool, file string) (string, error) {
	var b []byte
	switch {
	case stdin && file != "":
		return "", usagef("give --password-stdin or --password-file, not both")
	case stdin:
		if a.io.In == nil {
			return "", usagef("--password-stdin: no standard input")
		}
		var err error
		if b, err = io.ReadAll(io.LimitReader(a.io.In, maxFile)); err != nil {
			return "", fmt.Errorf("read password from stdin: %w", err)
		}
	case file != "":
		var err error
		if b, err = readSmall(file); err != nil {
			return "", usagef("--password-file: %v", err)
		}
	default:
		return "", usagef("give the password with --password-stdin or --password-file (never as an argument)")
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	pw = strings.TrimSuffix(pw, "\r")
	if pw == "" {
		return "", usagef("the password is empty")
	}
	return pw, nil
}

// Groups.

func printGroups(w io.Writer, xs []adminapi.Group) error {
	t := newTable(w, "NAME", "MEMBERS", "CREATED")
	for _, x := range xs {
		t.row(x.Name, strings.Join(x.Members, ","), fmtTime(x.CreatedAt))
	}
	return t.flush()
}

func (a *app) groupCmd() *cobra.Command {
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an empty group",
		Args:  args("NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			return createAndPrint(a, cmd, "/v1/groups", &adminapi.CreateGroupRequest{Name: args[0]}, printGroups)
		}),
	}
	add := &cobra.Command{
		Use:   "add-member GROUP USER",
		Short: "Add a user to a group",
		Args:  args("GROUP", "USER"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			return createAndPrint(a, cmd, "/v1/groups/"+esc(args[0])+"/members", &adminapi.AddMemberRequest{User: args[1]}, printGroups)
		}),
	}
	remove := &cobra.Command{
		Use:   "remove-member GROUP USER",
		Short: "Remove a user from a group",
		Args:  args("GROUP", "USER"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			printed, err := a.do(cmd, http.MethodDelete, "/v1/groups/"+esc(args[0])+"/members/"+esc(args[1]), nil, nil)
			if err != nil || printed {
				return err
			}
			fmt.Fprintf(a.io.Out, "Removed %s from group %s\n", args[1], args[0])
			return nil
		}),
	}
	return a.group("group", "Manage groups", append([]*cobra.Command{create, add, remove},
		crudCommands(a, "group", "groups", "/v1/groups", printGroups)...)...)
}

// Rules.

func printRules(w io.Writer, xs []adminapi.Rule) error {
	t := newTable(w, "NAME", "GROUP", "APP", "CREATED")
	for _, x := range xs {
		t.row(x.Name, x.Group, x.App, fmtTime(x.CreatedAt))
	}
	return t.flush()
}

func (a *app) ruleCmd() *cobra.Command {
	var req adminapi.CreateRuleRequest
	create := &cobra.Command{
		Use:     "create NAME --group G --app A",
		Short:   "Let a group reach an app",
		Example: `  cordonctl rule create nurses-ehr --group nurses --app ehr`,
		Args:    args("NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			r := req
			r.Name = args[0]
			return createAndPrint(a, cmd, "/v1/rules", &r, printRules)
		}),
	}
	create.Flags().StringVar(&req.Group, "group", "", "group whose members get access")
	create.Flags().StringVar(&req.App, "app", "", "app they may reach")
	create.MarkFlagRequired("group")
	create.MarkFlagRequired("app")
	return a.group("rule", "Manage access rules", append([]*cobra.Command{create},
		crudCommands(a, "rule", "rules", "/v1/rules", printRules)...)...)
}

// Gateways and their enrollment tokens.

func (a *app) printTokens(w io.Writer, xs []adminapi.GatewayToken) error {
	now := a.io.Now()
	t := newTable(w, "ID", "SEGMENT", "NAME", "EXPIRES", "STATE", "USED BY")
	for _, x := range xs {
		state := "valid"
		switch {
		case x.UsedAt != nil:
			state = "used " + fmtTime(*x.UsedAt)
		case !now.Before(x.ExpiresAt):
			state = "expired"
		}
		t.row(x.ID, x.Segment, x.Name, fmtTime(x.ExpiresAt), state, x.UsedBy)
	}
	return t.flush()
}

func printGateways(w io.Writer, xs []adminapi.Gateway) error {
	t := newTable(w, "ID", "NAME", "SEGMENT", "STATE", "LAST SEEN", "VERSION", "PEERS", "FLOWS", "OVERLAY", "ENDPOINT", "PUBLIC KEY", "CREATED")
	for _, x := range xs {
		state := x.State
		if !x.DrainedAt.IsZero() && state != "draining" {
			state = strings.TrimPrefix(state+", draining", ", ") // dead or disconnected, and drained
		}
		t.row(x.ID, x.Name, x.Segment, state, fmtTime(x.LastSeen), x.Version, fmtCount(x.Peers), fmtCount(x.Flows),
			addrString(x.OverlayAddr.IsValid(), x.OverlayAddr.String()), x.Endpoint, x.PublicKey.String(), fmtTime(x.CreatedAt))
	}
	return t.flush()
}

// fmtCount is an optional count for a table: "-" when not known.
func fmtCount(n *int) string {
	if n == nil {
		return "-"
	}
	return strconv.Itoa(*n)
}

func addrString(valid bool, s string) string {
	if !valid {
		return ""
	}
	return s
}

func (a *app) gatewayCmd() *cobra.Command {
	var req adminapi.CreateGatewayTokenRequest
	tokCreate := &cobra.Command{
		Use:   "create --segment S [--name N] [--ttl 1h]",
		Short: "Issue a single-use gateway enrollment token",
		Long: `create issues a single-use token a gateway redeems to enroll into a segment.
In table mode only the token is printed on stdout, so scripts can capture it;
details go to stderr. The token is shown once and expires after --ttl
(default 1h, at most 7d).`,
		Example: `  TOKEN=$(cordonctl gateway token create --segment clinical --name gw-east)`,
		Args:    args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			var out adminapi.CreateGatewayTokenResponse
			printed, err := a.do(cmd, http.MethodPost, "/v1/gateway-tokens", &req, &out)
			if err != nil || printed {
				return err
			}
			fmt.Fprintln(a.io.Out, out.Token)
			fmt.Fprintf(a.io.Err, "Token %s for segment %s expires %s; it is shown only once.\n", out.ID, out.Segment, fmtTime(out.ExpiresAt))
			return nil
		}),
	}
	tokCreate.Flags().StringVar(&req.Segment, "segment", "", "segment the gateway will serve")
	tokCreate.Flags().StringVar(&req.Name, "name", "", "name the gateway gets (default: the name the gateway sends)")
	tokCreate.Flags().StringVar(&req.TTL, "ttl", "", "lifetime, e.g. 30m, 1h, 2d (default 1h, at most 7d)")
	tokCreate.MarkFlagRequired("segment")
	tokList := listCommand(a, "List enrollment tokens (never their secrets)", "/v1/gateway-tokens", a.printTokens)
	list := listCommand(a, "List enrolled gateways", "/v1/gateways", printGateways)
	return a.group("gateway", "Manage gateways and their enrollment tokens",
		a.group("token", "Manage gateway enrollment tokens", tokCreate, tokList),
		list,
		a.deleteCmd("gateway", "/v1/gateways", "ID"),
		a.gatewayDrainCmd(),
		a.gatewayUndrainCmd(),
	)
}

func (a *app) gatewayDrainCmd() *cobra.Command {
	var req adminapi.DrainGatewayRequest
	c := &cobra.Command{
		Use:   "drain NAME|ID [--force]",
		Short: "Move a gateway's clients to the segment's other gateways before maintenance",
		Long: `drain moves every client off a gateway without a failed request: each client
moves the segment to its next gateway the first moment it has no connection
open into the segment. Connections still open after ` + controlproto.DrainGrace.String() + ` are cut.
'cordonctl gateway list' shows the gateway "draining" and its PEERS fall to 0
when it carries nobody; then stop it. The drain survives restarts of the
controller and the gateway until 'cordonctl gateway undrain'.

Draining the segment's last live gateway that is not draining is refused:
it would cut every client off the segment. --force does it anyway.`,
		Example: `  cordonctl gateway drain gw-east
  cordonctl gateway list          # wait for gw-east: draining, PEERS 0
  cordonctl gateway undrain gw-east`,
		Args: args("NAME|ID"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			return createAndPrint(a, cmd, "/v1/gateways/"+esc(args[0])+"/drain", &req, printGateways)
		}),
	}
	c.Flags().BoolVar(&req.Force, "force", false, "drain the segment's last live gateway too (its clients lose the segment)")
	return c
}

func (a *app) gatewayUndrainCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "undrain NAME|ID",
		Aliases: []string{"resume"},
		Short:   "Let a drained gateway take clients again",
		Args:    args("NAME|ID"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			return createAndPrint(a, cmd, "/v1/gateways/"+esc(args[0])+"/undrain", nil, printGateways)
		}),
	}
}

// Devices.

func printDevices(w io.Writer, xs []adminapi.Device) error {
	t := newTable(w, "ID", "USER", "HOSTNAME", "OVERLAY", "PUBLIC KEY", "CREATED", "REVOKED", "QUARANTINED")
	for _, x := range xs {
		revoked, quarantined := "-", "-"
		if !x.RevokedAt.IsZero() {
			revoked = fmtTime(x.RevokedAt)
		}
		if q := x.Quarantine; q != nil {
			quarantined = fmtTime(q.At)
		}
		t.row(x.ID, x.User, x.Hostname, addrString(x.OverlayAddr.IsValid(), x.OverlayAddr.String()), x.PublicKey.String(), fmtTime(x.CreatedAt), revoked, quarantined)
	}
	return t.flush()
}

func (a *app) deviceCmd() *cobra.Command {
	list := listCommand(a, "List enrolled client devices", "/v1/devices", printDevices)
	return a.group("device", "Manage enrolled devices", list, a.deviceShowCmd(), a.deviceRevokeCmd(),
		a.deviceQuarantineCmd(), a.deviceReleaseCmd(), a.deleteCmd("device", "/v1/devices", "ID"))
}

// Audit.

func printAudit(w io.Writer, xs []adminapi.AuditEvent) error {
	t := newTable(w, "SEQ", "TIME", "TYPE", "ACTOR", "OUTCOME", "SUBJECT", "DETAILS")
	for _, x := range xs {
		keys := make([]string, 0, len(x.Details))
		for k := range x.Details {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		det := make([]string, len(keys))
		for i, k := range keys {
			det[i] = k + "=" + x.Details[k]
		}
		t.row(fmt.Sprint(x.Seq), fmtTime(x.Time), string(x.Type), x.Actor, x.Outcome, x.Subject, strings.Join(det, " "))
	}
	return t.flush()
}

func (a *app) auditCmd() *cobra.Command {
	var q adminapi.AuditQuery
	list := &cobra.Command{
		Use:     "list [--type T] [--limit N] [--after SEQ] [--request ID]",
		Aliases: []string{"ls"},
		Short:   "List audit events, newest first",
		Example: `  cordonctl audit list --type auth.login --limit 20
  cordonctl audit list --type admin.   # every admin change
  cordonctl audit list --request 3f2a...   # what one call did`,
		Args: args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			if q.Limit < 0 || q.Limit > adminapi.MaxAuditLimit {
				return usagef("--limit %d: use 1 to %d", q.Limit, adminapi.MaxAuditLimit)
			}
			var out []adminapi.AuditEvent
			printed, err := a.do(cmd, http.MethodGet, adminapi.AuditPath(q), nil, &out)
			if err != nil || printed {
				return err
			}
			return printAudit(a.io.Out, out)
		}),
	}
	list.Flags().StringVar(&q.Type, "type", "", "event type, or a prefix ending in '.' (auth., admin., enroll.)")
	list.Flags().IntVar(&q.Limit, "limit", 0, fmt.Sprintf("most events to show (default 100, at most %d)", adminapi.MaxAuditLimit))
	list.Flags().Int64Var(&q.After, "after", 0, "only events after this sequence number")
	list.Flags().StringVar(&q.Request, "request", "", "only the events of the call with this request ID (Idempotency-Key)")
	cmds := append([]*cobra.Command{list, a.auditSinksCmd()}, a.auditLogCmds()...)
	cmds = append(cmds, a.auditSearchCmds()...)
	return a.group("audit", "Read, search, verify and archive the audit trail", cmds...)
}
