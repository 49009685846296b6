package auth

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
	"github.com/pquerna/otp/totp"
)

// TOTP settings: RFC 6238 defaults that every authenticator app supports.
const (
	TOTPIssuer = "Cordon"
	totpPeriod = 30 // seconds
	totpSkew   = 1  // steps accepted either side of now
	totpDigits = otp.DigitsSix
)

// TOTP errors.
var (
	ErrTOTPInvalid  = errors.New("one-time code is wrong or expired")
	ErrTOTPReplayed = errors.New("one-time code was already used")
)

// NewTOTPSecret makes a new TOTP seed for account and returns the base32
// secret and the otpauth:// URI authenticator apps import (as a QR code).
func NewTOTPSecret(account string) (secret, uri string, err error) {
	k, err := totp.Generate(totp.GenerateOpts{
		Issuer:      TOTPIssuer,
		AccountName: account,
		Period:      totpPeriod,
		Digits:      totpDigits,
		Algorithm:   otp.AlgorithmSHA1,
	})
	if err != nil {
		return "", "", fmt.Errorf("generate TOTP secret: %w", err)
	}
	return k.Secret(), k.URL(), nil
}

// TOTPCode returns the code for secret at t (for tests and tools).
func TOTPCode(secret string, t time.Time) (string, error) {
	return totp.GenerateCodeCustom(secret, t, totp.ValidateOpts{Period: totpPeriod, Skew: totpSkew, Digits: totpDigits, Algorithm: otp.AlgorithmSHA1})
}

// TOTPVerifier validates codes and rejects replays: once a code for time
// step s was accepted for a user, no code for step s or earlier is accepted
// for that user again (RFC 6238 section 5.2). It remembers the last
// accepted step per user only while that step could still validate (skew+1
// periods), so memory is bounded by the users who logged in during the last
// ~90 seconds. Safe for concurrent use.
type TOTPVerifier struct {
	mu        sync.Mutex
	last      map[string]uint64 // user → last accepted step
	lastSweep uint64
}

// NewTOTPVerifier returns an empty verifier.
func NewTOTPVerifier() *TOTPVerifier {
	return &TOTPVerifier{last: make(map[string]uint64)}
}

// Verify checks code for user's secret at now, accepting one step of clock
// skew either way, and records the step so the code cannot be used again.
func (v *TOTPVerifier) Verify(user, secret, code string, now time.Time) error {
	if len(code) != totpDigits.Length() {
		return ErrTOTPInvalid
	}
	t := now.Unix()
	if t < totpPeriod*totpSkew {
		return ErrTOTPInvalid
	}
	step := uint64(t) / totpPeriod
	opts := hotp.ValidateOpts{Digits: totpDigits, Algorithm: otp.AlgorithmSHA1}
	// Check every step in the window without an early exit.
	var matched uint64
	found := 0
	for s := step - totpSkew; s <= step+totpSkew; s++ {
		want, err := hotp.GenerateCodeCustom(secret, s, opts)
		if err != nil {
			return fmt.Errorf("stored TOTP secret: %w", err)
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 && found == 0 {
			matched, found = s, 1
		}
	}
	if found == 0 {
		return ErrTOTPInvalid
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	v.sweepLocked(step)
	if last, ok := v.last[user]; ok && matched <= last {
		return ErrTOTPReplayed
	}
	v.last[user] = matched
	return nil
}

// sweepLocked forgets steps that can no longer validate, at most once per
// period.
func (v *TOTPVerifier) sweepLocked(step uint64) {
	if step == v.lastSweep {
		return
	}
	v.lastSweep = step
	for u, s := range v.last {
		if s < step-totpSkew { // every code still in the window is newer
			delete(v.last, u)
		}
	}
}

// Len returns how many users the replay memory holds (for tests and metrics).
func (v *TOTPVerifier) Len() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.last)
}
