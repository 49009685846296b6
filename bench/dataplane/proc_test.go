package main

import (
	"encoding/base32"
	"testing"
	"time"
)

func TestStatTicks(t *testing.T) {
	// A command name with spaces and a ')' of its own.
	line := "4242 (cordon (up) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 12 0 100 0 0"
	got, err := statTicks(line)
	if err != nil || got != 1234+567 {
		t.Fatalf("statTicks = %d, %v; want %d", got, err, 1234+567)
	}
	if _, err := statTicks("4242 (short) S 1 2"); err == nil {
		t.Error("a truncated stat line parsed")
	}
	if _, err := statTicks("no parenthesis"); err == nil {
		t.Error("a line without the name parsed")
	}
}

// The RFC 6238 appendix B vectors for SHA-1 (8 digits there; the last 6
// are the 6-digit code).
func TestTOTPCode(t *testing.T) {
	secret := base32.StdEncoding.EncodeToString([]byte("12345678901234567890"))
	for _, c := range []struct {
		unix int64
		want string
	}{
		{59, "287082"},
		{1111111109, "081804"},
		{1234567890, "005924"},
		{2000000000, "279037"},
	} {
		got, err := totpCode(secret, time.Unix(c.unix, 0))
		if err != nil || got != c.want {
			t.Errorf("totpCode(t=%d) = %q, %v; want %q", c.unix, got, err, c.want)
		}
	}
	if _, err := totpCode("not base32!", time.Unix(0, 0)); err == nil {
		t.Error("a bad secret gave a code")
	}
}
