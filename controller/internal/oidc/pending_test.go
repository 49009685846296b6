package oidc

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/internal/oidctest"
	"golang.org/x/oauth2"
)

// testSource is the client address of the tests that need only one.
const testSource = "192.0.2.1"

func (r *rig) startCode(t *testing.T, src string) error {
	t.Helper()
	ch := oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())
	_, err := r.m.StartCode(t.Context(), src, "test", "http://127.0.0.1:9/cb", ch)
	return err
}

func (r *rig) pendingOf(src string) (code, device int) {
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	for _, l := range r.m.pending {
		if l.source == auth.SourceKey(src) {
			if l.device != nil {
				device++
			} else {
				code++
			}
		}
	}
	return code, device
}

func busyErr(t *testing.T, err error) *BusyError {
	t.Helper()
	var b *BusyError
	if !errors.As(err, &b) || !errors.Is(err, ErrBusy) {
		t.Fatalf("start: %v, want a *BusyError wrapping ErrBusy", err)
	}
	return b
}

// One source flooding the start route gets its share, then 429-style
// refusals (audited once), and cannot stop another source; its expired
// logins are evicted rather than refusing it forever.
func TestPendingPerSource(t *testing.T) {
	r := newRig(t, oidctest.Options{}, nil)
	const flood, other = "198.51.100.7", "203.0.113.9"
	for i := range maxPendingPerSource {
		if err := r.startCode(t, flood); err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
	}
	b := busyErr(t, r.startCode(t, flood))
	if !b.PerSource || b.Device || !b.Audit || b.RetryAfter < loginTTL-time.Minute || b.RetryAfter > loginTTL {
		t.Errorf("first refusal: %+v, want per source, audited, retry in about %v", b, loginTTL)
	}
	for range 100 {
		if b := busyErr(t, r.startCode(t, flood)); b.Audit {
			t.Fatal("a further refusal in the same window is flagged for audit again")
		}
	}
	if code, _ := r.pendingOf(flood); code != maxPendingPerSource {
		t.Errorf("flooding source holds %d pending, want %d", code, maxPendingPerSource)
	}
	// IPv6 addresses count per /64 (and a v4-mapped address as its v4).
	for i := range maxPendingPerSource {
		if err := r.startCode(t, fmt.Sprintf("2001:db8:1:2::%x", i+1)); err != nil {
			t.Fatalf("v6 start %d: %v", i, err)
		}
	}
	busyErr(t, r.startCode(t, "2001:db8:1:2:ffff::1"))
	busyErr(t, r.startCode(t, "::ffff:"+flood))

	if err := r.startCode(t, other); err != nil {
		t.Fatalf("another source is locked out by the flood: %v", err)
	}

	// Once the flood's logins expire, they are evicted and it may start
	// again; the other source's login is not touched by that eviction.
	r.offset.Add(int64(loginTTL + time.Second))
	if err := r.startCode(t, flood); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if code, _ := r.pendingOf(flood); code != 1 {
		t.Errorf("after expiry the source holds %d pending, want 1 (expired ones evicted)", code)
	}
	r.m.mu.Lock()
	u := r.m.sources[auth.SourceKey(flood)]
	n := len(r.m.sources)
	r.m.mu.Unlock()
	if u == nil || u.code != 1 || len(u.logins) != 1 || r.m.reserved != 0 {
		t.Errorf("source accounting after eviction: %+v, reserved %d", u, r.m.reserved)
	}
	if n != 3 {
		t.Errorf("%d sources tracked, want 3", n)
	}
}

// The global cap is the last resort against many sources: when it is
// full, expired logins are swept before refusing.
func TestPendingGlobalCap(t *testing.T) {
	r := newRig(t, oidctest.Options{}, nil)
	for i := range maxPending / maxPendingPerSource {
		src := fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)
		for range maxPendingPerSource {
			if err := r.startCode(t, src); err != nil {
				t.Fatalf("source %s: %v", src, err)
			}
		}
	}
	b := busyErr(t, r.startCode(t, "203.0.113.1"))
	if b.PerSource || !b.Audit || b.RetryAfter <= 0 {
		t.Errorf("full controller: %+v, want a global refusal, audited", b)
	}
	if b := busyErr(t, r.startCode(t, "203.0.113.2")); b.Audit {
		t.Error("second global refusal flagged for audit again")
	}
	r.offset.Add(int64(loginTTL + time.Second))
	if err := r.startCode(t, "203.0.113.1"); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	if len(r.m.pending) != 1 || len(r.m.sources) != 1 {
		t.Errorf("after the sweep: %d pending from %d sources, want 1 and 1", len(r.m.pending), len(r.m.sources))
	}
}

func TestPendingDevicePerSource(t *testing.T) {
	r := newRig(t, oidctest.Options{DevicePoll: time.Second}, nil)
	const flood, other = "198.51.100.7", "203.0.113.9"
	for i := range maxDevicePendingPerSource {
		if _, err := r.m.StartDevice(t.Context(), flood, "test"); err != nil {
			t.Fatalf("device start %d: %v", i, err)
		}
	}
	b := busyErr(t, func() error { _, err := r.m.StartDevice(t.Context(), flood, "test"); return err }())
	if !b.PerSource || !b.Device || !b.Audit {
		t.Errorf("device refusal: %+v", b)
	}
	// The device cap is separate from the code flow's.
	if err := r.startCode(t, flood); err != nil {
		t.Errorf("code flow from a source at its device cap: %v", err)
	}
	if _, err := r.m.StartDevice(t.Context(), other, "test"); err != nil {
		t.Errorf("another source's device sign-in: %v", err)
	}
	if _, dev := r.pendingOf(flood); dev != maxDevicePendingPerSource {
		t.Errorf("flooding source holds %d device logins, want %d", dev, maxDevicePendingPerSource)
	}
	if n := r.m.devices.Load(); n != maxDevicePendingPerSource+1 {
		t.Errorf("%d device polls running, want %d (refusals must not count)", n, maxDevicePendingPerSource+1)
	}
}

// Device flows started while the Manager closes either fail or are waited
// for by Close: no poll goroutine outlives it (run with -race: a WaitGroup
// Add concurrent with Wait is reported).
func TestStartDeviceDuringClose(t *testing.T) {
	for round := range 5 {
		r := newRig(t, oidctest.Options{DevicePoll: time.Second}, nil)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 24 {
			wg.Go(func() {
				<-start
				r.m.StartDevice(t.Context(), fmt.Sprintf("10.%d.0.%d", round, i+1), "test")
			})
		}
		close(start)
		time.Sleep(time.Duration(round) * 2 * time.Millisecond)
		r.m.Close()
		wg.Wait()
		if n := r.m.devices.Load(); n != 0 {
			t.Fatalf("round %d: %d device polls or reservations left after Close", round, n)
		}
		if _, err := r.m.StartDevice(t.Context(), testSource, "test"); err == nil {
			t.Fatal("StartDevice after Close succeeded")
		}
	}
}
