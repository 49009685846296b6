package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"strings"
)

// Recovery codes replace the TOTP code at a sign-in when the authenticator
// is lost. Each is 16 characters of a 30-letter alphabet (78 bits), shown
// as four groups of four: long enough that a fast hash (SHA-256) of it is
// safe to store, so checking one costs nothing and a stolen database does
// not give them away. Each is usable once.
const (
	RecoveryCodeCount = 10
	recoveryLen       = 16
	recoveryGroup     = 4
	// Crockford-style alphabet without 0, 1, i, l, o, u: nothing to
	// confuse when reading a printed sheet.
	recoveryAlphabet = "abcdefghjkmnpqrstvwxyz23456789"
)

// NewRecoveryCodes returns n new codes for user, as shown to them, and the
// hashes to store (same order).
func NewRecoveryCodes(user string, n int) (codes []string, hashes [][]byte) {
	for range n {
		var b strings.Builder
		buf := make([]byte, recoveryLen)
		rand.Read(buf)
		for i, x := range buf {
			if i > 0 && i%recoveryGroup == 0 {
				b.WriteByte('-')
			}
			// len(alphabet) = 30 does not divide 256: draw again past the
			// largest multiple so every letter is equally likely.
			for int(x) >= 256-256%len(recoveryAlphabet) {
				var one [1]byte
				rand.Read(one[:])
				x = one[0]
			}
			b.WriteByte(recoveryAlphabet[int(x)%len(recoveryAlphabet)])
		}
		c := b.String()
		codes = append(codes, c)
		hashes = append(hashes, HashRecoveryCode(user, c))
	}
	return codes, hashes
}

// NormalizeRecoveryCode lowercases a typed code and drops separators and
// spaces, so "ABCD-EFGH ..." and "abcdefgh..." are the same code.
func NormalizeRecoveryCode(code string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '-' || r == ' ' || r == '\t':
			return -1
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return r
	}, code)
}

// LooksLikeRecoveryCode reports whether code has the shape of a recovery
// code once normalized (for a clear error; not a check of validity).
func LooksLikeRecoveryCode(code string) bool {
	c := NormalizeRecoveryCode(code)
	if len(c) != recoveryLen {
		return false
	}
	for i := range len(c) {
		if !strings.ContainsRune(recoveryAlphabet, rune(c[i])) {
			return false
		}
	}
	return true
}

// HashRecoveryCode returns the stored form of user's code: SHA-256 over a
// domain label, the user name and the normalized code.
func HashRecoveryCode(user, code string) []byte {
	h := sha256.New()
	h.Write([]byte("cordon recovery code v1\x00"))
	h.Write([]byte(strings.ToLower(user)))
	h.Write([]byte{0})
	h.Write([]byte(NormalizeRecoveryCode(code)))
	return h.Sum(nil)
}

// MatchRecoveryCode compares the presented code against every stored hash
// in constant time, without stopping at a match, and returns the index of
// the matching hash or -1.
func MatchRecoveryCode(user, code string, stored [][]byte) int {
	h := HashRecoveryCode(user, code)
	idx := -1
	for i, s := range stored {
		if subtle.ConstantTimeCompare(h, s) == 1 && idx < 0 {
			idx = i
		}
	}
	return idx
}
