package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"maps"
	"slices"
	"strings"
)

// Token prefixes. They make a leaked secret easy to recognise (and to scan
// for in repositories and logs).
const (
	AdminTokenPrefix  = "cordon-admin-"
	EnrollTokenPrefix = "cordon-enroll-"
)

const tokenBytes = 32

// NewAdminToken returns a new admin token secret and the SHA-256 hash to
// store. Show the secret to the operator once; keep only the hash.
func NewAdminToken() (secret string, hash []byte) { return newToken(AdminTokenPrefix) }

// NewEnrollToken returns a new single-use enrollment token secret and the
// SHA-256 hash to store.
func NewEnrollToken() (secret string, hash []byte) { return newToken(EnrollTokenPrefix) }

func newToken(prefix string) (string, []byte) {
	b := make([]byte, tokenBytes)
	rand.Read(b) // never fails (crypto/rand)
	s := prefix + base64.RawURLEncoding.EncodeToString(b)
	return s, HashToken(s)
}

// HashToken returns the SHA-256 of a token secret, the form stored. Tokens
// carry 256 bits of entropy, so a fast hash is enough.
func HashToken(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// LooksLikeAdminToken reports whether s has the admin token shape (prefix
// and length), for clear error messages; it is not a check of validity.
func LooksLikeAdminToken(s string) bool { return looksLike(s, AdminTokenPrefix) }

// LooksLikeEnrollToken is LooksLikeAdminToken for enrollment tokens.
func LooksLikeEnrollToken(s string) bool { return looksLike(s, EnrollTokenPrefix) }

func looksLike(s, prefix string) bool {
	rest, ok := strings.CutPrefix(s, prefix)
	return ok && len(rest) == base64.RawURLEncoding.EncodedLen(tokenBytes)
}

// MatchAdminToken compares the hash of a presented admin token against
// every stored hash (name → hash) in constant time, without stopping at a
// match, and returns the name of the matching token.
func MatchAdminToken(presented string, stored map[string][]byte) (name string, ok bool) {
	h := HashToken(presented)
	// Visit names in a fixed order so the work does not depend on map order.
	for _, n := range slices.Sorted(maps.Keys(stored)) {
		if subtle.ConstantTimeCompare(h, stored[n]) == 1 && !ok {
			name, ok = n, true
		}
	}
	return name, ok
}
