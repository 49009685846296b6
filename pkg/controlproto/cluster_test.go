package controlproto

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"
	"time"
)

func testKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRevocationSignVerify(t *testing.T) {
	ctl, other := testKey(t), testKey(t)
	now := time.Unix(1_800_000_000, 0)
	n := RevocationNotice{ID: "n1", DeviceID: "dev1", Reason: "session ended", IssuedAt: now}
	r, err := SignRevocation(ctl, n)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyRevocation(&ctl.PublicKey, r, now.Add(time.Second))
	if err != nil || got.DeviceID != "dev1" || got.ID != "n1" {
		t.Fatalf("verify own notice: %+v, %v", got, err)
	}
	if _, err := VerifyRevocation(&other.PublicKey, r, now); !errors.Is(err, ErrRevocationSignature) {
		t.Errorf("notice checked against another key: %v, want ErrRevocationSignature", err)
	}
	forged := *r
	forged.Body = []byte(`{"id":"n1","device_id":"dev2","issued_at":"2027-01-15T08:00:00Z"}`)
	if _, err := VerifyRevocation(&ctl.PublicKey, &forged, now); !errors.Is(err, ErrRevocationSignature) {
		t.Errorf("notice with a changed body: %v, want ErrRevocationSignature", err)
	}
	if _, err := VerifyRevocation(&ctl.PublicKey, r, now.Add(RevocationMaxAge+time.Second)); !errors.Is(err, ErrRevocationStale) {
		t.Errorf("replayed old notice: %v, want ErrRevocationStale", err)
	}
	if _, err := VerifyRevocation(&ctl.PublicKey, r, now.Add(-RevocationMaxSkew-time.Second)); !errors.Is(err, ErrRevocationStale) {
		t.Errorf("notice from the future: %v, want ErrRevocationStale", err)
	}
}

func TestEpoch(t *testing.T) {
	t0 := time.Unix(int64(EpochLength/time.Second)*20000, 0)
	if Epoch(t0) != 20000 || Epoch(t0.Add(-time.Second)) != 19999 || Epoch(t0.Add(EpochLength-time.Second)) != 20000 {
		t.Errorf("epochs around %v: %d %d %d", t0, Epoch(t0.Add(-time.Second)), Epoch(t0), Epoch(t0.Add(EpochLength-time.Second)))
	}
	if Epoch(time.Unix(-5, 0)) != 0 {
		t.Error("negative time: want epoch 0")
	}
}

// FuzzVerifyRevocation: gossip delivers notices from other gateways;
// whatever the bytes, verification errs or returns a signed notice, and
// never panics.
func FuzzVerifyRevocation(f *testing.F) {
	key := testKey(f)
	now := time.Unix(1_800_000_000, 0)
	r, err := SignRevocation(key, RevocationNotice{ID: "n", DeviceID: "d", IssuedAt: now})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(r.Body, r.Sig)
	f.Add([]byte("{}"), []byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, body, sig []byte) {
		n, err := VerifyRevocation(&key.PublicKey, &Revocation{Body: body, Sig: sig}, now)
		if err == nil && (n.DeviceID == "" || string(body) != string(r.Body)) {
			t.Fatalf("accepted an unsigned notice: %q", body)
		}
	})
}
