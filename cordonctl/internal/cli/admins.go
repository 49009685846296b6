package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/oidcflow"
)

// Administrators, their sign-in, admin tokens and users' recovery codes.

const rolesHelp = `Roles:
  owner          everything, including admins and admin tokens
  network-admin  policy, segments, apps, groups, rules, users, gateways; not admins
  auditor        reads configuration, the audit trail and reports; changes nothing
  helpdesk       reads; ends sessions, revokes devices, disables users; no policy`

func printAdmins(w io.Writer, xs []adminapi.Admin) error {
	t := newTable(w, "NAME", "ROLE", "SIGN-IN", "DISABLED", "CREATED")
	for _, x := range xs {
		signIn := "password+totp"
		switch {
		case x.IdP != "" && x.Subject != "":
			signIn = "idp:" + x.IdP + " (" + x.Subject + ")"
		case x.IdP != "":
			signIn = "idp:" + x.IdP + " (not yet bound)"
		}
		t.row(x.Name, x.Role, signIn, fmt.Sprint(x.Disabled), fmtTime(x.CreatedAt))
	}
	return t.flush()
}

func (a *app) adminCmd() *cobra.Command {
	var role, idp, subject string
	var pwStdin bool
	var pwFile string
	create := &cobra.Command{
		Use:   "create NAME --role ROLE (--password-stdin | --password-file FILE | --idp IDP [--subject SUB])",
		Short: "Create an admin account; prints its TOTP secret, shown only once",
		Long: `create makes an admin account with a password (at least 12 characters), a
role and a new TOTP second factor. The TOTP secret and its otpauth:// URI are
printed once, with a QR code: the admin enrols them in an authenticator app
now, then signs in with 'cordonctl login --admin NAME'. Sign-in tokens expire
(8 hours by default).

With --idp the account has no password and no TOTP: it signs in only through
that identity provider, with MFA there ('cordonctl login --admin NAME --idp
IDP'). It is bound to one IdP user: the one whose subject ("sub") is given
with --subject, or else the first to sign in whose IdP user name (the
provider's username claim) is NAME; after that only that subject.

` + rolesHelp,
		Example: `  printf '%s\n' "$PASSWORD" | cordonctl admin create alice --role owner --password-stdin
  cordonctl admin create helpdesk-1 --role helpdesk --password-file /run/secrets/hd1`,
		Args: args("NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			req := &adminapi.CreateAdminRequest{Name: args[0], Role: role, IdP: idp, Subject: subject}
			switch {
			case idp != "" && (pwStdin || pwFile != ""):
				return usagef("--idp and a password do not go together: an IdP admin has no local password")
			case idp == "" && subject != "":
				return usagef("--subject goes with --idp IDP")
			case idp == "":
				pw, err := a.readPassword(pwStdin, pwFile)
				if err != nil {
					return err
				}
				req.Password = pw
			}
			var out adminapi.CreateAdminResponse
			printed, err := a.do(cmd, http.MethodPost, "/v1/admins", req, &out)
			if err != nil || printed {
				return err
			}
			w := a.io.Out
			if out.IdP != "" {
				bound := "the first to sign in whose IdP user name is " + sanitize(out.Name)
				if out.Subject != "" {
					bound = "subject " + sanitize(out.Subject)
				}
				fmt.Fprintf(w, "Created admin %s with role %s, signing in through %s as %s (with MFA there):\n  cordonctl login --admin %s --idp %s\n",
					sanitize(out.Name), sanitize(out.Role), sanitize(out.IdP), bound, sanitize(out.Name), sanitize(out.IdP))
				return nil
			}
			fmt.Fprintf(w, "Created admin %s with role %s.\n\n", sanitize(out.Name), sanitize(out.Role))
			fmt.Fprintf(w, "TOTP secret: %s\n", out.TOTPSecret)
			fmt.Fprintf(w, "otpauth URI: %s\n\n", out.TOTPURI)
			if err := writeQR(w, out.TOTPURI); err != nil {
				return err
			}
			fmt.Fprintln(w)
			fmt.Fprintln(w, "WARNING: the TOTP secret is shown only this once. Enrol it in the admin's")
			fmt.Fprintln(w, "authenticator app now, then sign in with: cordonctl login --admin "+sanitize(out.Name))
			return nil
		}),
	}
	create.Flags().StringVar(&role, "role", "", "owner, network-admin, auditor, helpdesk or reviewer")
	create.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from standard input (first line)")
	create.Flags().StringVar(&pwFile, "password-file", "", "read the password from FILE (first line)")
	create.Flags().StringVar(&idp, "idp", "", "the account signs in through this identity provider (no password, no TOTP)")
	create.Flags().StringVar(&subject, "subject", "", "with --idp: bind the account to this IdP subject (\"sub\") now, not at the first sign-in")
	create.MarkFlagRequired("role")

	list := listCommand(a, "List admin accounts", "/v1/admins", printAdmins)
	toggle := func(verb, short string) *cobra.Command {
		return &cobra.Command{
			Use:   verb + " NAME",
			Short: short,
			Args:  args("NAME"),
			RunE: a.run(func(cmd *cobra.Command, args []string) error {
				return createAndPrint(a, cmd, "/v1/admins/"+esc(args[0])+"/"+verb, nil, printAdmins)
			}),
		}
	}
	return a.group("admin", "Manage administrator accounts (owner only)",
		create, list,
		toggle("disable", "Disable an admin: every token of the account stops working at once"),
		toggle("enable", "Re-enable a disabled admin"),
		a.deleteCmd("admin", "/v1/admins", "NAME"),
	)
}

// Admin tokens.

func (a *app) printAdminTokens(w io.Writer, xs []adminapi.AdminToken) error {
	now := a.io.Now()
	t := newTable(w, "ID", "NAME", "ROLE", "SCOPES", "ACCOUNT", "CREATED BY", "EXPIRES", "LAST USED", "STATE")
	for _, x := range xs {
		state := "valid"
		switch {
		case !x.RevokedAt.IsZero():
			state = "revoked " + fmtTime(x.RevokedAt)
		case !x.ExpiresAt.IsZero() && !now.Before(x.ExpiresAt):
			state = "expired"
		}
		expires := fmtTime(x.ExpiresAt)
		if x.ExpiresAt.IsZero() {
			expires = "never"
		}
		account := x.Account
		if account == "" {
			account = "-" // the first-start token, or one it issued: lives until expiry or revocation
		}
		t.row(x.ID, x.Name, x.Role, strings.Join(x.Scopes, ","), account, x.CreatedBy, expires, fmtTime(x.LastUsedAt), state)
	}
	return t.flush()
}

func (a *app) tokenCmd() *cobra.Command {
	var req adminapi.CreateAdminTokenRequest
	create := &cobra.Command{
		Use:   "create --name N --role ROLE --ttl D [--scope PERM]...",
		Short: "Issue an admin API token for automation (shown once; always expires)",
		Long: `create issues a standalone admin token, for scripts and integrations (a SIEM
pulling the audit trail, CI applying policy). It has a role, optionally
narrowed with --scope to some of the role's permissions, and expires after
--ttl (required, at most 90d). In table mode only the token is printed on
stdout, so scripts can capture it; details go to stderr.

Permissions: read, audit.read, access.revoke, users.write, policy.write,
gateways.write, admins.read, admins.write.

` + rolesHelp,
		Example: `  cordonctl token create --name siem --role auditor --scope audit.read --ttl 30d > siem.token
  cordonctl token create --name ci-policy --role network-admin --scope policy.write --scope read --ttl 12h`,
		Args: args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			var out adminapi.CreateAdminTokenResponse
			printed, err := a.do(cmd, http.MethodPost, "/v1/admin-tokens", &req, &out)
			if err != nil || printed {
				return err
			}
			fmt.Fprintln(a.io.Out, out.Token)
			fmt.Fprintf(a.io.Err, "Token %s (%s, role %s) expires %s; it is shown only once.\n",
				out.ID, sanitize(out.Name), sanitize(out.Role), fmtTime(out.ExpiresAt))
			return nil
		}),
	}
	f := create.Flags()
	f.StringVar(&req.Name, "name", "", "what the token is for; audit entries name it admin:NAME")
	f.StringVar(&req.Role, "role", "", "owner, network-admin, auditor, helpdesk or reviewer")
	f.StringArrayVar(&req.Scopes, "scope", nil, "narrow the role to this permission (repeatable)")
	f.StringVar(&req.TTL, "ttl", "", "lifetime, e.g. 12h or 30d (at most 90d)")
	for _, n := range []string{"name", "role", "ttl"} {
		create.MarkFlagRequired(n)
	}
	list := listCommand(a, "List admin tokens, sign-in and automation ones (never their secrets)", "/v1/admin-tokens", a.printAdminTokens)
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an admin token: it stops working at once",
		Args:  args("ID"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			printed, err := a.do(cmd, http.MethodDelete, "/v1/admin-tokens/"+esc(args[0]), nil, nil)
			if err != nil || printed {
				return err
			}
			fmt.Fprintf(a.io.Out, "Revoked admin token %s\n", sanitize(args[0]))
			return nil
		}),
	}
	return a.group("token", "Manage admin API tokens (owner only)", create, list, revoke)
}

// Recovery codes.

func (a *app) printRecoveryCodes(codes []string) {
	w := a.io.Out
	fmt.Fprintln(w, "One-time recovery codes (each replaces the authenticator code once, with")
	fmt.Fprintln(w, "'cordon login --recovery-code'):")
	for _, c := range codes {
		fmt.Fprintf(w, "  %s\n", sanitize(c))
	}
	fmt.Fprintln(w, "They are shown only this once: give them to the user to keep on paper, apart")
	fmt.Fprintln(w, "from the device.")
}

func (a *app) userRecoveryCmd() *cobra.Command {
	regen := &cobra.Command{
		Use:   "regenerate NAME",
		Short: "Make new one-time recovery codes for a user (every old code stops working); shown once",
		Args:  args("NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			var out adminapi.RecoveryCodesResponse
			printed, err := a.do(cmd, http.MethodPost, "/v1/users/"+esc(args[0])+"/recovery-codes", nil, &out)
			if err != nil || printed {
				return err
			}
			fmt.Fprintf(a.io.Out, "New recovery codes for %s; every earlier code is void.\n\n", sanitize(out.User))
			a.printRecoveryCodes(out.Codes)
			return nil
		}),
	}
	return a.group("recovery-codes", "Manage a user's one-time recovery codes", regen)
}

// Admin sign-in.

// adminLogin signs in as an admin account and saves the short-lived token
// with the connection settings (mode 0600), where every later command
// finds it.
func (a *app) adminLogin(cmd *cobra.Command, name string, pwStdin bool, pwFile, totp string) error {
	if a.token != "" || a.tokenFile != "" {
		return usagef("--admin signs in with a password and TOTP code: do not give --token or --token-file")
	}
	s, err := a.connSettings(false)
	if err != nil {
		return err
	}
	var pw string
	if !pwStdin && pwFile == "" {
		if pw, err = a.promptSecret("Password for admin " + name + ": "); err != nil {
			return err
		}
	} else if pw, err = a.readPassword(pwStdin, pwFile); err != nil {
		return err
	}
	if totp == "" {
		if totp, err = a.promptLine("Authenticator code: "); err != nil {
			return err
		}
	}
	c, err := adminapi.New(s.Controller, "", []byte(s.CACertPEM))
	if err != nil {
		return &usageError{msg: err.Error()}
	}
	defer c.Close()
	resp, err := c.AdminLogin(cmd.Context(), &adminapi.AdminLoginRequest{Name: name, Password: pw, TOTP: totp})
	if err != nil {
		return err
	}
	return a.savedAdminLogin(s, resp)
}

// adminLoginOIDC is 'cordonctl login --admin NAME --idp IDP': the
// controller runs the OIDC sign-in with the provider; this side opens the
// browser and catches the redirect (or shows a device code), as 'cordon
// login --idp' does (package oidcflow).
func (a *app) adminLoginOIDC(cmd *cobra.Command, name, idp string, deviceCode bool, browser string) error {
	if a.token != "" || a.tokenFile != "" {
		return usagef("--admin signs in through the identity provider: do not give --token or --token-file")
	}
	s, err := a.connSettings(false)
	if err != nil {
		return err
	}
	c, err := adminapi.New(s.Controller, "", []byte(s.CACertPEM))
	if err != nil {
		return &usageError{msg: err.Error()}
	}
	defer c.Close()
	flow := oidcflow.Config{IdP: idp, Out: a.io.Err, Again: "cordonctl login --admin " + name + " --idp " + idp}
	if browser != "" {
		argv := strings.Fields(browser)
		flow.Browser = func(ctx context.Context, url string) error {
			x := exec.CommandContext(ctx, argv[0], append(argv[1:], url)...)
			x.Stdout, x.Stderr = a.io.Err, a.io.Err
			return x.Run()
		}
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 16*time.Minute)
	defer cancel()
	var resp adminapi.AdminLoginResponse
	finish := func(ctx context.Context, loginID, code, verifier string) error {
		return c.Do(ctx, http.MethodPost, "/v1/admin/login/oidc", adminapi.AdminOIDCLoginRequest{
			Name: name, LoginID: loginID, Code: code, CodeVerifier: verifier,
		}, &resp)
	}
	if deviceCode {
		err = oidcflow.Device(ctx, flow,
			func(ctx context.Context) (controlproto.OIDCDeviceResponse, error) {
				var ds controlproto.OIDCDeviceResponse
				err := c.Do(ctx, http.MethodPost, "/v1/admin/login/oidc/device", controlproto.OIDCDeviceRequest{IdP: idp}, &ds)
				return ds, err
			},
			func(ctx context.Context, loginID string) error { return finish(ctx, loginID, "", "") })
	} else {
		err = oidcflow.Code(ctx, oidcflow.WithRedirect(ctx, c, flow),
			func(ctx context.Context, redirect, challenge string) (controlproto.OIDCStartResponse, error) {
				var st controlproto.OIDCStartResponse
				err := c.Do(ctx, http.MethodPost, "/v1/admin/login/oidc/start", controlproto.OIDCStartRequest{
					IdP: idp, RedirectURI: redirect, CodeChallenge: challenge,
				}, &st)
				return st, err
			}, finish)
	}
	if err != nil {
		return fmt.Errorf("sign in with %s: %w", idp, err)
	}
	return a.savedAdminLogin(s, &resp)
}

// savedAdminLogin saves the token of an admin sign-in with the connection
// settings and says so.
func (a *app) savedAdminLogin(s *savedConfig, resp *adminapi.AdminLoginResponse) error {
	path, err := a.configPath()
	if err != nil {
		return err
	}
	s.Token = resp.Token
	if err := saveConfig(path, s); err != nil {
		return err
	}
	if a.io.Getenv(EnvToken) != "" {
		fmt.Fprintf(a.io.Err, "Note: %s is set and overrides the saved token; unset it to use this sign-in.\n", EnvToken)
	}
	if a.output == "json" {
		return writeJSONValue(a.io.Out, map[string]any{
			"controller": s.Controller, "actor": "admin:" + resp.Name, "role": resp.Role,
			"expires_at": resp.ExpiresAt, "token_id": resp.TokenID, "config": path,
		})
	}
	fmt.Fprintf(a.io.Out, "Signed in to %s as admin %s (role %s) until %s; token saved to %s\n",
		s.Controller, sanitize(resp.Name), sanitize(resp.Role), fmtTime(resp.ExpiresAt), path)
	return nil
}

func (a *app) logoutCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Revoke the admin token in use and remove it from the saved settings",
		Args:  args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			c, err := a.getClient()
			if err != nil {
				return err
			}
			if err := c.AdminLogout(cmd.Context()); err != nil && !adminapi.IsCode(err, adminapi.CodeUnauthorized) {
				return err
			}
			saved, path, err := a.loadSaved()
			if err != nil {
				return err
			}
			if saved != nil && saved.Token != "" {
				saved.Token = ""
				if err := saveConfig(path, saved); err != nil {
					return err
				}
			}
			fmt.Fprintln(a.io.Out, "Signed out; the token no longer works.")
			return nil
		}),
	}
}

// terminal returns standard input as a terminal, if it is one.
func (a *app) terminal() (*os.File, bool) {
	f, ok := a.io.In.(*os.File)
	return f, ok && term.IsTerminal(int(f.Fd()))
}

func (a *app) promptSecret(label string) (string, error) {
	f, ok := a.terminal()
	if !ok {
		return "", usagef("no terminal to ask for the password: give --password-stdin or --password-file")
	}
	fmt.Fprint(a.io.Err, label)
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(a.io.Err)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if len(b) == 0 {
		return "", usagef("the password is empty")
	}
	return string(b), nil
}

func (a *app) promptLine(label string) (string, error) {
	if _, ok := a.terminal(); !ok {
		return "", usagef("no terminal to ask for the authenticator code: give --totp CODE")
	}
	fmt.Fprint(a.io.Err, label)
	line, err := bufio.NewReader(a.io.In).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read code: %w", err)
	}
	return strings.TrimSpace(line), nil
}
