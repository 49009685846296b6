package control

import (
	"cmp"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
)

// maxActivityPerFrame bounds one activity report.
const maxActivityPerFrame = 100000

// recordActivity feeds a gateway's activity report to the session manager.
// Only devices that are peers of that gateway count: a gateway cannot keep
// alive the session of a device it does not serve.
func (s *Server) recordActivity(log *slog.Logger, a *agent, rep *controlproto.Activity) {
	if rep.Load != nil {
		s.noteLoad(a, *rep.Load)
	}
	if rep.Cluster != nil {
		s.noteClusterView(a, rep.Cluster)
	}
	if s.cfg.Sessions == nil {
		return
	}
	received := time.Now()
	devs := rep.Devices
	if len(devs) > maxActivityPerFrame {
		log.Warn("activity report too large; truncated", "devices", len(devs))
		devs = devs[:maxActivityPerFrame]
	}
	a.mu.Lock()
	peers := a.peers
	a.mu.Unlock()
	var foreign int
	for _, d := range devs {
		if !peers[d.DeviceID] {
			foreign++
			continue
		}
		idle := min(max(d.Idle, 0), 24*time.Hour)
		s.cfg.Sessions.Touch(d.DeviceID, received.Add(-idle))
	}
	if foreign > 0 {
		log.Debug("activity for devices this gateway does not serve; ignored", "devices", foreign)
	}
}

// stepUps remembers, per device, the apps a gateway refused for want of a
// fresh second factor, so the device's next map asks its user to sign in
// again. An entry goes once the session's MFA is newer than the refusal.
type stepUps struct {
	mu sync.Mutex
	m  map[string]map[string]controlproto.StepUp // device → app → step-up
}

// Bounds on what the step-up table keeps: per device, and devices in all
// (more than any controller serves; entries leave when answered).
const (
	maxStepUpsPerDevice = 64
	maxStepUpDevices    = 200000
)

// note records a refusal; it reports whether it is news.
func (t *stepUps) note(e controlproto.FlowEvent) bool {
	if e.DeviceID == "" || e.App == "" {
		return false
	}
	if e.Reason != policy.ReasonMFARequired.String() && e.Reason != policy.ReasonMFAStale.String() {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]map[string]controlproto.StepUp{}
	}
	apps := t.m[e.DeviceID]
	if apps == nil {
		if len(t.m) >= maxStepUpDevices {
			return false
		}
		apps = map[string]controlproto.StepUp{}
		t.m[e.DeviceID] = apps
	}
	_, known := apps[e.App]
	if !known && len(apps) >= maxStepUpsPerDevice {
		return false
	}
	apps[e.App] = controlproto.StepUp{App: e.App, At: e.Time}
	return !known
}

// forDevice returns the device's pending step-ups, dropping those its
// session's MFA (or the session's end) has answered.
func (t *stepUps) forDevice(id string, s *session.Session) []controlproto.StepUp {
	t.mu.Lock()
	defer t.mu.Unlock()
	apps := t.m[id]
	if len(apps) == 0 {
		return nil
	}
	var out []controlproto.StepUp
	for app, su := range apps {
		if s == nil || s.EndReason != session.EndNone || s.MFAAt.After(su.At) || s.Started.After(su.At) {
			delete(apps, app)
			continue
		}
		out = append(out, su)
	}
	if len(apps) == 0 {
		delete(t.m, id)
	}
	slices.SortFunc(out, func(a, b controlproto.StepUp) int { return cmp.Compare(a.App, b.App) })
	return out
}
