package auth

import (
	"sync"
	"time"
)

// AlertConfig tunes [FailureAlert]. Zero fields take the defaults shown.
type AlertConfig struct {
	Threshold  int           // failures within Window that raise an alert: 5
	Window     time.Duration // sliding window: 15m
	MaxEntries int           // per table; bounds memory: 100000
}

func (c *AlertConfig) setDefaults() {
	if c.Threshold <= 0 {
		c.Threshold = 5
	}
	if c.Window <= 0 {
		c.Window = 15 * time.Minute
	}
	if c.MaxEntries <= 0 {
		c.MaxEntries = 100_000
	}
}

// Alert is raised when a user name or a source reaches the threshold of
// failed sign-ins within the window.
type Alert struct {
	Kind     string    // AlertUser or AlertSource
	Key      string    // the user name (lowercased) or source (IPv6 per /64)
	Failures int       // failures within the window (the threshold)
	First    time.Time // the oldest of them
	Window   time.Duration
}

// Alert kinds.
const (
	AlertUser   = "user"
	AlertSource = "source"
)

// FailureAlert counts failed sign-ins per user name and per source in a
// sliding window and raises an [Alert] when either reaches the threshold;
// it then stays quiet for that key for one window, so a sustained attack
// raises one alert per window, not one per attempt. It complements
// [Throttle], which slows the attempts down. Safe for concurrent use.
type FailureAlert struct {
	cfg   AlertConfig
	mu    sync.Mutex
	users map[string]*failures
	ips   map[string]*failures
}

type failures struct {
	times   []time.Time // the latest failures, oldest first, at most Threshold
	alerted time.Time   // when the last alert for this key was raised
}

// NewFailureAlert returns an alerter with cfg (zero fields defaulted).
func NewFailureAlert(cfg AlertConfig) *FailureAlert {
	cfg.setDefaults()
	return &FailureAlert{cfg: cfg, users: map[string]*failures{}, ips: map[string]*failures{}}
}

// Config returns the effective configuration.
func (f *FailureAlert) Config() AlertConfig { return f.cfg }

// Failed records a failed sign-in for user from source and returns the
// alerts it raises (none, one, or one per kind).
func (f *FailureAlert) Failed(user, source string, now time.Time) []Alert {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Alert
	if a, ok := f.countLocked(f.users, AlertUser, userKey(user), now); ok {
		out = append(out, a)
	}
	if a, ok := f.countLocked(f.ips, AlertSource, SourceKey(source), now); ok {
		out = append(out, a)
	}
	return out
}

func (f *FailureAlert) countLocked(m map[string]*failures, kind, key string, now time.Time) (Alert, bool) {
	e, ok := m[key]
	if !ok {
		if len(m) >= f.cfg.MaxEntries {
			f.evictLocked(m, now)
		}
		e = &failures{}
		m[key] = e
	}
	cut := now.Add(-f.cfg.Window)
	i := 0
	for i < len(e.times) && !e.times[i].After(cut) {
		i++
	}
	e.times = append(e.times[i:], now)
	if len(e.times) > f.cfg.Threshold {
		e.times = e.times[len(e.times)-f.cfg.Threshold:]
	}
	if len(e.times) < f.cfg.Threshold || (!e.alerted.IsZero() && now.Sub(e.alerted) < f.cfg.Window) {
		return Alert{}, false
	}
	e.alerted = now
	return Alert{Kind: kind, Key: key, Failures: len(e.times), First: e.times[0], Window: f.cfg.Window}, true
}

// evictLocked drops entries with nothing in the window, or else the one
// whose latest failure is oldest.
func (f *FailureAlert) evictLocked(m map[string]*failures, now time.Time) {
	var oldestK string
	var oldest time.Time
	for k, e := range m {
		last := e.times[len(e.times)-1]
		if now.Sub(last) > f.cfg.Window && now.Sub(e.alerted) > f.cfg.Window {
			delete(m, k)
			continue
		}
		if oldestK == "" || last.Before(oldest) {
			oldestK, oldest = k, last
		}
	}
	if len(m) >= f.cfg.MaxEntries && oldestK != "" {
		delete(m, oldestK)
	}
}
