package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// savedConfig is the file cordonctl login writes (mode 0600): it holds an
// admin token, so it is treated like an SSH key.
type savedConfig struct {
	Controller string `json:"controller"`
	Token      string `json:"token"`
	CACertPEM  string `json:"ca_cert_pem"`
}

// maxFile bounds the token, CA and config files cordonctl reads.
const maxFile = 1 << 20

func (a *app) configPath() (string, error) {
	dir := a.io.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := a.io.Getenv("HOME")
		if home == "" {
			return "", errors.New("cannot find the config directory: set XDG_CONFIG_HOME or HOME")
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "cordon", "cordonctl.json"), nil
}

func (a *app) loadSaved() (*savedConfig, string, error) {
	path, err := a.configPath()
	if err != nil {
		return nil, "", err
	}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, path, nil
	}
	if err != nil {
		return nil, path, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, path, fmt.Errorf("%s holds an admin token but others can read it: run chmod 600 %s", path, path)
	}
	b, err := readSmall(path)
	if err != nil {
		return nil, path, err
	}
	var c savedConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, path, fmt.Errorf("%s: %w (delete it and run cordonctl login again)", path, err)
	}
	return &c, path, nil
}

func saveConfig(path string, c *savedConfig) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create config directory: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".cordonctl-*.json")
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxFile)
	}
	return b, nil
}

// settings resolves the connection settings: flags, then environment, then
// the saved file.
func (a *app) settings() (*savedConfig, error) { return a.connSettings(true) }

// connSettings is settings; with requireToken false a missing token is not
// an error (admin sign-in gets one).
func (a *app) connSettings(requireToken bool) (*savedConfig, error) {
	s := &savedConfig{Controller: a.controller}
	if s.Controller == "" {
		s.Controller = a.io.Getenv(EnvController)
	}
	switch {
	case a.token != "" && a.tokenFile != "":
		return nil, usagef("give --token or --token-file, not both")
	case a.token != "":
		s.Token = a.token
	case a.tokenFile != "":
		b, err := readSmall(a.tokenFile)
		if err != nil {
			return nil, usagef("--token-file: %v", err)
		}
		s.Token = strings.TrimSpace(string(b))
		if s.Token == "" {
			return nil, usagef("--token-file %s is empty", a.tokenFile)
		}
	default:
		s.Token = a.io.Getenv(EnvToken)
	}
	caPath := a.caCert
	if caPath == "" {
		caPath = a.io.Getenv(EnvCACert)
	}
	if caPath != "" {
		b, err := readSmall(caPath)
		if err != nil {
			return nil, usagef("CA certificate (--ca-cert or %s): %v", EnvCACert, err)
		}
		s.CACertPEM = string(b)
	}

	if s.Controller == "" || s.Token == "" || s.CACertPEM == "" {
		saved, _, err := a.loadSaved()
		if err != nil {
			return nil, err
		}
		if saved != nil {
			s.Controller = cmpOr(s.Controller, saved.Controller)
			s.Token = cmpOr(s.Token, saved.Token)
			s.CACertPEM = cmpOr(s.CACertPEM, saved.CACertPEM)
		}
	}
	switch {
	case s.Controller == "":
		return nil, usagef("no controller URL: set --controller or %s (e.g. https://controller.hospital.example:8443), or run cordonctl login", EnvController)
	case s.Token == "" && requireToken:
		return nil, usagef("no admin token: sign in with 'cordonctl login --admin NAME', or set --token-file, --token or %s", EnvToken)
	case s.CACertPEM == "":
		return nil, usagef("no controller CA certificate: set --ca-cert or %s to the controller's ca.pem, or run cordonctl login", EnvCACert)
	}
	return s, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (a *app) loginCmd() *cobra.Command {
	var (
		adminName, adminPWFile, adminTOTP string
		adminPWStdin                      bool
		idp, browser                      string
		deviceCode                        bool
	)
	login := &cobra.Command{
		Use:   "login [--admin NAME [--totp CODE] [--password-stdin | --password-file FILE] | --admin NAME --idp IDP [--device-code]]",
		Short: "Sign in as an admin, or check the connection settings; save them",
		Long: `login --admin NAME signs in to the controller as an admin account with its
password and authenticator code (asked for on the terminal unless given) and
saves the short-lived admin token it gets (8 hours by default), with
--controller and --ca-cert, mode 0600, to $XDG_CONFIG_HOME/cordon/cordonctl.json
(~/.config/cordon/cordonctl.json). Later commands use it until it expires;
then sign in again.

login --admin NAME --idp IDP signs an IdP admin account in through that
identity provider instead (with MFA there): it opens the browser (--browser
CMD, else $BROWSER or xdg-open; the URL is printed too) and catches the
redirect on a loopback port, or with --device-code shows a code to confirm on
another device. The token is saved the same way.

Without --admin, login checks --controller, --token-file (or --token) and
--ca-cert (or their environment variables) against the controller and saves
them the same way, so later commands need no flags: the way to use an
automation token or the first-start owner token. Flags and environment
variables still override the saved values.`,
		Example: `  cordonctl login --controller https://ctl.hospital.example:8443 --ca-cert ca.pem --admin alice
  cordonctl login --controller https://ctl.hospital.example:8443 --ca-cert ca.pem --admin bob --idp okta
  cordonctl login --controller https://ctl.hospital.example:8443 --ca-cert ca.pem --token-file /var/lib/cordon-controller/admin-token`,
		Args: args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			switch {
			case idp != "" && adminName == "":
				return usagef("--idp goes with --admin NAME here (devices sign in with 'cordon login --idp')")
			case idp == "" && (deviceCode || browser != ""):
				return usagef("--device-code and --browser go with --admin NAME --idp IDP")
			case idp != "" && (adminPWStdin || adminPWFile != "" || adminTOTP != ""):
				return usagef("--idp signs in at the identity provider: no --password-stdin, --password-file or --totp")
			case idp != "":
				return a.adminLoginOIDC(cmd, adminName, idp, deviceCode, browser)
			case adminName != "":
				return a.adminLogin(cmd, adminName, adminPWStdin, adminPWFile, adminTOTP)
			}
			if adminPWStdin || adminPWFile != "" || adminTOTP != "" {
				return usagef("--password-stdin, --password-file and --totp go with --admin NAME")
			}
			s, err := a.settings()
			if err != nil {
				return err
			}
			c, err := a.getClient()
			if err != nil {
				return err
			}
			who, err := c.WhoAmI(cmd.Context())
			if err != nil {
				return err
			}
			path, err := a.configPath()
			if err != nil {
				return err
			}
			if err := saveConfig(path, s); err != nil {
				return err
			}
			if a.output == "json" {
				return writeJSONValue(a.io.Out, map[string]string{"controller": s.Controller, "actor": who.Actor, "role": who.Role, "config": path})
			}
			until := "never expires: replace it with an expiring one"
			if !who.ExpiresAt.IsZero() {
				until = "expires " + fmtTime(who.ExpiresAt)
			}
			fmt.Fprintf(a.io.Out, "Logged in to %s as %s (role %s; token %s); settings saved to %s\n",
				s.Controller, sanitize(who.Actor), sanitize(who.Role), until, path)
			return nil
		}),
	}
	f := login.Flags()
	f.StringVar(&adminName, "admin", "", "sign in as this admin account (password and TOTP code, or --idp)")
	f.BoolVar(&adminPWStdin, "password-stdin", false, "with --admin: read the password from standard input (first line)")
	f.StringVar(&adminPWFile, "password-file", "", "with --admin: read the password from FILE (first line)")
	f.StringVar(&adminTOTP, "totp", "", "with --admin: the 6-digit authenticator code (asked for if omitted)")
	f.StringVar(&idp, "idp", "", "with --admin: sign in through this identity provider (an account created with --idp)")
	f.BoolVar(&deviceCode, "device-code", false, "with --idp: show a code to confirm on another device instead of opening a browser")
	f.StringVar(&browser, "browser", "", "with --idp: command that opens the sign-in URL (default $BROWSER, then xdg-open)")
	return login
}
