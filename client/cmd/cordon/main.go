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
	"text/tabwriter"
	"time"

	"github.com/cordonhq/cordon/internal/buildinfo"
	"github.com/cordonhq/cordon/internal/logsetup"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cordonhq/cordon/client/internal/client"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

func defaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/cordon"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "cordon")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "cordon")
	}
	return ".cordon"
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
	login.Flags().StringVar(&idp, "idp", "", "sign in through this identity provider (your organisation's single sign-on) instead of a password; 'cordon login --idp list' shows them")
	login.Flags().BoolVar(&deviceCode, "device-code", false, "with --idp: show a code to confirm on another device instead of opening a browser (headless machines)")
	login.Flags().StringVar(&browser, "browser", "", "with --idp: command that opens the sign-in URL (default $BROWSER, then xdg-open)")

	uc := client.UpConfig{}
	up := &cobra.Command{
		Use:   "up",
		Short: "Bring the tunnel up and keep it up (runs in the foreground until 'cordon down' or Ctrl-C)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			uc.StateDir, uc.Version, uc.Logger = stateDir, buildinfo.Version(), logger()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
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
			printStatus(cmd.OutOrStdout(), s)
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

	root.AddCommand(login, logout, up, down, status)
	for _, h := range rootHooks {
		h(root)
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintf(stderr, "cordon: %v\n", err)
		return exitCode(err, ran)
	}
	return exitOK
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func printStatus(w io.Writer, s *client.Status) {
	conn := "connected"
	if !s.ControlConnected {
		conn = "reconnecting (keeping the last map)"
	}
	fmt.Fprintf(w, "User:        %s\nDevice:      %s (%s)\nMode:        %s\nController:  %s, %s\n",
		s.User, s.DeviceID, s.OverlayAddr, s.Mode, s.Controller, conn)
	if s.SOCKS5 != "" || s.HTTPProxy != "" {
		fmt.Fprintf(w, "Proxies:     socks5://%s  http://%s\n", s.SOCKS5, s.HTTPProxy)
	}
	if printSession(w, s.Session) {
		return
	}
	if len(s.Gateways) == 0 {
		fmt.Fprintln(w, "\nNo apps: you are not entitled to any app yet. Ask your administrator.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nAPP\tNAME\tADDRESS\tPORTS\tGATEWAY\tPATH\tHANDSHAKE")
	for _, g := range s.Gateways {
		hs := "never"
		if g.LastHandshake != nil {
			hs = time.Since(*g.LastHandshake).Round(time.Second).String() + " ago"
		}
		for _, a := range g.Apps {
			ports := make([]string, len(a.Ports))
			for i, p := range a.Ports {
				ports[i] = p.String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s/%s\t%s\t%s\t%s\n", a.Name, a.DNSName, a.Addr, a.Proto, strings.Join(ports, ","), g.ID, g.Path, hs)
		}
	}
	tw.Flush()
}

// printSession prints the session lines of 'cordon status'; it reports
// whether the session is over (then no app is reachable and none is
// listed).
func printSession(w io.Writer, ss *controlproto.SessionInfo) bool {
	if ss == nil {
		return false
	}
	if ss.State != controlproto.SessionActive {
		fmt.Fprintf(w, "Session:     %s\n", strings.ToUpper(ss.State[:1])+ss.State[1:]+": "+ss.Message)
		return true
	}
	line := "active since " + ss.StartedAt.Local().Format("15:04")
	if !ss.ExpiresAt.IsZero() {
		line += ", ends by " + ss.ExpiresAt.Local().Format("Mon 15:04")
	}
	if ss.IdleLimit > 0 {
		line += "; signed out after " + ss.IdleLimit.String() + " without activity"
	}
	fmt.Fprintf(w, "Session:     %s\n", line)
	if n := ss.NoMFA; n != nil {
		fmt.Fprintf(w, "MFA:         none in this session; closed until you have one: %s\n", strings.Join(n.Apps, ", "))
		fmt.Fprintf(w, "             %s\n", n.How)
	}
	for _, su := range ss.StepUp {
		fmt.Fprintf(w, "Verify:      %s needs a fresh sign-in with your second factor: run 'cordon login' (the tunnel stays up)\n", su.App)
	}
	printPosture(w, ss.Posture)
	return false
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
