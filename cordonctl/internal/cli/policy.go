package cli

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// The policy commands below work on a policy file offline: no controller
// is needed to validate a change or answer an access question about it.
// The controller-side workflow (plan, apply, history, ...) is in
// policyctl.go.

// invalidError is input that was read and refused (exit 2, without the
// usage hint a command-line mistake gets).
type invalidError struct{ msg string }

func (e *invalidError) Error() string { return e.msg }

// readPolicyFile reads FILE ("-" for stdin) within the size limit.
func (a *app) readPolicyFile(name string) ([]byte, error) {
	var r io.Reader
	if name == "-" {
		r = a.io.In
		name = "<stdin>"
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, usagef("read policy: %v", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, policyfile.MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read policy %s: %w", name, err)
	}
	return b, nil
}

// loadPolicy parses and validates (tests included) a policy file. Every
// problem is an invalid-input error (exit 2).
func (a *app) loadPolicy(name string) (*policyfile.Policy, []policyfile.TestResult, error) {
	src, err := a.readPolicyFile(name)
	if err != nil {
		return nil, nil, err
	}
	file := name
	if name == "-" {
		file = "<stdin>"
	}
	pol, res, err := policyfile.Validate(file, src)
	if err != nil {
		var list policyfile.ErrorList
		var verr *policyfile.ValidationError
		if errors.As(err, &list) {
			return nil, nil, &invalidError{msg: fmt.Sprintf("policy refused: %d problem(s)\n%s", len(list), list.Error())}
		}
		if errors.As(err, &verr) {
			return nil, res, &invalidError{msg: err.Error()}
		}
		return nil, nil, err
	}
	return pol, res, nil
}

func (a *app) policyCmd() *cobra.Command {
	validate := &cobra.Command{
		Use:   "validate FILE",
		Short: "Parse and check a policy file and run its tests (offline)",
		Long: `Parse and check a policy file and run its tests, without a controller.
Every problem is printed as file:line:column. A policy with an error or a
failing test is refused (exit 2); such a policy is never applied.`,
		Args: args("FILE"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			pol, res, err := a.loadPolicy(args[0])
			if err != nil {
				return err
			}
			for _, w := range pol.Warnings() {
				fmt.Fprintf(a.io.Err, "warning: %s\n", w)
			}
			if a.output == "json" {
				return writeJSONValue(a.io.Out, map[string]any{
					"valid": true, "groups": len(pol.Groups), "segments": len(pol.Segments), "apps": len(pol.Apps),
					"rules": len(pol.Rules), "deny_rules": len(pol.Denies), "tests_passed": len(res),
				})
			}
			fmt.Fprintf(a.io.Out, "%s: valid: %d groups, %d segments, %d apps, %d rules, %d deny rules; %d/%d tests passed\n",
				args[0], len(pol.Groups), len(pol.Segments), len(pol.Apps), len(pol.Rules), len(pol.Denies), len(res), len(res))
			return nil
		}),
	}

	var ex struct {
		user, app, port, at, mfaAge, source string
		idp, tags, posture                  []string
	}
	var exFile string
	explain := &cobra.Command{
		Use:   "explain [FILE] --user U --app A --port tcp/443",
		Short: "Say whether a user on a device may reach an app and port, and why",
		Long: `Say whether a user on a device, in a given context, may reach an app and
port, and why. With FILE (or --file) the file is read offline; without, the
policy that decides access now is fetched from the controller (the active
version, or the one-by-one directory rendered as a policy file) and
evaluated locally, with the user's IdP group claims as the identity
provider last reported them (their age is printed) unless --idp is given.`,
		Example: `  cordonctl policy explain hospital.yaml --user alice --app ehr --port tcp/443 \
      --posture disk-encrypted,screen-lock --mfa-age 2h --at 2026-03-02T09:00:00-05:00
  cordonctl policy explain --user alice --app ehr --port tcp/443   # the controller's policy`,
		Args: optionalFileArgs("", 0),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			pol, err := a.policyFor(cmd, exFile, args, 0)
			if err != nil {
				return err
			}
			if _, ok := pol.Apps[ex.app]; !ok {
				return usagef("--app %q is not in the policy", ex.app)
			}
			svc, err := policyfile.ParseService(ex.port)
			if err != nil || len(svc.Ports) > 1 || len(svc.Ports) == 1 && svc.Ports[0].First != svc.Ports[0].Last {
				return usagef("--port %q: write tcp/443, udp/53 or icmp", ex.port)
			}
			q := policyfile.Request{User: ex.user, Tags: ex.tags, App: ex.app, Proto: svc.Proto}
			if len(svc.Ports) == 1 {
				q.Port = svc.Ports[0].First
			}
			if q.IdP, err = parseIdP(ex.idp); err != nil {
				return err
			}
			if len(ex.idp) == 0 && fromController(exFile, args, 0) {
				if q.IdP, err = a.lastKnownClaims(cmd, ex.user); err != nil {
					return err
				}
			}
			q.At = a.io.Now()
			if ex.at != "" {
				if q.At, err = time.Parse(time.RFC3339, ex.at); err != nil {
					return usagef("--at %q: write RFC 3339, e.g. 2026-03-02T09:00:00-05:00", ex.at)
				}
			}
			q.Session = policy.Session{Posture: slices.Sorted(slices.Values(ex.posture)), Tags: ex.tags,
				Groups: pol.GroupsOf(ex.user, q.IdP)}
			if ex.mfaAge != "" {
				d, err := time.ParseDuration(ex.mfaAge)
				if err != nil || d < 0 {
					return usagef("--mfa-age %q: write a duration such as 2h", ex.mfaAge)
				}
				q.Session.MFAAt = q.At.Add(-d)
			}
			if ex.source != "" {
				if q.Session.PublicAddr, err = netip.ParseAddr(ex.source); err != nil {
					return usagef("--source %q: write an IP address", ex.source)
				}
			}
			r := pol.Evaluate(q)
			detail := policyfile.Detail(r, q)
			if a.output == "json" {
				out := map[string]any{"verdict": r.Verdict.String(), "reason": r.Reason.String(), "app": ex.app, "port": ex.port}
				if r.Rule != nil {
					out["rule"] = r.Rule.Name
				}
				if detail != "" {
					out["detail"] = detail
				}
				return writeJSONValue(a.io.Out, out)
			}
			fmt.Fprintln(a.io.Out, policyfile.Explain(r))
			if detail != "" {
				fmt.Fprintf(a.io.Out, "  %s\n", detail)
			}
			return nil
		}),
	}
	f := explain.Flags()
	f.StringVar(&ex.user, "user", "", "user name")
	f.StringSliceVar(&ex.idp, "idp", nil, "the user's IdP group claims, CLAIM=VALUE (repeatable)")
	f.StringSliceVar(&ex.tags, "tag", nil, "device tags (repeatable)")
	f.StringSliceVar(&ex.posture, "posture", nil, "posture checks the device passes (comma-separated)")
	f.StringVar(&ex.mfaAge, "mfa-age", "", "time since the user's MFA, e.g. 2h (default: no MFA in the session)")
	f.StringVar(&ex.source, "source", "", "the device's public IP address")
	f.StringVar(&ex.app, "app", "", "app name")
	f.StringVar(&ex.port, "port", "", "protocol and port: tcp/443, udp/53, icmp")
	f.StringVar(&ex.at, "at", "", "time of the request, RFC 3339 (default: now)")
	f.StringVar(&exFile, "file", "", "policy file (default: the controller's policy)")
	explain.MarkFlagRequired("user")
	explain.MarkFlagRequired("app")
	explain.MarkFlagRequired("port")

	var whoFile string
	whoCan := &cobra.Command{
		Use:   "who-can [FILE] APP",
		Short: "List who may reach an app: users, IdP groups and device tags (access review)",
		Long: `List who may reach an app: users, IdP groups and device tags, with the rule,
ports and conditions. With FILE (or --file) the file is read offline;
without, the controller's policy is fetched (the active version, or the
one-by-one directory rendered as a policy file) and evaluated locally, and
the users whom their last-known IdP group claims let in are listed too (VIA
says which claims and how old they are).`,
		Args: optionalFileArgs("APP", 1),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			pol, err := a.policyFor(cmd, whoFile, args, 1)
			if err != nil {
				return err
			}
			app := args[len(args)-1]
			es, err := pol.WhoCan(app)
			if err != nil {
				return &usageError{msg: err.Error()}
			}
			if fromController(whoFile, args, 1) {
				if es, err = a.whoCanByClaims(cmd, pol, app, es); err != nil {
					return err
				}
			}
			return a.printEntitlements(es)
		}),
	}

	var acc struct {
		file      string
		idp, tags []string
	}
	access := &cobra.Command{
		Use:   "access [FILE] USER",
		Short: "List what a user may reach (access review)",
		Long: `List every app and port a user may reach, with the rule and conditions.
With FILE (or --file) the file is read offline; without, the controller's
policy is fetched (the active version, or the one-by-one directory rendered
as a policy file) and evaluated locally, with the user's IdP group claims as
the identity provider last reported them (their age is printed) unless
--idp is given.`,
		Args: optionalFileArgs("USER", 1),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			pol, err := a.policyFor(cmd, acc.file, args, 1)
			if err != nil {
				return err
			}
			user := args[len(args)-1]
			idp, err := parseIdP(acc.idp)
			if err != nil {
				return err
			}
			if len(acc.idp) == 0 && fromController(acc.file, args, 1) {
				if idp, err = a.lastKnownClaims(cmd, user); err != nil {
					return err
				}
			}
			return a.printEntitlements(pol.Access(user, idp, acc.tags))
		}),
	}
	access.Flags().StringVar(&acc.file, "file", "", "policy file (default: the controller's policy)")
	access.Flags().StringSliceVar(&acc.idp, "idp", nil, "the user's IdP group claims, CLAIM=VALUE (repeatable)")
	access.Flags().StringSliceVar(&acc.tags, "tag", nil, "device tags (repeatable)")

	var diffFiles bool
	diff := &cobra.Command{
		Use:   "diff A B",
		Short: "Say who gains and who loses access to which apps and ports between two policy versions or files",
		Long: `Compare two policies as an access reviewer would: for every user, IdP
group and device tag, the apps and ports (and conditions) they gain, lose or
keep differently. A and B are version numbers applied on the controller
(cordonctl policy history), or, with --file or when they are not numbers,
policy files compared offline (both must validate). Nothing is applied.`,
		Example: `  cordonctl policy diff 3 4                       # applied versions
  cordonctl policy diff --file old.yaml new.yaml  # files, offline`,
		Args: args("A", "B"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			var changes []policyfile.Change
			if !diffFiles && isVersionArgs(args) {
				var err error
				if changes, err = a.diffVersions(cmd, args[0], args[1]); err != nil {
					return err
				}
			} else {
				old, _, err := a.loadPolicy(args[0])
				if err != nil {
					return err
				}
				cur, _, err := a.loadPolicy(args[1])
				if err != nil {
					return err
				}
				changes = policyfile.Diff(old, cur)
			}
			if a.output == "json" {
				if changes == nil {
					changes = []policyfile.Change{}
				}
				return writeJSONValue(a.io.Out, changes)
			}
			return a.printChanges(changes)
		}),
	}
	whoCan.Flags().StringVar(&whoFile, "file", "", "policy file (default: the controller's policy)")
	diff.Flags().BoolVar(&diffFiles, "file", false, "A and B are policy files (offline), even if named like numbers")

	return a.group("policy", "Write, review and apply policy: offline on files, or on the controller",
		validate, explain, whoCan, access, diff,
		a.policyExportCmd(), a.policyPlanCmd(), a.policyApplyCmd(), a.policyHistoryCmd(), a.policyShowCmd(), a.policyRollbackCmd())
}

// optionalFileArgs accepts an optional FILE followed by n arguments named
// name (n is 0 or 1).
func optionalFileArgs(name string, n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n || len(args) > n+1 {
			if n == 0 {
				return usagef("%s takes at most one argument, FILE", cmd.CommandPath())
			}
			return usagef("%s needs [FILE] %s", cmd.CommandPath(), name)
		}
		for _, v := range args {
			if v == "" {
				return usagef("%s: an argument is empty", cmd.CommandPath())
			}
		}
		return nil
	}
}

// fromController reports whether policyFor answers with the controller's
// policy (no FILE): access questions then use each user's last-known IdP
// claims unless --idp gives others.
func fromController(fileFlag string, args []string, n int) bool {
	return fileFlag == "" && len(args) <= n
}

// policyFor is the policy an access question is asked of: the file named
// by --file or by the first of args (when args has more than n), read
// offline and validated with its tests; otherwise the controller's policy
// (policy export), parsed locally.
func (a *app) policyFor(cmd *cobra.Command, fileFlag string, args []string, n int) (*policyfile.Policy, error) {
	file := fileFlag
	if len(args) > n {
		if file != "" {
			return nil, usagef("give the policy file either as FILE or as --file, not both")
		}
		file = args[0]
	}
	if file != "" {
		pol, _, err := a.loadPolicy(file)
		return pol, err
	}
	exp, name, err := a.fetchPolicy(cmd)
	if err != nil {
		return nil, err
	}
	pol, err := policyfile.Parse(name, []byte(exp.Source))
	if err != nil {
		return nil, fmt.Errorf("the controller's policy (%s) does not parse: %w", name, err)
	}
	fmt.Fprintf(a.io.Err, "(evaluating %s from the controller)\n", name)
	return pol, nil
}

// fetchPolicy gets the controller's policy: the active version, or the
// directory rendered as a policy file. name describes which, for messages.
func (a *app) fetchPolicy(cmd *cobra.Command) (*adminapi.PolicyExport, string, error) {
	c, err := a.getClient()
	if err != nil {
		return nil, "", err
	}
	exp, err := c.ExportPolicy(cmd.Context())
	if err != nil {
		return nil, "", err
	}
	name := "the directory (no policy applied yet)"
	if exp.Origin == adminapi.PolicyOriginPolicy {
		name = fmt.Sprintf("policy version %d (%s)", exp.Version, exp.File)
	}
	return exp, name, nil
}

func (a *app) policyExportCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "export [-f FILE]",
		Short: "Write the controller's policy as a file: the active version, or the one-by-one directory as a policy",
		Long: `Write the policy that decides access now as a policy file. With a policy
applied, that is the active version's text exactly as applied. Before the
first apply, it is the directory built with segment/app/group/rule create,
rendered as a policy file that grants exactly the same: the starting point
for moving to a file. Rules to phi apps then carry a dated waiver, because
directory rules have no MFA or posture conditions; add them, then
'policy plan' and 'policy apply'. Writes to stdout, or to FILE (mode 0644).`,
		Example: `  cordonctl policy export -f policy.yaml
  $EDITOR policy.yaml          # add MFA and posture conditions, tests
  cordonctl policy plan policy.yaml
  cordonctl policy apply policy.yaml --reason "CHG-100: move to a policy file"`,
		Args: args(),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			exp, name, err := a.fetchPolicy(cmd)
			if err != nil {
				return err
			}
			if a.output == "json" && out == "" {
				return writeJSONValue(a.io.Out, exp)
			}
			if out == "" || out == "-" {
				_, err := io.WriteString(a.io.Out, exp.Source)
				return err
			}
			if err := os.WriteFile(out, []byte(exp.Source), 0o644); err != nil {
				return fmt.Errorf("write %s: %w", out, err)
			}
			fmt.Fprintf(a.io.Out, "wrote %s: %s, sha256 %s\n", out, name, short(exp.SHA256))
			return nil
		}),
	}
	cmd.Flags().StringVarP(&out, "file", "f", "", "write to FILE instead of stdout")
	return cmd
}

func parseIdP(vals []string) ([]policyfile.IdPRef, error) {
	var out []policyfile.IdPRef
	for _, v := range vals {
		c, val, ok := strings.Cut(v, "=")
		if !ok || c == "" || val == "" {
			return nil, usagef("--idp %q: write CLAIM=VALUE, e.g. groups=Physicians", v)
		}
		out = append(out, policyfile.IdPRef{Claim: c, Value: val})
	}
	return out, nil
}

func (a *app) printEntitlements(es []policyfile.Entitlement) error {
	if a.output == "json" {
		if es == nil {
			es = []policyfile.Entitlement{}
		}
		return writeJSONValue(a.io.Out, es)
	}
	t := newTable(a.io.Out, "WHO", "APP", "CLASS", "PORTS", "RULE", "VIA", "CONDITIONS", "DENIED-BY")
	for _, e := range es {
		cond := e.Conditions
		if e.Waiver != "" {
			cond = strings.TrimPrefix(cond+"; waiver", "; ")
		}
		t.row(e.Who, e.App, e.Class, e.Ports, e.Rule, e.Via, orDash(cond), orDash(e.DeniedBy))
	}
	return t.flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
