package posture

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func good() Report {
	return Report{
		CollectedAt: now.Add(-time.Second), OS: "debian", OSVersion: "12", OSName: "Debian GNU/Linux 12 (bookworm)",
		Kernel: "6.1.0-26-amd64", ClientVersion: "v0.1.0",
		DiskEncryption: Check{State: Yes, Detail: "root on dm-crypt"},
		Firewall:       Check{State: No, Detail: "no input chain"},
		ScreenLock:     Check{State: Unknown},
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	r := good()
	b, _ := json.Marshal(r)
	got, err := Decode(strings.NewReader(string(b)), now)
	if err != nil {
		t.Fatal(err)
	}
	if got.DiskEncryption.State != Yes || got.OSVersion != "12" || !got.CollectedAt.Equal(r.CollectedAt) {
		t.Fatalf("round trip: %+v", got)
	}
	if strings.Contains(string(b), "integrity") {
		t.Errorf("a report without integrity encodes it: %s", b) // older controllers refuse the field
	}
	r.Integrity = Check{State: No, Detail: "jailbroken"}
	b, _ = json.Marshal(r)
	if got, err := Decode(strings.NewReader(string(b)), now); err != nil || got.Integrity != r.Integrity {
		t.Fatalf("integrity round trip: %+v, %v", got, err)
	}
}

func TestDecodeRejects(t *testing.T) {
	mod := func(f func(*Report)) string {
		r := good()
		f(&r)
		b, _ := json.Marshal(r)
		return string(b)
	}
	for name, body := range map[string]string{
		"unknown field":                  `{"collected_at":"2026-11-22T11:00:00Z","rooted":true}`,
		"trailing data":                  mod(func(*Report) {}) + `{}`,
		"no time":                        mod(func(r *Report) { r.CollectedAt = time.Time{} }),
		"future":                         mod(func(r *Report) { r.CollectedAt = now.Add(time.Hour) }),
		"bad state":                      mod(func(r *Report) { r.Firewall.State = "maybe" }),
		"empty state":                    mod(func(r *Report) { r.ScreenLock.State = "" }),
		"bad integrity":                  mod(func(r *Report) { r.Integrity.State = "rooted" }),
		"integrity detail without state": mod(func(r *Report) { r.Integrity.Detail = "x" }),
		"control chars":                  mod(func(r *Report) { r.OSName = "Debian\x1b[31m" }),
		"long field":                     mod(func(r *Report) { r.Kernel = strings.Repeat("k", 300) }),
		"too large":                      `{"os":"` + strings.Repeat("a", MaxSize) + `"}`,
		"not json":                       `{`,
	} {
		if _, err := Decode(strings.NewReader(body), now); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	b, _ := json.Marshal(good())
	f.Add(b)
	f.Add([]byte(`{"collected_at":"2026-11-22T11:00:00Z","disk_encryption":{"state":"yes"},"firewall":{"state":"no"},"screen_lock":{"state":"unknown"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Decode(strings.NewReader(string(b)), now)
		if err == nil {
			if verr := r.Validate(now); verr != nil {
				t.Fatalf("Decode accepted a report Validate rejects: %v", verr)
			}
		}
	})
}
