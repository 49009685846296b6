package oidc

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits on what a provider may assert, so one token cannot bloat the
// store or the maps.
const (
	maxGroups     = 1000
	maxGroupLen   = 256
	maxClaimBytes = 64 << 10
)

// Claims is what the controller takes from a verified ID token.
type Claims struct {
	Subject  string
	Email    string
	Username string // the Cordon user name to create at the first sign-in
	// UsernameExact is true when Username is the claim's value itself
	// (lower-cased, an own-domain suffix dropped), nothing replaced: only
	// such a name may bind an admin account at its first sign-in.
	UsernameExact bool
	Groups        []string // sorted, unique
	MFA           bool     // amr or acr shows a second factor
	Nonce         string
	IssuedAt      time.Time
	AMR           []string
	ACR           string
}

// ErrGroupsOverage is an Entra ID token that names a group source instead
// of carrying the groups.
var ErrGroupsOverage = errors.New("the ID token carries no groups but a pointer to them (Entra ID group overage): limit the groups claim to groups assigned to the application")

// ParseClaims reads the claims of an ID token whose signature, issuer,
// audience and expiry were verified (raw is its JSON payload), as provider
// p's configuration says.
func ParseClaims(raw []byte, p *ProviderConfig) (Claims, error) {
	var c Claims
	if len(raw) > maxClaimBytes {
		return c, fmt.Errorf("ID token claims larger than %d bytes", maxClaimBytes)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return c, fmt.Errorf("ID token claims: %w", err)
	}
	str := func(name string) (string, error) {
		v, ok := m[name]
		if !ok || string(v) == "null" {
			return "", nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", fmt.Errorf("claim %q: not a string", name)
		}
		return s, nil
	}
	var err error
	if c.Subject, err = str("sub"); err != nil {
		return c, err
	}
	if c.Subject == "" || len(c.Subject) > 255 {
		return c, errors.New("claim \"sub\": missing or longer than 255 bytes")
	}
	if c.Email, err = str("email"); err != nil {
		return c, err
	}
	if c.Nonce, err = str("nonce"); err != nil {
		return c, err
	}
	if c.ACR, err = str("acr"); err != nil {
		return c, err
	}
	if v, ok := m["iat"]; ok {
		var f float64
		if err := json.Unmarshal(v, &f); err != nil {
			return c, errors.New("claim \"iat\": not a number")
		}
		c.IssuedAt = time.Unix(int64(f), 0).UTC()
	}
	if v, ok := m["amr"]; ok && string(v) != "null" {
		if err := json.Unmarshal(v, &c.AMR); err != nil {
			return c, errors.New("claim \"amr\": not a list of strings")
		}
	}
	c.MFA = amrShowsMFA(c.AMR, p.MFAAMRValues) || c.ACR != "" && slices.Contains(p.MFAACRValues, c.ACR)

	if c.Groups, err = groups(m, p.GroupsClaim); err != nil {
		return c, err
	}

	var name string
	switch p.UsernameClaim {
	case "sub":
		name = c.Subject
	default:
		if name, err = str(p.UsernameClaim); err != nil {
			return c, err
		}
		if name == "" && p.UsernameClaim == DefaultUsernameClaim {
			// Only a verified address: an unverified one is whatever the
			// user typed at a self-service sign-up.
			verified, err := emailVerified(m)
			if err != nil {
				return c, err
			}
			if verified {
				name = c.Email
			}
		}
	}
	if name == "" {
		return c, fmt.Errorf("claim %q: missing (or, falling back to email, not verified): the user name is made from it (username_claim)", p.UsernameClaim)
	}
	name = ownDomainDropped(name, p.UsernameDomains)
	c.Username = UserName(p.UsernamePrefix, name)
	c.UsernameExact = c.Username == p.UsernamePrefix+prefixDash(p.UsernamePrefix)+strings.ToLower(name)
	if c.Username == "" {
		return c, fmt.Errorf("claim %q: %q gives no usable user name: set username_claim", p.UsernameClaim, clip(name))
	}
	return c, nil
}

// emailVerified reads the email_verified claim: a JSON boolean, or the
// strings "true" and "false" that some IdPs send (older Cognito, ADFS and
// custom claim mappings); absent or null is false. Anything else is
// refused, so that a sign-in never trusts an address on a value it
// cannot read.
func emailVerified(m map[string]json.RawMessage) (bool, error) {
	v, ok := m["email_verified"]
	if !ok || string(v) == "null" {
		return false, nil
	}
	var b bool
	if err := json.Unmarshal(v, &b); err == nil {
		return b, nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		switch s {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
	}
	return false, fmt.Errorf(`claim "email_verified": %s is neither true nor false (a boolean, or the string "true" or "false"): fix the claim mapping at the IdP, or set username_claim`, clip(string(v)))
}

// groups reads the claim at a dotted path: a list of strings or one
// string.
func groups(m map[string]json.RawMessage, path string) ([]string, error) {
	parts := strings.Split(path, ".")
	cur := m
	for i, part := range parts {
		v, ok := cur[part]
		if !ok || string(v) == "null" {
			if i == 0 && len(parts) == 1 && overage(m, path) {
				return nil, ErrGroupsOverage
			}
			return nil, nil
		}
		if i < len(parts)-1 {
			cur = nil
			if err := json.Unmarshal(v, &cur); err != nil {
				return nil, fmt.Errorf("claim %q: %q is not an object", path, part)
			}
			continue
		}
		var list []string
		if err := json.Unmarshal(v, &list); err != nil {
			var one string
			if json.Unmarshal(v, &one) != nil {
				return nil, fmt.Errorf("claim %q: not a list of strings", path)
			}
			list = []string{one}
		}
		if len(list) > maxGroups {
			return nil, fmt.Errorf("claim %q: more than %d groups", path, maxGroups)
		}
		out := make([]string, 0, len(list))
		for _, g := range list {
			if g == "" || len(g) > maxGroupLen || !utf8.ValidString(g) {
				return nil, fmt.Errorf("claim %q: a group name is empty, longer than %d bytes or not UTF-8", path, maxGroupLen)
			}
			out = append(out, g)
		}
		slices.Sort(out)
		return slices.Compact(out), nil
	}
	return nil, nil
}

// overage reports Entra ID's "_claim_names": {"groups": "src1"}.
func overage(m map[string]json.RawMessage, claim string) bool {
	var names map[string]json.RawMessage
	if v, ok := m["_claim_names"]; !ok || json.Unmarshal(v, &names) != nil {
		return false
	}
	_, ok := names[claim]
	return ok
}

// Kinds of authentication factor (NIST SP 800-63B) of RFC 8176 methods.
var amrKind = map[string]string{
	"pwd": "know", "pin": "know", "kba": "know",
	"otp": "have", "hwk": "have", "swk": "have", "sc": "have", "sms": "have", "tel": "have",
	"fpt": "are", "face": "are", "iris": "are", "retina": "are", "vbm": "are",
}

// amrShowsMFA reports whether an amr claim proves MFA: one of the
// configured values, or methods of two different factor kinds.
func amrShowsMFA(amr, configured []string) bool {
	kinds := map[string]bool{}
	for _, a := range amr {
		if slices.Contains(configured, a) {
			return true
		}
		if k := amrKind[a]; k != "" {
			kinds[k] = true
		}
	}
	return len(kinds) >= 2
}

// ownDomainDropped is v without an "@domain" suffix naming one of the
// hospital's own domains (case-insensitive); any other v as it is.
func ownDomainDropped(v string, domains []string) string {
	if at := strings.LastIndexByte(v, '@'); at > 0 && slices.Contains(domains, strings.ToLower(v[at+1:])) {
		return v[:at]
	}
	return v
}

func prefixDash(prefix string) string {
	if prefix != "" && !strings.HasSuffix(prefix, "-") {
		return "-"
	}
	return ""
}

// UserName makes a Cordon user name (lower-case letters, digits and '-',
// up to 63) from a claim value, lower-cased, with every run of other
// characters (an "@" included) turned into one '-'. It returns "" when
// nothing usable remains.
func UserName(prefix, v string) string {
	var b strings.Builder
	b.WriteString(prefix)
	dash := prefix != "" && !strings.HasSuffix(prefix, "-")
	for _, r := range strings.ToLower(v) {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(r)
		default:
			dash = true
		}
		if b.Len() >= 63 {
			break
		}
	}
	s := b.String()
	if len(s) > 63 {
		s = s[:63]
	}
	s = strings.TrimRight(s, "-")
	if s == "" || s == strings.TrimRight(prefix, "-") {
		return ""
	}
	return s
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
