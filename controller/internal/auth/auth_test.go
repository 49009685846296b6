package auth

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPasswordHashVerify(t *testing.T) {
	h, err := NewHasher(TestParams)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := h.Hash("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("encoding %q", enc)
	}
	for _, tc := range []struct {
		pw   string
		want bool
	}{
		{"correct horse battery", true},
		{"correct horse batterY", false},
		{"", false},
		{strings.Repeat("x", MaxPasswordLength+10), false},
	} {
		ok, err := h.Verify(enc, tc.pw)
		if err != nil || ok != tc.want {
			t.Errorf("Verify(%.20q) = %v, %v; want %v", tc.pw, ok, err, tc.want)
		}
	}
	enc2, _ := h.Hash("correct horse battery")
	if enc == enc2 {
		t.Error("two hashes of one password are equal: salt not random")
	}
	if h.NeedsRehash(enc) {
		t.Error("NeedsRehash on own hash")
	}
	hd, _ := NewHasher(Params{Memory: 128, Time: 1, Threads: 1})
	if !hd.NeedsRehash(enc) {
		t.Error("NeedsRehash false for other params")
	}
	h.VerifyDummy("anything")
}

func TestVerifyRejectsMalformedHash(t *testing.T) {
	h, _ := NewHasher(TestParams)
	for _, enc := range []string{
		"",
		"plaintext",
		"$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=18$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", // 95 GiB
		"$argon2id$v=19$m=64,t=100,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=1,p=0$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=1,p=1,x=2$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=1,p=1$!!$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
	} {
		if ok, err := h.Verify(enc, "x"); ok || err == nil {
			t.Errorf("Verify(%q) = %v, %v; want error", enc, ok, err)
		}
	}
}

func TestNewHasherRejectsBadParams(t *testing.T) {
	for _, p := range []Params{{}, {Memory: 64, Time: 0, Threads: 1}, {Memory: 4, Time: 1, Threads: 1}, {Memory: 1 << 30, Time: 1, Threads: 1}} {
		if _, err := NewHasher(p); err == nil {
			t.Errorf("NewHasher(%+v) accepted", p)
		}
	}
}

func TestPasswordPolicy(t *testing.T) {
	if err := CheckPasswordPolicy("short"); !errors.Is(err, ErrPasswordPolicy) || !strings.Contains(err.Error(), "at least 12") {
		t.Errorf("short password: %v", err)
	} else if strings.Contains(err.Error(), "short") && strings.Contains(err.Error(), `"short"`) {
		t.Errorf("error echoes the password: %v", err)
	}
	if err := CheckPasswordPolicy("twelve chars"); err != nil {
		t.Errorf("12 chars: %v", err)
	}
	if err := CheckPasswordPolicy("äöüäöüäöüäöü"); err != nil { // 12 runes, 24 bytes
		t.Errorf("12 runes: %v", err)
	}
	if err := CheckPasswordPolicy(strings.Repeat("a", MaxPasswordLength+1)); err == nil {
		t.Error("huge password accepted")
	}
}

func TestTOTP(t *testing.T) {
	secret, uri, err := NewTOTPSecret("nurse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(uri, "otpauth://totp/Cordon:nurse?") || !strings.Contains(uri, "issuer=Cordon") || !strings.Contains(uri, "secret="+secret) {
		t.Fatalf("uri %q", uri)
	}
	now := time.Unix(1_800_000_015, 0) // middle of a step
	code := func(at time.Time) string {
		c, err := TOTPCode(secret, at)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	v := NewTOTPVerifier()
	if err := v.Verify("nurse", secret, code(now), now); err != nil {
		t.Fatalf("current code: %v", err)
	}
	if err := v.Verify("nurse", secret, code(now), now); !errors.Is(err, ErrTOTPReplayed) {
		t.Fatalf("replayed code: %v", err)
	}
	// An older code in the window is also refused after a newer one.
	if err := v.Verify("nurse", secret, code(now.Add(-30*time.Second)), now); !errors.Is(err, ErrTOTPReplayed) {
		t.Fatalf("older code after newer: %v", err)
	}
	// The next step's code (clock skew) works once.
	if err := v.Verify("nurse", secret, code(now.Add(30*time.Second)), now); err != nil {
		t.Fatalf("+1 step: %v", err)
	}
	// Another user is independent.
	if err := v.Verify("doctor", secret, code(now), now); err != nil {
		t.Fatalf("other user: %v", err)
	}

	v = NewTOTPVerifier()
	if err := v.Verify("nurse", secret, code(now.Add(-30*time.Second)), now); err != nil {
		t.Errorf("-1 step: %v", err)
	}
	for _, c := range []string{code(now.Add(-90 * time.Second)), code(now.Add(90 * time.Second)), "", "12345", "1234567", "abcdef"} {
		if err := v.Verify("x", secret, c, now); !errors.Is(err, ErrTOTPInvalid) {
			t.Errorf("code %q: %v, want invalid", c, err)
		}
	}
	if err := v.Verify("x", "not base32 !", "123456", now); err == nil || errors.Is(err, ErrTOTPInvalid) {
		t.Errorf("bad secret: %v", err)
	}
}

func TestTOTPReplayMemoryIsBounded(t *testing.T) {
	secret, _, _ := NewTOTPSecret("u")
	v := NewTOTPVerifier()
	now := time.Unix(1_800_000_000, 0)
	for i := range 100 {
		c, _ := TOTPCode(secret, now)
		if err := v.Verify("u"+string(rune('a'+i%26))+string(rune('a'+i/26)), secret, c, now); err != nil {
			t.Fatal(err)
		}
	}
	if v.Len() != 100 {
		t.Fatalf("Len = %d", v.Len())
	}
	later := now.Add(5 * time.Minute)
	c, _ := TOTPCode(secret, later)
	if err := v.Verify("late", secret, c, later); err != nil {
		t.Fatal(err)
	}
	if v.Len() != 1 {
		t.Fatalf("after window: Len = %d, want 1", v.Len())
	}
}

func TestTOTPConcurrentReplayOnlyOneWins(t *testing.T) {
	secret, _, _ := NewTOTPSecret("u")
	now := time.Unix(1_800_000_000, 0)
	c, _ := TOTPCode(secret, now)
	v := NewTOTPVerifier()
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 20 {
		wg.Go(func() {
			if v.Verify("u", secret, c, now) == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if ok != 1 {
		t.Fatalf("%d concurrent uses of one code succeeded, want 1", ok)
	}
}

func TestTokens(t *testing.T) {
	s, h := NewAdminToken()
	if !strings.HasPrefix(s, AdminTokenPrefix) || !LooksLikeAdminToken(s) || LooksLikeEnrollToken(s) {
		t.Fatalf("admin token %q", s)
	}
	if string(h) != string(HashToken(s)) || len(h) != 32 {
		t.Fatal("hash mismatch")
	}
	s2, _ := NewAdminToken()
	if s == s2 {
		t.Fatal("tokens repeat")
	}
	e, _ := NewEnrollToken()
	if !LooksLikeEnrollToken(e) {
		t.Fatalf("enroll token %q", e)
	}
}

func TestThrottle(t *testing.T) {
	th := NewThrottle(ThrottleConfig{FreeUserAttempts: 3, FreeIPAttempts: 5, BaseDelay: time.Second, MaxDelay: 4 * time.Second, Forget: time.Minute})
	now := time.Unix(1_800_000_000, 0)
	for i := range 3 {
		if w := th.Allow("Nurse", "192.0.2.1", now); w != 0 {
			t.Fatalf("attempt %d delayed %v", i, w)
		}
	}
	// 4th attempt proceeds but arms a 1s delay.
	if w := th.Allow("nurse", "192.0.2.2", now); w != 0 {
		t.Fatalf("4th attempt delayed %v", w)
	}
	if w := th.Allow("nurse", "192.0.2.3", now); w != time.Second {
		t.Fatalf("5th attempt: wait %v, want 1s (user names are case-insensitive)", w)
	}
	// Delays double up to the cap.
	now = now.Add(time.Second)
	th.Allow("nurse", "192.0.2.3", now)
	if w := th.Allow("nurse", "192.0.2.3", now); w != 2*time.Second {
		t.Fatalf("wait %v, want 2s", w)
	}
	for range 5 {
		now = now.Add(10 * time.Second)
		th.Allow("nurse", "192.0.2.4", now)
	}
	if w := th.Allow("nurse", "192.0.2.4", now); w != 4*time.Second {
		t.Fatalf("wait %v, want cap 4s", w)
	}
	// Another user from another address is not affected.
	if w := th.Allow("doctor", "192.0.2.9", now); w != 0 {
		t.Fatalf("other user delayed %v", w)
	}
	// Success clears the user.
	th.Succeeded("nurse", "192.0.2.4")
	if w := th.Allow("nurse", "192.0.2.5", now); w != 0 {
		t.Fatalf("after success: wait %v", w)
	}

	// Per-source: many user names from one address (IPv6 /64 counts as one).
	th = NewThrottle(ThrottleConfig{FreeUserAttempts: 100, FreeIPAttempts: 5, BaseDelay: time.Second})
	for i := range 6 {
		th.Allow("u"+string(rune('a'+i)), "2001:db8::"+string(rune('1'+i)), now)
	}
	if w := th.Allow("z", "2001:db8::ffff", now); w == 0 {
		t.Fatal("source /64 not throttled")
	}
	if w := th.Allow("z", "2001:db8:1::1", now); w != 0 {
		t.Fatalf("other /64 delayed %v", w)
	}
	// Idle counters are forgotten.
	if w := th.Allow("z", "2001:db8::1", now.Add(2*time.Hour)); w != 0 {
		t.Fatalf("after Forget: wait %v", w)
	}
}

func TestThrottleBounded(t *testing.T) {
	th := NewThrottle(ThrottleConfig{MaxEntries: 10})
	now := time.Unix(1_800_000_000, 0)
	for i := range 100 {
		th.Allow(strings.Repeat("u", i+1), "192.0.2.1", now.Add(time.Duration(i)*time.Millisecond))
	}
	th.mu.Lock()
	defer th.mu.Unlock()
	if len(th.users) > 10 {
		t.Fatalf("%d user entries, cap 10", len(th.users))
	}
}
