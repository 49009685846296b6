// Package wgkey holds WireGuard key types. Private keys never print and never
// compare with ==; public keys print and marshal as standard base64, the form
// wg(8) shows.
package wgkey

import (
	"crypto/subtle"
	"encoding/base64"
	"fmt"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Public is a WireGuard public key. The zero value is "no key".
type Public struct {
	k [32]byte
}

// Private is a WireGuard private key. It is created on the device that uses
// it and never leaves it.
type Private struct {
	_ [0]func() // not comparable: compare with Equal (constant time)
	k [32]byte
}

// NewPrivate generates a new private key.
func NewPrivate() (Private, error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return Private{}, fmt.Errorf("generate wireguard key: %w", err)
	}
	return Private{k: k}, nil
}

// ParsePrivate parses a base64 private key (as stored on disk).
func ParsePrivate(s string) (Private, error) {
	k, err := wgtypes.ParseKey(s)
	if err != nil {
		return Private{}, fmt.Errorf("parse wireguard private key: %w", err)
	}
	return Private{k: k}, nil
}

// Public derives the public key.
func (p Private) Public() Public { return Public{k: wgtypes.Key(p.k).PublicKey()} }

// IsZero reports whether p is unset.
func (p Private) IsZero() bool { return p.Equal(Private{}) }

// Equal compares in constant time.
func (p Private) Equal(o Private) bool { return subtle.ConstantTimeCompare(p.k[:], o.k[:]) == 1 }

// WGTypes returns the key in wgctrl's type, for configuring a device.
func (p Private) WGTypes() wgtypes.Key { return wgtypes.Key(p.k) }

// MarshalSecret returns the base64 form, for the 0600 key file only.
func (p Private) MarshalSecret() string { return base64.StdEncoding.EncodeToString(p.k[:]) }

// String never reveals the key.
func (p Private) String() string { return "privkey:[redacted]" }

// Format never reveals the key either: without it %#v, %d, %o and %b
// print the key's bytes (they bypass String).
func (p Private) Format(f fmt.State, _ rune) { fmt.Fprint(f, p.String()) }

// ParsePublic parses a base64 public key.
func ParsePublic(s string) (Public, error) {
	k, err := wgtypes.ParseKey(s)
	if err != nil {
		return Public{}, fmt.Errorf("parse wireguard public key: %w", err)
	}
	return Public{k: k}, nil
}

// PublicFromWGTypes converts from wgctrl's type.
func PublicFromWGTypes(k wgtypes.Key) Public { return Public{k: k} }

// IsZero reports whether p is unset.
func (p Public) IsZero() bool { return p == Public{} }

// WGTypes returns the key in wgctrl's type.
func (p Public) WGTypes() wgtypes.Key { return wgtypes.Key(p.k) }

// String returns standard base64, as wg(8) prints it.
func (p Public) String() string { return base64.StdEncoding.EncodeToString(p.k[:]) }

// MarshalText implements encoding.TextMarshaler.
func (p Public) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Public) UnmarshalText(b []byte) error {
	k, err := ParsePublic(string(b))
	if err != nil {
		return err
	}
	*p = k
	return nil
}
