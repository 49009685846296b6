package oidc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cordonhq/cordon/pkg/secretfile"
	"github.com/cordonhq/cordon/pkg/yamlsyntax"
	"gopkg.in/yaml.v3"
)

// MaxConfigSize bounds the configuration file.
const MaxConfigSize = 1 << 20

// Defaults.
const (
	DefaultRefreshInterval = 5 * time.Minute
	// DefaultUnreachableLimit is how long sessions outlive their last
	// successful check at the IdP while it cannot be reached: well under
	// the sessions' absolute limit (12h by default).
	DefaultUnreachableLimit = time.Hour
	DefaultClockSkew        = 2 * time.Minute
	DefaultGroupsClaim      = "groups"
	DefaultUsernameClaim    = "preferred_username"
)

// DefaultScopes are requested when a provider names none. offline_access
// asks for the refresh token deprovisioning depends on.
var DefaultScopes = []string{"openid", "profile", "email", "offline_access"}

// DefaultMFAAMR are the RFC 8176 authentication method references that
// alone prove MFA. Besides them, an amr naming methods of two different
// factor kinds (something known, held, or inherent: "pwd" and "otp", say)
// proves it too; a single method never does by default ("otp" alone is a
// passwordless e-mail or SMS code at some providers).
var DefaultMFAAMR = []string{"mfa"}

// File is the --oidc-config file: the identity providers users may sign
// in with, several at once.
type File struct {
	// RefreshInterval is how often the controller refreshes each linked
	// identity's tokens at its provider (default 5m): a user the provider
	// no longer accepts loses every session within one interval.
	RefreshInterval Duration `yaml:"refresh_interval"`
	// UnreachableLimit bounds how long a user's sessions stay up while
	// their provider cannot be reached (network errors, timeouts, 5xx),
	// counted from the last successful sign-in or refresh (default 1h;
	// at least refresh_interval). Past it the sessions end, audited as
	// auth.idp.unreachable: an IdP that stays down does not extend
	// access for ever. A refusal by the provider ends them at once.
	UnreachableLimit Duration         `yaml:"unreachable_limit"`
	Providers        []ProviderConfig `yaml:"providers"`
}

// ProviderConfig is one identity provider.
type ProviderConfig struct {
	// Name identifies the provider in `cordon login --idp NAME`, in
	// sessions ("oidc:NAME") and in the audit trail. Never rename one:
	// users are linked by (name, subject).
	Name        string `yaml:"name"`
	DisplayName string `yaml:"display_name"`
	Issuer      string `yaml:"issuer"`
	ClientID    string `yaml:"client_id"`
	// ClientSecretFile holds the client secret (mode 0600 or stricter);
	// empty for a public client (PKCE only).
	ClientSecretFile string   `yaml:"client_secret_file"`
	Scopes           []string `yaml:"scopes"`
	// GroupsClaim is the ID token claim carrying the user's groups
	// (default "groups"); a dotted path reaches into objects
	// ("realm_access.roles" for Keycloak realm roles).
	GroupsClaim string `yaml:"groups_claim"`
	// PolicyClaim is the claim name the policy file's IdP references use
	// for this provider's groups (default: GroupsClaim). Give each
	// provider its own when several assert groups of the same names.
	PolicyClaim string `yaml:"policy_claim"`
	// UsernameClaim names the claim the Cordon user name is made from at
	// the first sign-in (default preferred_username, then email); "sub"
	// uses the subject.
	UsernameClaim string `yaml:"username_claim"`
	// UsernamePrefix is put before every user name from this provider
	// (e.g. "okta-").
	UsernamePrefix string `yaml:"username_prefix"`
	// UsernameDomains are the hospital's own e-mail domains: a user name
	// claim "alice@DOMAIN" with one of them becomes "alice". Any other
	// domain stays in the name ("alice@affiliate.org" becomes
	// "alice-affiliate-org"), so a guest or partner account can never take
	// the name of one of the hospital's own users.
	UsernameDomains []string `yaml:"username_domains"`
	// MFAAMRValues: an ID token whose amr claim holds one of these proves
	// MFA (default DefaultMFAAMR). MFAACRValues: or whose acr is one of
	// these.
	MFAAMRValues []string `yaml:"mfa_amr_values"`
	MFAACRValues []string `yaml:"mfa_acr_values"`
	// DeviceFlow allows the device authorization grant (RFC 8628) for
	// headless machines.
	DeviceFlow bool `yaml:"device_flow"`
	// ClockSkew tolerated between the controller and the provider when
	// checking token times (default 2m).
	ClockSkew Duration `yaml:"clock_skew"`
	// CAFile is a PEM bundle to trust for the provider's HTTPS (an
	// on-premises Keycloak with an internal CA); default: system roots.
	CAFile string `yaml:"ca_file"`
	// AllowHTTP permits an http:// issuer. Testing only.
	AllowHTTP bool `yaml:"allow_http"`
	// RedirectHost and RedirectPort fix the loopback redirect URI the
	// client listens on, http://HOST:PORT/callback, for IdPs that match
	// redirect URIs exactly (Dex, some Entra and Okta configurations):
	// register exactly that URI at the IdP. RedirectHost is 127.0.0.1
	// (default), localhost or [::1]; RedirectPort 0 (default) lets the
	// client pick a free port, which only IdPs following RFC 8252 §7.3
	// (any port on loopback) accept.
	RedirectHost string `yaml:"redirect_host"`
	RedirectPort Port   `yaml:"redirect_port"`

	secret string
}

// Duration is a time.Duration written as "5m" in the file.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v <= 0 {
		return fmt.Errorf("line %d: %q is not a positive duration (e.g. 5m, 30s)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// Port is a TCP port written as a number in the file.
type Port uint16

// UnmarshalYAML implements yaml.Unmarshaler.
func (p *Port) UnmarshalYAML(n *yaml.Node) error {
	v, err := strconv.ParseUint(n.Value, 10, 16)
	if err != nil {
		return fmt.Errorf("line %d: redirect_port: %q is not a port number (1024-65535, or 0 for any)", n.Line, n.Value)
	}
	*p = Port(v)
	return nil
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// LoadFile reads and checks the file at path (YAML or JSON), rejecting
// unknown fields, and reads the client secrets.
func LoadFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("oidc config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("oidc config %s: %w", path, err)
	}
	if len(b) > MaxConfigSize {
		return nil, fmt.Errorf("oidc config %s: larger than %d bytes", path, MaxConfigSize)
	}
	cfg, err := ParseFile(b)
	if err != nil {
		return nil, fmt.Errorf("oidc config %s: %w", path, err)
	}
	for i := range cfg.Providers {
		p := &cfg.Providers[i]
		if p.ClientSecretFile == "" {
			continue
		}
		s, err := readSecret(p.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("oidc config %s: provider %q: %w", path, p.Name, err)
		}
		p.secret = s
	}
	return cfg, nil
}

// ParseFile parses and checks a configuration (secrets are not read).
func ParseFile(b []byte) (*File, error) {
	var cfg File
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty file: list at least one provider under providers:")
		}
		return nil, yamlsyntax.Wrap(err, b)
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func (c *File) check() error {
	if c.RefreshInterval == 0 {
		c.RefreshInterval = Duration(DefaultRefreshInterval)
	}
	if time.Duration(c.RefreshInterval) < time.Second {
		return errors.New("refresh_interval: at least 1s")
	}
	if c.UnreachableLimit == 0 {
		c.UnreachableLimit = Duration(max(DefaultUnreachableLimit, time.Duration(c.RefreshInterval)))
	}
	if c.UnreachableLimit < c.RefreshInterval {
		return fmt.Errorf("unreachable_limit: %s is shorter than refresh_interval %s: one missed refresh would end every session; set it to at least refresh_interval (default 1h)",
			time.Duration(c.UnreachableLimit), time.Duration(c.RefreshInterval))
	}
	if len(c.Providers) == 0 {
		return errors.New("providers: list at least one identity provider")
	}
	names := map[string]bool{}
	claims := map[string]string{}
	for i := range c.Providers {
		p := &c.Providers[i]
		if err := p.check(); err != nil {
			return fmt.Errorf("providers[%d] (%s): %w", i, p.Name, err)
		}
		if names[p.Name] {
			return fmt.Errorf("providers[%d]: name %q used twice", i, p.Name)
		}
		names[p.Name] = true
		if other, ok := claims[p.PolicyClaim]; ok {
			return fmt.Errorf("providers[%d] (%s): policy_claim %q is also %s's: set a distinct policy_claim for each provider, so one provider cannot assert another's groups", i, p.Name, p.PolicyClaim, other)
		}
		claims[p.PolicyClaim] = p.Name
	}
	return nil
}

func (p *ProviderConfig) check() error {
	if !nameRE.MatchString(p.Name) {
		return fmt.Errorf("name: %q: use 1-32 lower-case letters, digits and '-'", p.Name)
	}
	u, err := url.Parse(p.Issuer)
	switch {
	case p.Issuer == "" || err != nil || u.Host == "":
		return fmt.Errorf("issuer: %q is not a URL (e.g. https://login.microsoftonline.com/TENANT/v2.0)", p.Issuer)
	case u.Scheme == "http" && !p.AllowHTTP:
		return fmt.Errorf("issuer: %q is not https (allow_http is for tests only)", p.Issuer)
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("issuer: %q is not https", p.Issuer)
	}
	if p.ClientID == "" {
		return errors.New("client_id: required")
	}
	if len(p.Scopes) == 0 {
		p.Scopes = slices.Clone(DefaultScopes)
	}
	if !slices.Contains(p.Scopes, "openid") {
		return errors.New("scopes: must include openid")
	}
	if p.GroupsClaim == "" {
		p.GroupsClaim = DefaultGroupsClaim
	}
	if p.PolicyClaim == "" {
		p.PolicyClaim = p.GroupsClaim
	}
	if p.UsernameClaim == "" {
		p.UsernameClaim = DefaultUsernameClaim
	}
	if p.UsernamePrefix != "" && !regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,15}$`).MatchString(p.UsernamePrefix) {
		return fmt.Errorf("username_prefix: %q: use up to 16 lower-case letters, digits and '-'", p.UsernamePrefix)
	}
	if p.MFAAMRValues == nil {
		p.MFAAMRValues = slices.Clone(DefaultMFAAMR)
	}
	for i, d := range p.UsernameDomains {
		d = strings.ToLower(strings.TrimSpace(d))
		if d == "" || strings.ContainsAny(d, "@ /") || !strings.Contains(d, ".") {
			return fmt.Errorf("username_domains: %q: want a domain such as hospital.example", p.UsernameDomains[i])
		}
		p.UsernameDomains[i] = d
	}
	if p.ClockSkew == 0 {
		p.ClockSkew = Duration(DefaultClockSkew)
	}
	if time.Duration(p.ClockSkew) > 10*time.Minute {
		return errors.New("clock_skew: at most 10m")
	}
	if p.DisplayName == "" {
		p.DisplayName = p.Name
	}
	switch p.RedirectHost {
	case "":
		p.RedirectHost = DefaultRedirectHost
	case "127.0.0.1", "localhost", "[::1]":
	default:
		return fmt.Errorf("redirect_host: %q: use 127.0.0.1, localhost or [::1] (a loopback address the user's browser reaches on their own machine)", p.RedirectHost)
	}
	if p.RedirectPort != 0 && p.RedirectPort < 1024 {
		return fmt.Errorf("redirect_port: %d: use 1024-65535 (an unprivileged port the client can listen on), or 0 for any free port", p.RedirectPort)
	}
	return nil
}

// DefaultRedirectHost is the loopback host of the redirect URI.
const DefaultRedirectHost = "127.0.0.1"

// RedirectURI is the redirect URI to register at the IdP: with a fixed
// port, exactly that; else the form, with PORT standing for any port.
func (p *ProviderConfig) RedirectURI() string {
	port := "PORT"
	if p.RedirectPort != 0 {
		port = fmt.Sprint(p.RedirectPort)
	}
	return "http://" + p.RedirectHost + ":" + port + "/callback"
}

// readSecret reads a secret file that only its owner may read.
func readSecret(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("client_secret_file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("client_secret_file %s: mode %v lets others read it: chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("client_secret_file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("client_secret_file %s: empty", path)
	}
	return s, nil
}

// TokenKeyFile is the name, in the controller's data directory, of the key
// that seals refresh tokens in the database.
const TokenKeyFile = "oidc-token.key"

// LoadOrCreateKey reads the 32-byte token sealing key at path, creating it
// (mode 0600) on first use. Losing it only forces the affected users to
// sign in again: their refresh tokens no longer open, which ends their
// sessions at the next refresh.
func LoadOrCreateKey(path string) ([]byte, error) {
	b, err := secretfile.LoadOrCreate(path, tokenKeySize)
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	return b, nil
}
