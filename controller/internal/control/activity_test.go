package control

import (
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
)

// A gateway's activity report touches only the sessions of devices it
// serves, with times taken from the controller's clock minus the reported
// idle time.
func TestRecordActivityOnlyForOwnPeers(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := session.NewManager(session.ManagerConfig{Store: st, Limits: session.DefaultLimits()})
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Store: st, Sessions: m})
	gw := &agent{id: "gw-1", kind: "gateway", peers: map[string]bool{"dev-mine": true}}
	before := time.Now()
	s.recordActivity(slog.New(slog.DiscardHandler), gw, &controlproto.Activity{Devices: []controlproto.DeviceActivity{
		{DeviceID: "dev-mine", Idle: 2 * time.Second},
		{DeviceID: "dev-other", Idle: 0},
		{DeviceID: "dev-mine", Idle: -time.Hour}, // nonsense: clamped to now
	}})
	long := before.Add(-time.Hour)
	view := m.View([]store.Session{
		{ID: "s1", DeviceID: "dev-mine", StartedAt: long, LastActivity: long},
		{ID: "s2", DeviceID: "dev-other", StartedAt: long, LastActivity: long},
	})
	if got := view["dev-mine"].LastActivity; got.Before(before.Add(-time.Second)) || got.After(time.Now()) {
		t.Errorf("own peer's activity = %v, want about now (the latest report wins)", got)
	}
	if got := view["dev-other"].LastActivity; !got.Equal(long) {
		t.Errorf("a device the gateway does not serve was touched: %v", got)
	}
}

func TestStepUps(t *testing.T) {
	var su stepUps
	t0 := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	deny := func(app string, reason policy.Reason, at time.Time) controlproto.FlowEvent {
		return controlproto.FlowEvent{Action: controlproto.FlowDeny, DeviceID: "dev-1", App: app, Reason: reason.String(), Time: at}
	}
	if su.note(deny("ehr", policy.ReasonNoRule, t0)) {
		t.Fatal("a plain deny asked for step-up")
	}
	if !su.note(deny("ehr", policy.ReasonMFAStale, t0)) || su.note(deny("ehr", policy.ReasonMFAStale, t0.Add(time.Second))) {
		t.Fatal("the first MFA refusal is news, a repeat is not")
	}
	if !su.note(deny("pacs", policy.ReasonMFARequired, t0)) {
		t.Fatal("mfa-required is a step-up too")
	}
	sess := &session.Session{ID: "s1", Started: t0.Add(-time.Hour), MFAAt: t0.Add(-time.Hour)}
	got := su.forDevice("dev-1", sess)
	if len(got) != 2 || got[0].App != "ehr" || got[1].App != "pacs" {
		t.Fatalf("step-ups %+v, want ehr and pacs, sorted", got)
	}
	// A fresh MFA answers them.
	sess.MFAAt = t0.Add(time.Minute)
	if got := su.forDevice("dev-1", sess); len(got) != 0 {
		t.Fatalf("step-ups after a fresh MFA: %+v", got)
	}
	// Bounded per device.
	for i := range maxStepUpsPerDevice + 10 {
		su.note(deny(string(rune('a'+i%26))+string(rune('a'+i/26)), policy.ReasonMFAStale, t0))
	}
	if n := len(su.m["dev-1"]); n != maxStepUpsPerDevice {
		t.Fatalf("%d step-ups kept for one device, want at most %d", n, maxStepUpsPerDevice)
	}
}
