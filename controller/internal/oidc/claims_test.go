package oidc

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func testProvider(t testing.TB) *ProviderConfig {
	p := &ProviderConfig{Name: "okta", Issuer: "https://hospital.okta.com", ClientID: "cordon", MFAACRValues: []string{"phr"}}
	if err := p.check(); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseClaims(t *testing.T) {
	p := testProvider(t)
	for _, tc := range []struct {
		name, raw string
		edit      func(*ProviderConfig)
		want      Claims
		err       string
	}{
		{name: "okta", raw: `{"sub":"00u1","email":"Jane.Doe@hospital.org","preferred_username":"Jane.Doe@hospital.org","groups":["Radiology","Physicians","Radiology"],"amr":["pwd","mfa"],"iat":1700000000,"nonce":"n1"}`,
			edit: func(p *ProviderConfig) { p.UsernameDomains = []string{"hospital.org"} },
			want: Claims{Subject: "00u1", Email: "Jane.Doe@hospital.org", Username: "jane-doe", Groups: []string{"Physicians", "Radiology"}, MFA: true, Nonce: "n1", AMR: []string{"pwd", "mfa"}}},
		// A domain that is not the hospital's stays in the name: a guest
		// "jane.doe@affiliate.org" never becomes the hospital's jane-doe.
		{name: "other domain kept", raw: `{"sub":"g1","preferred_username":"Jane.Doe@affiliate.org"}`,
			edit: func(p *ProviderConfig) { p.UsernameDomains = []string{"hospital.org"} },
			want: Claims{Subject: "g1", Username: "jane-doe-affiliate-org"}},
		{name: "no domains configured: domain kept", raw: `{"sub":"g2","preferred_username":"bob@hospital.org"}`,
			want: Claims{Subject: "g2", Username: "bob-hospital-org"}},
		{name: "exact name", raw: `{"sub":"s","preferred_username":"JSmith@hospital.org"}`,
			edit: func(p *ProviderConfig) { p.UsernameDomains = []string{"hospital.org"} },
			want: Claims{Subject: "s", Username: "jsmith", UsernameExact: true}},
		{name: "verified email fallback", raw: `{"sub":"s","email":"bob@h.org","email_verified":true}`,
			edit: func(p *ProviderConfig) { p.UsernameDomains = []string{"h.org"} },
			want: Claims{Subject: "s", Email: "bob@h.org", Username: "bob", UsernameExact: true}},
		{name: "unverified email is no name", raw: `{"sub":"s","email":"bob@h.org"}`, err: "not verified"},
		// Some IdPs send email_verified as a string.
		{name: "email_verified string true", raw: `{"sub":"s","email":"bob@h.org","email_verified":"true"}`,
			edit: func(p *ProviderConfig) { p.UsernameDomains = []string{"h.org"} },
			want: Claims{Subject: "s", Email: "bob@h.org", Username: "bob", UsernameExact: true}},
		{name: "email_verified string false", raw: `{"sub":"s","email":"bob@h.org","email_verified":"false"}`, err: "not verified"},
		{name: "email_verified false", raw: `{"sub":"s","email":"bob@h.org","email_verified":false}`, err: "not verified"},
		{name: "email_verified null", raw: `{"sub":"s","email":"bob@h.org","email_verified":null}`, err: "not verified"},
		{name: "email_verified other string", raw: `{"sub":"s","email":"bob@h.org","email_verified":"yes"}`, err: `claim "email_verified": "yes" is neither true nor false`},
		{name: "email_verified number", raw: `{"sub":"s","email":"bob@h.org","email_verified":1}`, err: `claim "email_verified": 1 is neither true nor false`},
		{name: "email_verified TRUE", raw: `{"sub":"s","email":"bob@h.org","email_verified":"TRUE"}`, err: "neither true nor false"},
		{name: "otp alone is not MFA", raw: `{"sub":"s","preferred_username":"x","amr":["otp"]}`, want: Claims{Subject: "s", Username: "x", UsernameExact: true}},
		{name: "pwd and otp is MFA", raw: `{"sub":"s","preferred_username":"x","amr":["pwd","otp"]}`, want: Claims{Subject: "s", Username: "x", UsernameExact: true, MFA: true}},
		{name: "configured single method", raw: `{"sub":"s","preferred_username":"x","amr":["hwk"]}`,
			edit: func(p *ProviderConfig) { p.MFAAMRValues = []string{"mfa", "hwk"} }, want: Claims{Subject: "s", Username: "x", UsernameExact: true, MFA: true}},
		{name: "single-string group", raw: `{"sub":"s","preferred_username":"x","groups":"Nurses"}`, want: Claims{Subject: "s", Username: "x", Groups: []string{"Nurses"}}},
		{name: "acr", raw: `{"sub":"s","preferred_username":"x","acr":"phr"}`, want: Claims{Subject: "s", Username: "x", MFA: true, ACR: "phr"}},
		{name: "pwd only is not MFA", raw: `{"sub":"s","preferred_username":"x","amr":["pwd"]}`, want: Claims{Subject: "s", Username: "x", AMR: []string{"pwd"}}},
		{name: "keycloak roles", raw: `{"sub":"s","preferred_username":"x","realm_access":{"roles":["er-staff"]}}`,
			edit: func(p *ProviderConfig) { p.GroupsClaim = "realm_access.roles" }, want: Claims{Subject: "s", Username: "x", Groups: []string{"er-staff"}}},
		{name: "username from sub, prefixed", raw: `{"sub":"AbC_123","preferred_username":"x"}`,
			edit: func(p *ProviderConfig) { p.UsernameClaim, p.UsernamePrefix = "sub", "entra" }, want: Claims{Subject: "AbC_123", Username: "entra-abc-123"}},
		{name: "entra overage", raw: `{"sub":"s","preferred_username":"x","_claim_names":{"groups":"src1"}}`, err: "overage"},
		{name: "no sub", raw: `{"preferred_username":"x"}`, err: "sub"},
		{name: "groups not strings", raw: `{"sub":"s","preferred_username":"x","groups":[1,2]}`, err: "not a list of strings"},
		{name: "empty group", raw: `{"sub":"s","preferred_username":"x","groups":[""]}`, err: "empty"},
		{name: "no usable name", raw: `{"sub":"s","preferred_username":"@@@"}`, err: "no usable user name"},
		{name: "no name claim", raw: `{"sub":"s"}`, err: "missing"},
		{name: "not JSON", raw: `nope`, err: "claims"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pc := *p
			if tc.edit != nil {
				tc.edit(&pc)
			}
			got, err := ParseClaims([]byte(tc.raw), &pc)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.IssuedAt = tc.want.IssuedAt
			if tc.want.UsernameExact && !got.UsernameExact {
				t.Errorf("UsernameExact false for %q", got.Username)
			}
			if got.Subject != tc.want.Subject || got.Email != tc.want.Email || got.Username != tc.want.Username ||
				!slices.Equal(got.Groups, tc.want.Groups) || got.MFA != tc.want.MFA || got.Nonce != tc.want.Nonce {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

var userNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// FuzzParseClaims: any payload either fails or yields a valid Cordon user
// name, bounded sorted unique groups, and never panics.
func FuzzParseClaims(f *testing.F) {
	for _, s := range []string{
		`{"sub":"00u1","preferred_username":"Jane.Doe@hospital.org","groups":["A","B"],"amr":["mfa"]}`,
		`{"sub":"s","email":"x@y","groups":"G","iat":1e9}`,
		`{"sub":"s","preferred_username":"x","_claim_names":{"groups":"src1"}}`,
		`{"sub":"s","preferred_username":"x","realm_access":{"roles":["r"]}}`,
		`{"sub":"","groups":null,"amr":null}`,
	} {
		f.Add([]byte(s))
	}
	p := testProvider(f)
	kc := *p
	kc.GroupsClaim = "realm_access.roles"
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, pc := range []*ProviderConfig{p, &kc} {
			c, err := ParseClaims(raw, pc)
			if err != nil {
				continue
			}
			if !userNameRE.MatchString(c.Username) {
				t.Fatalf("user name %q is not a valid name", c.Username)
			}
			if c.Subject == "" || len(c.Groups) > maxGroups || !slices.IsSorted(c.Groups) || len(slices.Compact(slices.Clone(c.Groups))) != len(c.Groups) {
				t.Fatalf("claims %+v", c)
			}
		}
	})
}

// FuzzUserName: any claim value maps to a valid name or to "".
func FuzzUserName(f *testing.F) {
	for _, s := range []string{"Jane.Doe@hospital.org", "---", "ÄÖÜ@x", strings.Repeat("a", 100), "a@b@c"} {
		f.Add("", s)
		f.Add("okta-", s)
	}
	f.Fuzz(func(t *testing.T, prefix, v string) {
		if !regexp.MustCompile(`^([a-z0-9][a-z0-9-]{0,15})?$`).MatchString(prefix) {
			return // the configuration refuses such prefixes
		}
		if n := UserName(prefix, v); n != "" && !userNameRE.MatchString(n) {
			t.Fatalf("UserName(%q, %q) = %q", prefix, v, n)
		}
	})
}

func TestParseFile(t *testing.T) {
	good := `
refresh_interval: 1m
providers:
  - name: okta
    issuer: https://hospital.okta.com
    client_id: 0oa1
  - name: entra
    issuer: https://login.microsoftonline.com/TENANT/v2.0
    client_id: 11111111-2222-3333-4444-555555555555
    policy_claim: entra-groups
`
	f, err := ParseFile([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if f.Providers[0].GroupsClaim != "groups" || f.Providers[1].PolicyClaim != "entra-groups" || !slices.Contains(f.Providers[0].Scopes, "offline_access") {
		t.Errorf("defaults: %+v", f.Providers)
	}
	if f.UnreachableLimit != Duration(DefaultUnreachableLimit) {
		t.Errorf("unreachable_limit default = %s, want %s", time.Duration(f.UnreachableLimit), DefaultUnreachableLimit)
	}
	f, err = ParseFile([]byte("unreachable_limit: 20m\nproviders:\n  - {name: a, issuer: https://x, client_id: c}"))
	if err != nil || f.UnreachableLimit != Duration(20*time.Minute) {
		t.Errorf("unreachable_limit: 20m: %+v, %v", f, err)
	}
	for _, tc := range []struct{ src, want string }{
		{"providers:\n  - {name: okta, issuer: https://x, client_id: c, colour: red}", "colour"},
		{"providers:\n  - {name: okta, issuer: http://x, client_id: c}", "not https"},
		{"providers:\n  - {name: okta, issuer: https://x}", "client_id"},
		{"providers:\n  - {name: Okta!, issuer: https://x, client_id: c}", "name"},
		{"providers:\n  - {name: a, issuer: https://x, client_id: c}\n  - {name: b, issuer: https://y, client_id: c}", "policy_claim"},
		{"providers:\n  - {name: a, issuer: https://x, client_id: c}\n  - {name: a, issuer: https://y, client_id: c, policy_claim: z}", "twice"},
		{"providers:\n  - {name: a, issuer: https://x, client_id: c, scopes: [email]}", "openid"},
		{"refresh_interval: soon\nproviders: []", "duration"},
		{"refresh_interval: 10m\nunreachable_limit: 5m\nproviders:\n  - {name: a, issuer: https://x, client_id: c}", "unreachable_limit: 5m0s is shorter than refresh_interval"},
		{"unreachable_limit: -1h\nproviders:\n  - {name: a, issuer: https://x, client_id: c}", "positive duration"},
		{"", "empty"},
		{"providers:\n  - {name: a, issuer: https://x, client_id: c, redirect_host: example.com}", "redirect_host"},
		{"providers:\n  - {name: a, issuer: https://x, client_id: c, redirect_port: 80}", "redirect_port: 80"},
		{"providers:\n  - {name: a, issuer: https://x, client_id: c, redirect_port: 70000}", "redirect_port"},
		// yaml.v3 says line 2 for an unclosed list on line 4.
		{"providers:\n  - name: a\n    issuer: https://x\n    scopes: [openid, email\n    client_id: c\n", "line 4, column 5: YAML syntax error"},
	} {
		if _, err := ParseFile([]byte(tc.src)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseFile(%q) = %v, want error mentioning %q", tc.src, err, tc.want)
		}
	}
}

func TestClientSecretFile(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	cfg := filepath.Join(dir, "oidc.yaml")
	os.WriteFile(cfg, []byte("providers:\n  - {name: kc, issuer: https://kc.hospital/realms/staff, client_id: cordon, client_secret_file: "+secret+"}\n"), 0o644)
	os.WriteFile(secret, []byte("s3cret\n"), 0o644)
	if _, err := LoadFile(cfg); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable secret: %v", err)
	}
	os.Chmod(secret, 0o600)
	f, err := LoadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if f.Providers[0].secret != "s3cret" {
		t.Errorf("secret %q", f.Providers[0].secret)
	}
	if _, err := LoadFile(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), TokenKeyFile)
	k1, err := LoadOrCreateKey(p)
	if err != nil || len(k1) != 32 {
		t.Fatalf("create: %d bytes, %v", len(k1), err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	k2, err := LoadOrCreateKey(p)
	if err != nil || string(k1) != string(k2) {
		t.Errorf("reload: %v", err)
	}
	os.WriteFile(p, []byte("short"), 0o600)
	if _, err := LoadOrCreateKey(p); err == nil {
		t.Error("a truncated key was accepted")
	}
}

// TestDocExample: the configuration example in docs/identity.md parses.
func TestDocExample(t *testing.T) {
	b, err := os.ReadFile("../../../docs/identity.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "## Connecting an identity provider (OIDC)")
	if !ok {
		t.Fatal("docs/identity.md has no OIDC section")
	}
	_, block, ok := strings.Cut(sec, "```yaml\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("no yaml example in the OIDC section")
	}
	f, err := ParseFile([]byte(block))
	if err != nil {
		t.Fatalf("docs example: %v", err)
	}
	if len(f.Providers) != 3 {
		t.Errorf("docs example: %d providers", len(f.Providers))
	}
}
