// Package auth holds the controller's credential primitives: argon2id
// password hashes, TOTP second factors with replay protection, admin and
// enrollment token secrets (only their SHA-256 is stored) and failed-login
// throttling.
//
// Nothing here touches the store or the network; the API wires these to
// requests. Every comparison of a secret is constant time.
package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Password length limits, in characters. The maximum only bounds the work
// an unauthenticated request can cause.
const (
	MinPasswordLength = 12
	MaxPasswordLength = 1024
)

// ErrPasswordPolicy is returned (wrapped) for a password that is too short
// or too long.
var ErrPasswordPolicy = errors.New("password does not meet the policy")

// CheckPasswordPolicy reports whether a new password is acceptable. The error
// says what to fix and never contains the password.
func CheckPasswordPolicy(password string) error {
	n := utf8.RuneCountInString(password)
	switch {
	case n < MinPasswordLength:
		return fmt.Errorf("%w: it must be at least %d characters long (got %d); a passphrase of several words is easiest", ErrPasswordPolicy, MinPasswordLength, n)
	case len(password) > MaxPasswordLength:
		return fmt.Errorf("%w: it must be at most %d bytes long", ErrPasswordPolicy, MaxPasswordLength)
	}
	return nil
}

// Params are argon2id cost parameters. Memory is in KiB.
type Params struct {
	Memory  uint32
	Time    uint32
	Threads uint8
}

// DefaultParams follow RFC 9106's second recommended option scaled to a
// controller: 64 MiB, 2 passes, 2 lanes (about 50-100 ms per hash).
var DefaultParams = Params{Memory: 64 * 1024, Time: 2, Threads: 2}

// TestParams are cheap parameters for tests only.
var TestParams = Params{Memory: 64, Time: 1, Threads: 1}

// Limits on parameters read back from a stored hash, so a corrupted or
// planted hash cannot make verification take unbounded memory or time.
const (
	maxMemory  = 1 << 20 // 1 GiB
	maxTime    = 16
	saltLen    = 16
	keyLen     = 32
	maxHashLen = 128
)

// Hasher hashes passwords with fixed parameters. The zero value is not
// usable; use [NewHasher].
type Hasher struct {
	p     Params
	dummy string // a hash of a random password, for timing equalization
}

// NewHasher returns a Hasher using p.
func NewHasher(p Params) (*Hasher, error) {
	if p.Memory < 8*uint32(p.Threads) || p.Time < 1 || p.Threads < 1 || p.Memory > maxMemory || p.Time > maxTime {
		return nil, fmt.Errorf("argon2id parameters m=%d t=%d p=%d out of range", p.Memory, p.Time, p.Threads)
	}
	h := &Hasher{p: p}
	var pw [24]byte
	rand.Read(pw[:])
	d, err := h.Hash(base64.RawStdEncoding.EncodeToString(pw[:]))
	if err != nil {
		return nil, err
	}
	h.dummy = d
	return h, nil
}

// Hash returns the PHC-encoded argon2id hash of password:
// $argon2id$v=19$m=65536,t=2,p=2$<salt>$<hash> (unpadded standard base64).
// It does not apply the password policy; call [CheckPasswordPolicy] first.
func (h *Hasher) Hash(password string) (string, error) {
	salt := make([]byte, saltLen)
	rand.Read(salt) // never fails (crypto/rand)
	key := argon2.IDKey([]byte(password), salt, h.p.Time, h.p.Memory, h.p.Threads, keyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, h.p.Memory, h.p.Time, h.p.Threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// Verify reports whether password matches the encoded hash, using the
// parameters stored in the hash. The comparison is constant time. An
// error means the stored hash is malformed (not a wrong password).
func (h *Hasher) Verify(encoded, password string) (bool, error) {
	p, salt, want, err := decodeHash(encoded)
	if err != nil {
		return false, err
	}
	if len(password) > MaxPasswordLength {
		// Do the same work as for a real attempt, then fail.
		argon2.IDKey([]byte(password[:MaxPasswordLength]), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
		return false, nil
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// VerifyDummy does the work of a verification against a hash no password
// matches. Use it when the user does not exist, so response time does not
// reveal which user names exist.
func (h *Hasher) VerifyDummy(password string) {
	h.Verify(h.dummy, password) //nolint:errcheck // always false
}

// NeedsRehash reports whether encoded was made with parameters other than
// the hasher's (for upgrading hashes on the next successful login).
func (h *Hasher) NeedsRehash(encoded string) bool {
	p, _, _, err := decodeHash(encoded)
	return err != nil || p != h.p
}

var errBadHash = errors.New("stored password hash is not a valid argon2id PHC string")

func decodeHash(encoded string) (Params, []byte, []byte, error) {
	var p Params
	parts := strings.Split(encoded, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, nil, nil, errBadHash
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, fmt.Errorf("%w: unsupported version %q", errBadHash, parts[2])
	}
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return p, nil, nil, errBadHash
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return p, nil, nil, errBadHash
		}
		switch k {
		case "m":
			p.Memory = uint32(n)
		case "t":
			p.Time = uint32(n)
		case "p":
			if n > 255 {
				return p, nil, nil, errBadHash
			}
			p.Threads = uint8(n)
		default:
			return p, nil, nil, errBadHash
		}
	}
	if p.Threads < 1 || p.Time < 1 || p.Time > maxTime || p.Memory < 8*uint32(p.Threads) || p.Memory > maxMemory {
		return p, nil, nil, fmt.Errorf("%w: parameters out of range", errBadHash)
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return p, nil, nil, errBadHash
	}
	key, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(key) < 16 || len(key) > maxHashLen {
		return p, nil, nil, errBadHash
	}
	return p, salt, key, nil
}
