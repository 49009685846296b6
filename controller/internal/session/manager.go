package session

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
)

// ManagerConfig configures a Manager.
type ManagerConfig struct {
	Store store.Store // required, for reads
	// State makes the manager's changes (ending sessions, storing
	// activity); nil: one over Store.
	State  *state.State
	Limits Limits // validated by NewManager
	// Changed is called with the devices whose session crossed a
	// classification's idle limit (either way), so their maps are computed
	// again; session ends reach the maps through State. It must not block.
	Changed func(store.Change)
	Logger  *slog.Logger
	Now     func() time.Time // default time.Now
	// FlushEvery is how often activity is written to the store (it is
	// kept in memory between writes; a controller restart loses at most
	// this much, which only ends sessions earlier). Default 10 s.
	FlushEvery time.Duration
}

// Manager applies the limits as time passes: it keeps the activity the
// gateways report, ends sessions whose limit passed (audited, as the
// automatic logoff of 164.312(a)(2)(iii)), and asks for new maps when a
// session loses a classification of apps to its idle limit.
type Manager struct {
	cfg ManagerConfig
	log *slog.Logger

	mu       sync.Mutex
	activity map[string]time.Time  // device ID → last app traffic seen
	dirty    map[string]time.Time  // session ID → activity not yet stored
	allowed  map[string]restricted // session ID → classifications it may reach, as last seen
	classes  []Classification      // with their own idle limit, sorted
}

// NewManager returns a Manager; call Run.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if err := cfg.Limits.Validate(); err != nil {
		return nil, err
	}
	if cfg.Changed == nil {
		cfg.Changed = func(store.Change) {}
	}
	if cfg.State == nil {
		cfg.State = state.New(state.Config{Store: cfg.Store, Now: cfg.Now})
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.FlushEvery <= 0 {
		cfg.FlushEvery = 10 * time.Second
	}
	if len(cfg.Limits.Idle) > 63 {
		return nil, fmt.Errorf("session idle limits for %d classifications: at most 63", len(cfg.Limits.Idle))
	}
	return &Manager{
		cfg: cfg, log: cfg.Logger,
		activity: map[string]time.Time{}, dirty: map[string]time.Time{}, allowed: map[string]restricted{},
		classes: slices.Sorted(maps.Keys(cfg.Limits.Idle)),
	}, nil
}

// Limits returns the limits in force.
func (m *Manager) Limits() Limits { return m.cfg.Limits }

// Touch records app traffic of a device at a time (reports arrive out of
// order; the latest wins).
func (m *Manager) Touch(deviceID string, at time.Time) {
	m.mu.Lock()
	if at.After(m.activity[deviceID]) {
		m.activity[deviceID] = at
	}
	m.mu.Unlock()
}

// LastActivity is the latest traffic reported for the device's session
// since the store last learned of it (which it does only when a session
// nears its idle limit); false when none was reported lately.
func (m *Manager) LastActivity(deviceID string) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	at, ok := m.activity[deviceID]
	return at, ok
}

// View returns the given stored sessions, by device ID, with the activity
// reported since they were stored merged in. Ended sessions are included
// as they are (the maps tell their devices why).
func (m *Manager) View(stored []store.Session) map[string]*Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]*Session, len(stored))
	for _, st := range stored {
		s := fromStore(st)
		if st.Active() {
			if at, ok := m.activity[st.DeviceID]; ok && at.After(s.LastActivity) {
				s.Touch(at)
				m.dirty[st.ID] = s.LastActivity
			}
		}
		out[st.DeviceID] = s
	}
	return out
}

func fromStore(st store.Session) *Session {
	return &Session{
		ID: st.ID, DeviceID: st.DeviceID, User: st.User, Started: st.StartedAt,
		LastActivity: st.LastActivity, MFAAt: st.MFAAt, Ended: st.EndedAt, EndReason: EndReason(st.EndReason),
		ExpiresAt: st.ExpiresAt, BreakGlass: st.BreakGlass,
	}
}

// CheckEvery is how often the limits are checked: a twentieth of the
// shortest limit (the break-glass bound included), within [100 ms, 5 s].
// A session therefore ends at most that long after its limit.
func (l Limits) CheckEvery() time.Duration {
	shortest := min(l.ShortestIdle(), l.Absolute, l.BreakGlassBound())
	return min(max(shortest/20, 100*time.Millisecond), 5*time.Second)
}

// ActivityInterval is how often gateways should report activity: a fifth
// of the shortest idle limit, within [200 ms, 1 min].
func (l Limits) ActivityInterval() time.Duration {
	return min(max(l.ShortestIdle()/5, 200*time.Millisecond), time.Minute)
}

// ShortestIdle is the shortest idle limit of any classification.
func (l Limits) ShortestIdle() time.Duration {
	shortest := l.DefaultIdle
	for _, d := range l.Idle {
		shortest = min(shortest, d)
	}
	return shortest
}

// allowed is which classifications s may reach now, one bit each: bit 0
// the default limit, bit i+1 classes[i] (the classifications with their
// own limit, sorted).
func (l Limits) allowed(s *Session, classes []Classification, now time.Time) uint64 {
	var bits uint64
	if l.Allows(s, "", now) {
		bits |= 1
	}
	for i, c := range classes {
		if l.Allows(s, c, now) {
			bits |= 1 << (i + 1)
		}
	}
	return bits
}

// Run checks the limits every CheckEvery and flushes activity every
// FlushEvery until ctx ends (then flushes once more).
func (m *Manager) Run(ctx context.Context) {
	check := time.NewTicker(m.cfg.Limits.CheckEvery())
	defer check.Stop()
	flush := time.NewTicker(m.cfg.FlushEvery)
	defer flush.Stop()
	for {
		select {
		case <-ctx.Done():
			// The store may be closing too; a fresh context bounds the
			// last write.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			m.flush(fctx)
			cancel()
			return
		case <-check.C:
			if err := m.Check(ctx); err != nil && ctx.Err() == nil {
				m.log.Error("check session limits", "err", err)
			}
		case <-flush.C:
			m.flush(ctx)
		}
	}
}

// Check ends every active session past a limit now and asks for new maps
// if any session ended or lost or regained a classification. Run calls it;
// tests call it directly.
//
// It reads only the sessions that may be near a limit: idle, as stored,
// for at least the shortest idle limit, older than the absolute limit, or
// past their own time bound.
// The store's activity lags the manager's (flushed every FlushEvery),
// never leads it, so no session that reached a limit is missed; every
// other session may reach every app, which is what the manager assumes of
// a session it holds no restriction for.
func (m *Manager) Check(ctx context.Context) error {
	now := m.cfg.Now()
	l := m.cfg.Limits
	due, err := m.cfg.Store.ListSessionsDue(ctx, now.Add(-l.ShortestIdle()), now.Add(-l.Absolute), now)
	if err != nil {
		return err
	}
	view := m.View(due)
	all := uint64(1)<<(len(m.classes)+1) - 1
	var changed []string // devices
	held := make(map[string]bool, len(due))
	for _, st := range due {
		s := view[st.DeviceID]
		if why := l.Check(s, now); why != EndNone {
			if err := m.end(ctx, s); err != nil {
				return err
			}
			continue
		}
		bits := l.allowed(s, m.classes, now)
		m.mu.Lock()
		prev, had := m.allowed[s.ID]
		if !had {
			prev.bits = all
		}
		if bits != prev.bits {
			changed = append(changed, s.DeviceID)
		}
		if bits != all {
			m.allowed[s.ID] = restricted{bits: bits, device: s.DeviceID}
			held[s.ID] = true
		} else {
			delete(m.allowed, s.ID)
		}
		m.mu.Unlock()
	}
	m.mu.Lock()
	for id, r := range m.allowed {
		if !held[id] { // active again (no longer due), or ended elsewhere
			delete(m.allowed, id)
			changed = append(changed, r.device)
		}
	}
	// Activity older than every idle limit can no longer matter: its
	// session has ended or will at this check.
	for dev, at := range m.activity {
		if now.Sub(at) > l.maxIdle()+time.Minute {
			delete(m.activity, dev)
		}
	}
	m.mu.Unlock()
	if len(changed) > 0 {
		var c store.Change
		c.Merge(store.Change{Devices: changed}) // sorted, once each
		m.cfg.Changed(c)
	}
	return nil
}

// restricted is a session held to fewer classifications than all.
type restricted struct {
	bits   uint64
	device string
}

// end stores and audits the end of s (already ended by Check).
func (m *Manager) end(ctx context.Context, s *Session) error {
	ended, err := m.cfg.State.ExpireSession(ctx, s.ID, s.Ended, string(s.EndReason), s.LastActivity)
	if err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.allowed, s.ID)
	delete(m.dirty, s.ID)
	m.mu.Unlock()
	for _, e := range ended { // empty if an admin ended it meanwhile
		m.log.Info("session ended", "session", e.ID, "device", e.DeviceID, "user", e.User, "reason", e.EndReason)
	}
	return nil
}

func (m *Manager) flush(ctx context.Context) {
	m.mu.Lock()
	batch := m.dirty
	m.dirty = map[string]time.Time{}
	m.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	if err := m.cfg.State.TouchSessions(ctx, batch); err != nil {
		m.log.Warn("store session activity (kept in memory; retried)", "err", err)
		m.mu.Lock()
		for id, t := range batch {
			if t.After(m.dirty[id]) {
				m.dirty[id] = t
			}
		}
		m.mu.Unlock()
	}
}
