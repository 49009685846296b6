// Package cli implements cordonctl's commands.
//
// Exit codes (also in cordonctl --help):
//
//	0  success
//	1  any other error
//	2  usage error or invalid input (including the API's "invalid")
//	3  not found
//	4  conflict or still in use
//	5  unauthorized or forbidden (bad or expired admin token, a role
//	   without the permission, or enrollment token invalid)
//	6  controller unreachable
//	7  the audit log or bundle does not verify (audit verify)
//
// Settings come from flags, then environment variables, then the file
// cordonctl login saved. Errors go to stderr as "cordonctl: <message>".
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/internal/buildinfo"
	"github.com/cordonhq/cordon/pkg/adminapi"
)

// Exit codes.
const (
	ExitOK           = 0
	ExitError        = 1
	ExitUsage        = 2
	ExitNotFound     = 3
	ExitConflict     = 4
	ExitUnauthorized = 5
	ExitUnreachable  = 6
	ExitNotVerified  = 7 // cordonctl audit verify: the log or bundle does not verify
)

// Environment variables.
const (
	EnvController = "CORDON_CONTROLLER"
	EnvToken      = "CORDON_TOKEN"
	EnvCACert     = "CORDON_CA_CERT"
)

// IO is the process environment a command runs in.
type IO struct {
	In     io.Reader
	Out    io.Writer
	Err    io.Writer
	Getenv func(string) string
	// Now is the clock that labels what the controller sent (a token
	// "expired", a session "3m ago"); nil means time.Now. Tests set it to
	// the test controller's clock.
	Now func() time.Time
}

// usageError is a mistake on the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// app holds the global flags and the lazily created API client.
type app struct {
	io         IO
	controller string
	token      string
	tokenFile  string
	caCert     string
	output     string
	ran        bool // a command's RunE started (later errors are not usage errors)
	client     *adminapi.Client
}

// changeRetryFor is how long a change that got no answer is retried: a
// controller restart takes a few seconds.
const changeRetryFor = 30 * time.Second

// Main runs cordonctl with args and returns the exit code.
func Main(ctx context.Context, args []string, io IO) int {
	if io.Getenv == nil {
		io.Getenv = func(string) string { return "" }
	}
	if io.Now == nil {
		io.Now = time.Now
	}
	a := &app{io: io}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(io.In)
	root.SetOut(io.Out)
	root.SetErr(io.Err)
	cmd, err := root.ExecuteContextC(ctx)
	if a.client != nil {
		a.client.Close()
	}
	if err == nil {
		return ExitOK
	}
	var applied *adminapi.AppliedError
	if errors.As(err, &applied) {
		fmt.Fprintf(io.Err, "cordonctl: the change was applied, but its answer was lost before a retry: %s\n", applied.Message)
		return ExitOK
	}
	code := a.exitCode(err)
	fmt.Fprintf(io.Err, "cordonctl: %s\n", strings.TrimSpace(err.Error()))
	if code == ExitUsage && !a.ran || errors.As(err, new(*usageError)) {
		if cmd != nil {
			fmt.Fprintf(io.Err, "Run '%s --help' for usage.\n", cmd.CommandPath())
		}
	}
	return code
}

func (a *app) exitCode(err error) int {
	var (
		ue *usageError
		ae *adminapi.Error
		ur *adminapi.UnreachableError
	)
	switch {
	case errors.As(err, &ue), errors.As(err, new(*invalidError)):
		return ExitUsage
	case errors.As(err, new(*notVerifiedError)):
		return ExitNotVerified
	case errors.As(err, &ur):
		return ExitUnreachable
	case errors.As(err, &ae):
		switch ae.Code {
		case adminapi.CodeInvalid:
			return ExitUsage
		case adminapi.CodeNotFound:
			return ExitNotFound
		case adminapi.CodeConflict, adminapi.CodeInUse:
			return ExitConflict
		case adminapi.CodeUnauthorized, adminapi.CodeTokenInvalid, adminapi.CodeForbidden:
			return ExitUnauthorized
		}
		switch ae.Status {
		case http.StatusBadRequest:
			return ExitUsage
		case http.StatusNotFound:
			return ExitNotFound
		case http.StatusConflict:
			return ExitConflict
		case http.StatusUnauthorized, http.StatusForbidden:
			return ExitUnauthorized
		}
		return ExitError
	case !a.ran:
		// Cobra's own errors: unknown command or flag, wrong arguments,
		// missing required flag.
		return ExitUsage
	}
	return ExitError
}

const rootLong = `cordonctl manages a Cordon controller: segments, apps, users, groups,
rules, gateways, devices and the audit trail.

Connection settings come from flags, then environment variables, then the
file 'cordonctl login' saves ($XDG_CONFIG_HOME/cordon/cordonctl.json):

  --controller URL    CORDON_CONTROLLER   e.g. https://controller.hospital.example:8443
  --token-file FILE   CORDON_TOKEN        admin token (--token also works, but is
                                          visible to other local users in ps);
                                          'cordonctl login --admin NAME' saves one
  --ca-cert FILE      CORDON_CA_CERT      the controller's CA certificate (ca.pem);
                                          no other CA is trusted

Exit codes:
  0  success
  1  any other error
  2  usage error or invalid input
  3  not found
  4  conflict, or still in use
  5  unauthorized (bad or expired token: sign in again), or forbidden
     (your role lacks the permission)
  6  controller unreachable
  7  the audit log or bundle does not verify (cordonctl audit verify)`

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "cordonctl",
		Short:         "Administer a Cordon zero-trust controller",
		Long:          rootLong,
		Version:       buildinfo.Version(),
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if a.output == "csv" && cmd.Annotations[csvAnnotation] != "" {
				return nil
			}
			extra := cmd.Annotations[outputsAnnotation]
			if extra != "" && slices.Contains(strings.Split(extra, ","), a.output) {
				return nil
			}
			if a.output != "table" && a.output != "json" {
				if extra != "" {
					return usagef("-o %q: %s writes json or %s", a.output, cmd.CommandPath(), strings.ReplaceAll(extra, ",", " or "))
				}
				return usagef("-o %q: use table or json (csv: audit search; html, pdf: report hipaa; dot: inventory export)", a.output)
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.controller, "controller", "", "controller URL, https://host:port (env "+EnvController+")")
	pf.StringVar(&a.token, "token", "", "admin token (env "+EnvToken+"; prefer --token-file)")
	pf.StringVar(&a.tokenFile, "token-file", "", "file holding the admin token")
	pf.StringVar(&a.caCert, "ca-cert", "", "controller CA certificate file (env "+EnvCACert+")")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table or json (json prints the API's JSON); audit search also csv")

	root.AddCommand(
		a.loginCmd(),
		a.logoutCmd(),
		a.adminCmd(),
		a.tokenCmd(),
		a.segmentCmd(),
		a.appCmd(),
		a.userCmd(),
		a.groupCmd(),
		a.ruleCmd(),
		a.gatewayCmd(),
		a.deviceCmd(),
		a.sessionCmd(),
		a.auditCmd(),
		a.policyCmd(),
		a.reviewCmd(),
		a.idpCmd(),
		a.reportCmd(),
		a.inventoryCmd(),
		a.breakGlassCmd(),
	)
	for _, h := range rootHooks {
		h(root)
	}
	return root
}

// rootHooks change the command tree; only builds with -tags gendocs have
// one (gendocs.go: the hidden command that writes the man pages).
var rootHooks []func(*cobra.Command)

// run wraps a command body: it marks that argument parsing is over.
func (a *app) run(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.ran = true
		return f(cmd, args)
	}
}

// group makes a command that only holds subcommands.
func (a *app) group(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			var names []string
			for _, s := range cmd.Commands() {
				if s.IsAvailableCommand() {
					names = append(names, s.Name())
				}
			}
			return usagef("%s needs a subcommand: %s", cmd.CommandPath(), strings.Join(names, ", "))
		},
	}
	c.AddCommand(subs...)
	return c
}

// args checks the positional arguments.
func args(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			if len(names) == 0 {
				return usagef("%s takes no arguments", cmd.CommandPath())
			}
			return usagef("%s needs %s", cmd.CommandPath(), strings.Join(names, " "))
		}
		for i, v := range args {
			if v == "" {
				return usagef("%s: %s is empty", cmd.CommandPath(), names[i])
			}
		}
		return nil
	}
}

// do calls the API. In json mode it prints the response body and returns
// printed=true; otherwise it decodes the body into out for a table.
func (a *app) do(cmd *cobra.Command, method, path string, in, out any) (printed bool, err error) {
	c, err := a.getClient()
	if err != nil {
		return false, err
	}
	var raw json.RawMessage
	if err := c.Do(cmd.Context(), method, path, in, &raw); err != nil {
		return false, err
	}
	if a.output == "json" {
		if len(raw) == 0 {
			return true, nil // 204: nothing to print
		}
		var buf strings.Builder
		if err := jsonIndent(&buf, raw); err != nil {
			return true, err
		}
		fmt.Fprintln(a.io.Out, buf.String())
		return true, nil
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return false, fmt.Errorf("decode controller response: %w", err)
		}
	}
	return false, nil
}

func (a *app) getClient() (*adminapi.Client, error) {
	if a.client != nil {
		return a.client, nil
	}
	s, err := a.settings()
	if err != nil {
		return nil, err
	}
	c, err := adminapi.New(s.Controller, s.Token, []byte(s.CACertPEM))
	if err != nil {
		return nil, &usageError{msg: err.Error()}
	}
	// A change whose answer is lost (the controller restarted, the
	// network broke) is sent again with the same request ID: the
	// controller applies it once, so cordonctl can say what happened
	// instead of leaving the admin to guess.
	c.RetryFor = changeRetryFor
	c.OnRetry = func(attempt int, err error) {
		fmt.Fprintf(a.io.Err, "cordonctl: no answer from the controller (%v); sending the same request again to learn whether it applied (attempt %d)\n", err, attempt+1)
	}
	a.client = c
	return c, nil
}
