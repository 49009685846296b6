package auth

import (
	"net/netip"
	"strings"
	"sync"
	"time"
)

// ThrottleConfig tunes [Throttle]. Zero fields take the defaults shown.
type ThrottleConfig struct {
	FreeUserAttempts int           // attempts per user name before delays start: 5
	FreeIPAttempts   int           // attempts per source before delays start: 30 (hospital NAT)
	BaseDelay        time.Duration // first delay, doubled per further attempt: 2s
	MaxDelay         time.Duration // longest delay (lockout window): 15m
	Forget           time.Duration // counter resets after this long without an attempt: 1h
	MaxEntries       int           // per table; bounds memory: 100000
}

func (c *ThrottleConfig) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.FreeUserAttempts, 5)
	def(&c.FreeIPAttempts, 30)
	def(&c.MaxEntries, 100_000)
	defd(&c.BaseDelay, 2*time.Second)
	defd(&c.MaxDelay, 15*time.Minute)
	defd(&c.Forget, time.Hour)
}

// Throttle slows password guessing with in-memory counters per user name
// and per source address (IPv6 sources per /64). Every attempt counts when
// it starts — so parallel guesses are counted too — and a successful login
// takes it back. Past the free attempts, each attempt locks the key for a
// delay that doubles up to MaxDelay. Safe for concurrent use.
//
// A user-name lockout lets anyone delay a known user's logins; the cap on
// the delay keeps that an annoyance rather than a denial of service.
type Throttle struct {
	cfg   ThrottleConfig
	mu    sync.Mutex
	users map[string]*counter
	ips   map[string]*counter
}

type counter struct {
	n      int
	last   time.Time
	locked time.Time // no attempts before this
}

// NewThrottle returns a throttle with cfg (zero fields defaulted).
func NewThrottle(cfg ThrottleConfig) *Throttle {
	cfg.setDefaults()
	return &Throttle{cfg: cfg, users: map[string]*counter{}, ips: map[string]*counter{}}
}

// Allow records the start of a login attempt for user from source (an IP
// address, as in http.Request.RemoteAddr without the port). It returns 0
// when the attempt may proceed, or how long the caller must wait; a refused
// attempt is not counted.
func (t *Throttle) Allow(user, source string, now time.Time) (retryAfter time.Duration) {
	uk, ik := userKey(user), SourceKey(source)
	t.mu.Lock()
	defer t.mu.Unlock()
	u := t.getLocked(t.users, uk, now)
	i := t.getLocked(t.ips, ik, now)
	if w := max(u.locked.Sub(now), i.locked.Sub(now)); w > 0 {
		return w
	}
	t.countLocked(u, t.cfg.FreeUserAttempts, now)
	t.countLocked(i, t.cfg.FreeIPAttempts, now)
	return 0
}

// Succeeded takes back the attempt of a login that succeeded: the user's
// counter is cleared, the source's is reduced by one (other users behind
// the same address keep their share).
func (t *Throttle) Succeeded(user, source string) {
	uk, ik := userKey(user), SourceKey(source)
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.users, uk)
	if c, ok := t.ips[ik]; ok {
		c.n = max(c.n-1, 0)
		if c.n < t.cfg.FreeIPAttempts {
			c.locked = time.Time{}
		}
	}
}

func (t *Throttle) countLocked(c *counter, free int, now time.Time) {
	c.n++
	c.last = now
	if over := c.n - free; over > 0 {
		d := t.cfg.BaseDelay
		for range over - 1 {
			if d >= t.cfg.MaxDelay {
				break
			}
			d *= 2
		}
		c.locked = now.Add(min(d, t.cfg.MaxDelay))
	}
}

// getLocked returns the counter for k, creating it; it resets counters idle
// for Forget and keeps the table within MaxEntries.
func (t *Throttle) getLocked(m map[string]*counter, k string, now time.Time) *counter {
	if c, ok := m[k]; ok {
		if now.Sub(c.last) > t.cfg.Forget && !now.Before(c.locked) {
			*c = counter{}
		}
		return c
	}
	if len(m) >= t.cfg.MaxEntries {
		t.evictLocked(m, now)
	}
	c := &counter{}
	m[k] = c
	return c
}

// evictLocked drops idle entries, or else the one idle longest. It runs only
// when a table is full, so its linear cost is paid rarely.
func (t *Throttle) evictLocked(m map[string]*counter, now time.Time) {
	var oldestK string
	var oldest *counter
	for k, c := range m {
		if now.Sub(c.last) > t.cfg.Forget && !now.Before(c.locked) {
			delete(m, k)
			continue
		}
		if oldest == nil || c.last.Before(oldest.last) {
			oldestK, oldest = k, c
		}
	}
	if len(m) >= t.cfg.MaxEntries && oldest != nil {
		delete(m, oldestK)
	}
}

func userKey(u string) string { return strings.ToLower(u) }

// SourceKey is the key a source address is limited under: IPv6 sources
// are grouped by /64, which one host usually holds whole.
func SourceKey(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return s
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}
