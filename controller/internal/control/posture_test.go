package control_test

import (
	"crypto/tls"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/control"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/posture"
)

// posturePolicy puts lis (phi) behind MFA and the disk check, and wiki
// (internal) behind nothing.
const posturePolicy = `version: 1
posture_checks:
  disk: {description: root filesystem encrypted, disk_encryption: true}
groups:
  lab: {members: [nurse]}
segments:
  lan: {prefixes: [10.20.0.0/24]}
apps:
  lis: {segment: lan, addresses: [10.20.0.5], ports: [tcp/443], classification: phi}
  wiki: {segment: lan, addresses: [10.20.0.6], ports: [tcp/443], classification: internal}
rules:
  - {name: lab-lis, from: [group:lab], to: [app:lis], when: {mfa: true, posture: [disk]}}
  - {name: lab-wiki, from: [group:lab], to: [app:wiki]}
`

func postureFrame(t *testing.T, disk posture.State) *controlproto.Frame {
	t.Helper()
	r := posture.Report{
		CollectedAt: time.Now().UTC(), OS: "debian", OSVersion: "12", OSName: "Debian GNU/Linux 12", Kernel: "6.1.0",
		DiskEncryption: posture.Check{State: disk}, Firewall: posture.Check{State: posture.Yes},
		ScreenLock: posture.Check{State: posture.Unknown, Detail: "not detectable"}, ClientVersion: "test",
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return rawPostureFrame(b)
}

// postureWorld makes the nurse, segment lan, its gateway and the nurse's
// device, and returns the gateway's and the device's TLS configurations.
func postureWorld(t *testing.T, h *harness) (gwTLS, nurseTLS *tls.Config) {
	t.Helper()
	if err := h.store.CreateUser(h.ctx, store.User{Name: "nurse"}); err != nil {
		t.Fatal(err)
	}
	if err := h.store.CreateSegment(h.ctx, store.Segment{Name: "lan", CIDRs: []netip.Prefix{pfx("10.20.0.0/24")}}); err != nil {
		t.Fatal(err)
	}
	_, gwTLS = h.enrollGateway(t, "gw-lan", "lan")
	_, nurseTLS = h.enrollDevice(t, "dev-nurse", "nurse")
	return gwTLS, nurseTLS
}

func rawPostureFrame(b []byte) *controlproto.Frame {
	return &controlproto.Frame{Type: controlproto.TypePosture, Posture: &controlproto.PostureReport{Report: b}}
}

func posturePeer(f *controlproto.Frame, device string) *policy.Session {
	if f.Type != controlproto.TypeGatewayMap {
		return nil
	}
	for _, p := range f.GatewayMap.Peers {
		if p.DeviceID == device {
			return p.Session
		}
	}
	return nil
}

// A client's posture report decides the posture checks in the session the
// gateway evaluates: a compliant report adds the check, a non-compliant
// one removes it. Bad reports (not JSON, unknown fields, bad values,
// oversized) are dropped without harm and audited as invalid; an unchanged
// report is not audited again; every stored report is audited as
// self-reported with each field.
func TestPostureReportDecidesGatewaySession(t *testing.T) {
	h := newHarness(t)
	gwTLS, nurseTLS := postureWorld(t, h)
	if _, err := h.store.PutPolicyVersion(h.ctx, 0, store.PolicyVersion{File: "p.yaml", Source: []byte(posturePolicy), Actor: "test", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	gw := h.start(t, "gateway", gwTLS, controlproto.Hello{Kind: controlproto.KindGateway, AgentVersion: "test", Endpoint: gwEndpoint})
	i, first := gw.waitFrame(t, 0, "gateway map with the nurse", func(f *controlproto.Frame) bool { return posturePeer(f, "dev-nurse") != nil })
	if p := posturePeer(first.f, "dev-nurse").Posture; len(p) != 0 {
		t.Fatalf("posture %v before any report", p)
	}
	nurse := h.start(t, "nurse", nurseTLS, controlproto.Hello{Kind: controlproto.KindClient, AgentVersion: "test"})
	_, cm := nurse.waitFrame(t, 0, "client map", func(f *controlproto.Frame) bool { return f.Type == controlproto.TypeClientMap })
	if got := cm.f.ClientMap.PostureInterval; got != control.DefaultPostureInterval {
		t.Errorf("client map posture interval %v, want %v", got, control.DefaultPostureInterval)
	}

	hasDisk := func(f *controlproto.Frame) bool {
		s := posturePeer(f, "dev-nurse")
		return s != nil && slices.Equal(s.Posture, []string{"disk"})
	}
	lacksDisk := func(f *controlproto.Frame) bool {
		s := posturePeer(f, "dev-nurse")
		return s != nil && len(s.Posture) == 0
	}
	nurse.cc.Send(postureFrame(t, posture.Yes))
	i, _ = gw.waitFrame(t, i+1, "the disk check in the nurse's session", hasDisk)

	// Unchanged (a later collection of the same posture), then bad ones,
	// then a change: the change is processed after all of them.
	nurse.cc.Send(postureFrame(t, posture.Yes))
	for _, bad := range [][]byte{
		[]byte(`not json`),
		[]byte(`{"collected_at":"2026-01-01T00:00:00Z","os":"debian","bogus":1}`),
		[]byte(`{"collected_at":"2026-01-01T00:00:00Z","disk_encryption":{"state":"maybe"}}`),
		[]byte(`{"collected_at":"2026-01-01T00:00:00Z","os":"` + strings.Repeat("a", posture.MaxSize) + `"}`),
		nil,
	} {
		nurse.cc.Send(rawPostureFrame(bad))
	}
	nurse.cc.Send(postureFrame(t, posture.No))
	gw.waitFrame(t, i+1, "the disk check gone from the nurse's session", lacksDisk)

	rec, err := h.store.GetPosture(h.ctx, "dev-nurse")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Report.DiskEncryption.State != posture.No || len(rec.Passing) != 0 {
		t.Fatalf("stored posture %+v", rec)
	}
	evs, err := h.store.ListAudit(h.ctx, store.AuditFilter{Type: "posture.report"})
	if err != nil {
		t.Fatal(err)
	}
	var outcomes []string
	for _, e := range slices.Backward(evs) { // oldest first
		outcomes = append(outcomes, e.Outcome)
		if e.Details["self_reported"] != "true" || e.Subject != "dev-nurse" {
			t.Errorf("audit event not marked self-reported: %+v", e)
		}
	}
	// One success per change; three of the five bad reports audited (then
	// only every 1000th), and the unchanged report not at all.
	want := []string{"success", "invalid", "invalid", "invalid", "success"}
	if !slices.Equal(outcomes, want) {
		t.Fatalf("posture audit outcomes %v, want %v", outcomes, want)
	}
	last := evs[0].Details
	for k, v := range map[string]string{"os": "debian", "os_version": "12", "kernel": "6.1.0", "disk_encryption": "no",
		"firewall": "yes", "screen_lock": "unknown", "client_version": "test", "changed": "true"} {
		if last[k] != v {
			t.Errorf("audit detail %s = %q, want %q (all: %v)", k, last[k], v, last)
		}
	}
}

// A posture report that goes stale (older than its check's max_report_age)
// takes the check out of the device's session at the next sweep, though
// nothing else changed: the only thing that moved is the clock.
func TestStalePostureReportExpiresCheck(t *testing.T) {
	_, gw, _, i, reported := agedPostureWorld(t, 100*time.Millisecond, "2s")
	_, f := gw.waitFrame(t, i+1, "the disk check gone once the report is 2 s old", func(f *controlproto.Frame) bool {
		s := posturePeer(f, "dev-nurse")
		return s != nil && len(s.Posture) == 0
	})
	if took := time.Since(reported); took < 2*time.Second {
		t.Fatalf("check removed %v after the report, before its max_report_age (2 s): %+v", took, f)
	}
}

// A report that changes nothing a map shows is stored without a change,
// so the snapshot the maps are patched from keeps the receive time of an
// earlier report. A map computed later that carries the device (here: its
// gateway's, for another device) must judge max_report_age by the newest
// report, not drop a check whose report is in fact fresh.
func TestRepeatedPostureReportStaysFresh(t *testing.T) {
	h, gw, nurse, i, _ := agedPostureWorld(t, time.Hour, "1s")
	// The same report every 200 ms, for twice max_report_age.
	for range 10 {
		time.Sleep(200 * time.Millisecond)
		nurse.cc.Send(postureFrame(t, posture.Yes))
	}
	time.Sleep(100 * time.Millisecond) // the last one stored
	// A change that names only another device of the gateway: its map
	// is computed again, the nurse's device's session in it from what
	// the server holds.
	h.enrollDevice(t, "dev-nurse-2", "nurse")
	h.srv.Changed(store.Change{Devices: []string{"dev-nurse-2"}})
	gw.waitFrame(t, i+1, "the second device in the gateway map", func(f *controlproto.Frame) bool { return posturePeer(f, "dev-nurse-2") != nil })
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		gw.mu.Lock()
		frames := slices.Clone(gw.frames[i+1:])
		gw.mu.Unlock()
		for _, r := range frames {
			if s := posturePeer(r.f, "dev-nurse"); s != nil && len(s.Posture) == 0 {
				t.Fatalf("the disk check was dropped although the latest report is fresh: %+v", s)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// agedPostureWorld runs postureWorld under the posture policy with the
// disk check's max_report_age set, a posture sweep every sweep, and the
// nurse reporting an encrypted disk once; it returns when the gateway's
// map shows the check passing (at frame i), with when the report was sent
// (taken before sending: the controller dates it on arrival, no earlier).
func agedPostureWorld(t *testing.T, sweep time.Duration, maxAge string) (h *harness, gw, nurse *runningAgent, i int, reported time.Time) {
	t.Helper()
	h = newHarness(t, func(c *control.Config) { c.PostureSweep = sweep })
	gwTLS, nurseTLS := postureWorld(t, h)
	src := strings.Replace(posturePolicy, "disk_encryption: true}", "disk_encryption: true, max_report_age: "+maxAge+"}", 1)
	if _, err := h.store.PutPolicyVersion(h.ctx, 0, store.PolicyVersion{File: "p.yaml", Source: []byte(src), Actor: "test", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	gw = h.start(t, "gateway", gwTLS, controlproto.Hello{Kind: controlproto.KindGateway, AgentVersion: "test", Endpoint: gwEndpoint})
	i, _ = gw.waitFrame(t, 0, "gateway map with the nurse", func(f *controlproto.Frame) bool { return posturePeer(f, "dev-nurse") != nil })
	nurse = h.start(t, "nurse", nurseTLS, controlproto.Hello{Kind: controlproto.KindClient, AgentVersion: "test"})
	reported = time.Now()
	nurse.cc.Send(postureFrame(t, posture.Yes))
	i, _ = gw.waitFrame(t, i+1, "the disk check in the nurse's session", func(f *controlproto.Frame) bool {
		s := posturePeer(f, "dev-nurse")
		return s != nil && slices.Equal(s.Posture, []string{"disk"})
	})
	return h, gw, nurse, i, reported
}
