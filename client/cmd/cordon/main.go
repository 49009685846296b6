// Command cordon is the clinician's Cordon client: sign in, bring the tunnel
// up, see what is reachable, bring it down.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cordonhq/cordon/internal/buildinfo"
	"github.com/cordonhq/cordon/internal/logsetup"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cordonhq/cordon/client/internal/client"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// defaultStateDir is where the user running cordon keeps its state:
// /var/lib/cordon for root, else $XDG_STATE_HOME/cordon, else
// ~/.local/state/cordon (the XDG default).
func defaultStateDir() string {
	home, _ := os.UserHomeDir()
	return stateDirFor(os.Geteuid(), os.Getenv("XDG_STATE_HOME"), home)
}

func stateDirFor(euid int, xdgStateHome, home string) string {
	switch {
	case euid == 0:
		return "/var/lib/cordon"
	case xdgStateHome != "":
		return filepath.Join(xdgStateHome, "cordon")
	case home != "":
		return filepath.Join(home, ".local", "state", "cordon")
	}
	return ".cordon"
}

// manStateDir is the --state-dir default the manual pages show: they are
// written at build time, where defaultStateDir would be the builder's.
const manStateDir = "$XDG_STATE_HOME/cordon, else ~/.local/state/cordon; /var/lib/cordon for root"

// forManPages makes root's help show no value of the machine it runs on,
// for manual pages written at build time (gendocs.go).
func forManPages(root *cobra.Command) {
	root.PersistentFlags().Lookup("state-dir").DefValue = manStateDir
}

// rootHooks change the command tree; only builds with -tags gendocs have
// one (gendocs.go: the hidden command that writes the man pages).
var rootHooks []func(*cobra.Command)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run is the command with its arguments; it returns the exit status
// (exitcodes.go).
func run(args []string, stdout, stderr io.Writer) int {
	var stateDir, logLevel, logFormat string
	var ran bool // a command's own code started
	root := &cobra.Command{
		Use:           "cordon",
		Short:         "Cordon client: reach the hospital apps you are entitled to, through an encrypted tunnel",
		Long:          "Cordon client: reach the hospital apps you are entitled to, through an encrypted tunnel.\n\n" + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildinfo.Version(),
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&stateDir, "state-dir", envOr("CORDON_STATE_DIR", defaultStateDir()), "where this device keeps its keys and enrollment [$CORDON_STATE_DIR]")
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	root.PersistentFlags().StringVar(&logFormat, "log-format", "text", "log format: "+logsetup.Formats)
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if _, err := logsetup.New(io.Discard, logLevel, logFormat); err != nil {
			return err
		}
		ran = true
		return nil
	}
	logger := func() *slog.Logger {
		log, err := logsetup.New(os.Stderr, logLevel, logFormat)
		if err != nil { // refused in PersistentPreRunE already
			return slog.New(slog.NewTextHandler(os.Stderr, nil))
		}
		return log
	}

	var lc client.LoginConfig
	var passwordStdin bool
	var passwordFile string
	var idp, browser string
	var deviceCode bool
	login := &cobra.Command{
		Use:   "login",
		Short: "Sign in with your user name, password and authenticator code, and enroll this device",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if idp != "" {
				return loginOIDC(cmd, lc, idp, deviceCode, browser, stateDir)
			}
			pw, err := readPassword(passwordStdin, passwordFile)
			if err != nil {
				return err
			}
			lc.Password, lc.StateDir = pw, stateDir
			if lc.TOTP != "" && lc.RecoveryCode != "" {
				return errors.New("give --totp or --recovery-code, not both")
			}
			if err := checkBreakGlass(&lc); err != nil {
				return err
			}
			if lc.TOTP == "" && lc.RecoveryCode == "" {
				if lc.TOTP, err = prompt("Authenticator code: "); err != nil {
					return err
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			e, err := client.Login(ctx, lc)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Signed in as %s. Device %s enrolled with overlay address %s.\nRun 'cordon up' to connect.\n", e.User, e.ID, e.OverlayAddr)
			if lc.BreakGlass {
				fmt.Fprintln(cmd.OutOrStdout(), "BREAK-GLASS emergency access: your IT security team was alerted; the session reaches only emergency apps, ends at its time limit and is never extended.")
			}
			return nil
		},
	}
	login.Flags().StringVar(&lc.Controller, "controller", os.Getenv("CORDON_CONTROLLER"), "controller URL, https://HOST:PORT (default: the one this device last signed in with) [$CORDON_CONTROLLER]")
	login.Flags().StringVar(&lc.CACert, "ca-cert", os.Getenv("CORDON_CA_CERT"), "controller CA certificate your IT department gave you (default: the one this device pinned when it last signed in) [$CORDON_CA_CERT]")
	login.Flags().StringVar(&lc.User, "user", "", "your user name (default: the user who last signed in on this device)")
	login.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from standard input")
	login.Flags().StringVar(&passwordFile, "password-file", "", "read the password from a file")
	login.Flags().StringVar(&lc.TOTP, "totp", "", "the 6-digit code from your authenticator app (asked for if omitted)")
	login.Flags().StringVar(&lc.RecoveryCode, "recovery-code", "", "instead of --totp, when your authenticator is lost: one of the one-time recovery codes you were given (each works once)")
	login.Flags().BoolVar(&lc.BreakGlass, "break-glass", false, "emergency access with a break-glass account from the sealed envelope, when normal sign-in is impossible: needs --justification and one of the account's one-time codes (--recovery-code, asked for if omitted); alerts your IT security team at once, and two admins review it afterwards")
	login.Flags().StringVar(&lc.Justification, "justification", "", "with --break-glass: why you need emergency access, in words (recorded, alerted and reviewed)")
	login.Flags().StringVar(&idp, "idp", "", "sign in through this identity provider (your organisation's single sign-on) instead of a password; 'cordon login --idp list' shows them")
	login.Flags().BoolVar(&deviceCode, "device-code", false, "with --idp: show a code to confirm on another device instead of opening a browser (headless machines)")
	login.Flags().StringVar(&browser, "browser", "", "with --idp: command that opens the sign-in URL (default $BROWSER, then xdg-open)")

	uc := client.UpConfig{}
	var upUI bool
	up := &cobra.Command{
		Use:   "up",
		Short: "Bring the tunnel up and keep it up (runs in the foreground until 'cordon down' or Ctrl-C)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			uc.StateDir, uc.Version, uc.Logger = stateDir, buildinfo.Version(), logger()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if upUI { // ui.go
				srv, err := startUI(stateDir, "127.0.0.1:0", cmd.OutOrStdout(), uc.Logger)
				if err != nil {
					return err
				}
				uiCtx, stopUI := context.WithCancel(ctx)
				defer serveUI(uiCtx, srv, uc.Logger)()
				defer stopUI()
			}
			return client.Up(ctx, uc)
		},
	}
	up.Flags().StringVar(&uc.Mode, "mode", client.ModeTUN, "tun (kernel TUN, needs CAP_NET_ADMIN) or userspace (local proxies, no privileges)")
	up.Flags().StringVar(&uc.Interface, "interface", "cordon0", "tunnel interface name")
	up.Flags().StringVar(&uc.SOCKSAddr, "socks5", "127.0.0.1:1080", "userspace mode: SOCKS5 proxy address (empty disables)")
	up.Flags().StringVar(&uc.HTTPAddr, "http-proxy", "127.0.0.1:8080", "userspace mode: HTTP proxy address (empty disables)")
	up.Flags().StringVar(&uc.DNS, "dns", "auto", "tun mode: how the system reaches the DNS stub for internal names: auto (systemd-resolved if it runs, else resolv-conf), resolved, resolv-conf (manage /etc/resolv.conf, restored on down) or none (serve the stub on the overlay address, change nothing)")
	up.Flags().StringVar(&uc.ResolvConf, "resolv-conf", "/etc/resolv.conf", "tun mode, --dns resolv-conf: the file to manage")
	up.Flags().StringVar(&uc.PostureFile, "posture-file", "", "tests and diagnostics: a JSON posture report whose fields override the collected ones, re-read at every collection")
	up.Flags().MarkHidden("posture-file")
	up.Flags().BoolVar(&upUI, "ui", false, "also serve the status page, as 'cordon ui' does")
	up.Flags().StringVar(&uc.MetricsListen, "metrics-listen", "", "serve Prometheus metrics (/metrics) and health (/healthz, /readyz) on this loopback HOST:PORT, e.g. 127.0.0.1:9469 (default off)")

	down := &cobra.Command{
		Use:   "down",
		Short: "Bring the tunnel down",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := client.Down(stateDir); err != nil {
				return err
			}
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				if _, err := client.GetStatus(stateDir); errors.Is(err, client.ErrNotUp) {
					fmt.Fprintln(cmd.OutOrStdout(), "Tunnel is down.")
					return nil
				}
				time.Sleep(100 * time.Millisecond)
			}
			return errors.New("the tunnel did not stop within 10s")
		},
	}

	var output string
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the tunnel, the gateways and the apps you can reach",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := client.GetStatus(stateDir)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			printStatus(cmd.OutOrStdout(), s, time.Now())
			return nil
		},
	}
	status.Flags().StringVarP(&output, "output", "o", "table", "table or json")

	logout := &cobra.Command{
		Use:   "logout",
		Short: "Sign out: end this device's session now (every gateway drops it; 'cordon login' to return)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			active, err := client.Logout(ctx, stateDir)
			if err != nil {
				return err
			}
			if active {
				fmt.Fprintln(cmd.OutOrStdout(), "Signed out: this device reaches no app until 'cordon login'.")
			} else {
				fmt.Fprintln(cmd.OutOrStdout(), "No active session: already signed out.")
			}
			return nil
		},
	}

	root.AddCommand(login, logout, up, down, status, uiCommand(&stateDir, logger))
	for _, h := range rootHooks {
		h(root)
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintf(stderr, "cordon: %v\n", err)
		return exitCode(err, ran)
	}
	return exitOK
}

// checkBreakGlass checks the break-glass flags of 'cordon login' and asks
// for the one-time code if it was not given.
func checkBreakGlass(lc *client.LoginConfig) error {
	if !lc.BreakGlass {
		if lc.Justification != "" {
			return errors.New("--justification is only for --break-glass")
		}
		return nil
	}
	if strings.TrimSpace(lc.Justification) == "" {
		return errors.New("--break-glass needs --justification \"...\": say in words why you need emergency access")
	}
	if len(lc.Justification) > controlproto.MaxJustification {
		return fmt.Errorf("--justification: at most %d bytes (got %d)", controlproto.MaxJustification, len(lc.Justification))
	}
	if lc.TOTP != "" {
		return errors.New("--break-glass takes one of the account's one-time codes (--recovery-code), not --totp")
	}
	if lc.RecoveryCode == "" {
		var err error
		if lc.RecoveryCode, err = prompt("One-time code from the sealed envelope: "); err != nil {
			return err
		}
	}
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func readPassword(fromStdin bool, file string) (string, error) {
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--password-file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case fromStdin:
		line, err := bufio.NewReader(io.LimitReader(os.Stdin, 4096)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read password from stdin: %w", err)
		}
		return strings.TrimRight(line, "\r\n"), nil
	case term.IsTerminal(int(os.Stdin.Fd())):
		fmt.Fprint(os.Stderr, "Password: ")
		b, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(os.Stderr)
		return string(b), err
	}
	return "", errors.New("no password given: use --password-stdin or --password-file (or run in a terminal)")
}

func prompt(label string) (string, error) {
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return "", errors.New("no authenticator code given: pass --totp CODE")
	}
	fmt.Fprint(os.Stderr, label)
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	return strings.TrimSpace(line), err
}

// loginOIDC is 'cordon login --idp NAME'.
func loginOIDC(cmd *cobra.Command, lc client.LoginConfig, idp string, deviceCode bool, browser, stateDir string) error {
	out := cmd.OutOrStdout()
	if idp == "list" {
		ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
		defer cancel()
		provs, err := client.OIDCProviders(ctx, stateDir, lc.Controller, lc.CACert)
		if err != nil {
			return err
		}
		if len(provs) == 0 {
			fmt.Fprintln(out, "This controller offers no identity provider: sign in with --user.")
		}
		for _, p := range provs {
			fmt.Fprintf(out, "%-16s %s (%s)\n", p.Name, p.DisplayName, p.Issuer)
		}
		return nil
	}
	cfg := client.OIDCLoginConfig{
		StateDir: stateDir, Controller: lc.Controller, CACert: lc.CACert, IdP: idp, DeviceCode: deviceCode, Out: out,
	}
	if browser != "" {
		argv := strings.Fields(browser)
		cfg.Browser = func(ctx context.Context, url string) error {
			c := exec.CommandContext(ctx, argv[0], append(argv[1:], url)...)
			c.Stdout, c.Stderr = os.Stderr, os.Stderr
			return c.Run()
		}
	}
	var noMFA *controlproto.NoMFA
	cfg.Answer = func(r *controlproto.EnrollResponse) { noMFA = r.NoMFA }
	ctx, cancel := context.WithTimeout(cmd.Context(), 16*time.Minute)
	defer cancel()
	e, err := client.LoginOIDC(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Signed in as %s. Device %s enrolled with overlay address %s.\nRun 'cordon up' to connect.\n", e.User, e.ID, e.OverlayAddr)
	if noMFA != nil {
		fmt.Fprintf(out, "\nWithout a second factor, these apps stay closed: %s.\n%s.\n", strings.Join(noMFA.Apps, ", "), capitalize(noMFA.How))
	}
	return nil
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
