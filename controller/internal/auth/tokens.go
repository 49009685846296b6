package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
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
