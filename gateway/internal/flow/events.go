package flow

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/packet"
)

// denySet remembers recently denied flows so that only the first packet of
// each produces a deny event, and rate-limits the events it lets through.
//
// It is a fixed-size, two-way set-associative cache: memory does not grow
// with the number of denied flows (a port scan overwrites old entries; the
// worst a collision costs is a repeated event, which the rate limit caps).
// Entries expire after ttl, so a flow denied again later is recorded again.
type denySet struct {
	mu     sync.Mutex
	seed   uint64
	mask   uint64 // number of sets - 1
	slots  []denySlot
	ttl    int64
	tokens float64
	rate   float64 // tokens per nanosecond
	burst  float64
	last   int64
}

type denySlot struct {
	key     key
	expires int64 // 0: empty
}

// newDenySet returns a set of about size entries (rounded up to a power of
// two, at least 2).
func newDenySet(size int, ttl time.Duration, perSecond float64, burst int, seed uint64) *denySet {
	sets := 1
	for sets*2 < size {
		sets *= 2
	}
	return &denySet{
		seed:   seed,
		mask:   uint64(sets - 1),
		slots:  make([]denySlot, 2*sets),
		ttl:    int64(ttl),
		tokens: float64(burst),
		rate:   perSecond / 1e9,
		burst:  float64(burst),
	}
}

// Outcomes of denySet.admit.
const (
	denyEmit       = iota // first packet of a denied flow: emit an event
	denyDuplicate         // the flow's event was already emitted (or suppressed)
	denySuppressed        // a new denied flow, but over the event rate limit
)

// admit records that flow k was denied at now and says whether to emit an
// event for it.
func (s *denySet) admit(t *packet.Tuple, now int64) int {
	k := keyOf(t)
	i := int(k.hash(s.seed)&s.mask) * 2
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.slots[i : i+2 : i+2]
	for j := range set {
		if set[j].expires > now && set[j].key == k {
			return denyDuplicate
		}
	}
	// Replace the slot that expires first (an empty one expires at 0).
	v := &set[0]
	if set[1].expires < v.expires {
		v = &set[1]
	}
	v.key, v.expires = k, now+s.ttl

	s.tokens += float64(now-s.last) * s.rate
	s.last = now
	if s.tokens > s.burst {
		s.tokens = s.burst
	}
	if s.tokens < 1 {
		return denySuppressed
	}
	s.tokens--
	return denyEmit
}

// emit hands ev to the consumer without blocking; a full queue drops it
// and counts the drop.
func (a *Authorizer) emit(ev controlproto.FlowEvent) {
	if a.events == nil {
		return
	}
	select {
	case a.events <- ev:
	default:
		n := a.stats.eventsDropped.Add(1)
		if s, ok := a.logAllowed(&a.logEventsDropped); ok {
			a.log.Warn("flow event queue full: the consumer is not keeping up; events dropped",
				logKeyEventsDropped, n, logKeySuppressed, s)
		}
	}
}

func flowEvent(t time.Time, action controlproto.FlowAction, k packet.Tuple, m flowMeta, reason string) controlproto.FlowEvent {
	return controlproto.FlowEvent{
		Time:     t,
		Action:   action,
		DeviceID: m.device,
		User:     m.user,
		App:      m.app,
		Rule:     m.rule,
		Reason:   reason,
		Proto:    k.Proto,
		Src:      k.SrcAddrPort(),
		Dst:      k.DstAddrPort(),

		Session:       m.session,
		PolicyVersion: m.policyVersion,
	}
}

// endEvent is the end record of flow f, removed from the table at mono
// time now for reason (a controlproto End* constant); detail, if not
// empty, says more (the policy's reason for a cut).
func (a *Authorizer) endEvent(f *flow, m flowMeta, now int64, reason, detail string) controlproto.FlowEvent {
	ev := flowEvent(a.now(), controlproto.FlowEnd, f.key, m, detail)
	ev.EndReason = reason
	ev.PacketsToApp, ev.BytesToApp = f.pktsToApp.Load(), f.bytesToApp.Load()
	ev.PacketsToClient, ev.BytesToClient = f.pktsToClient.Load(), f.bytesToClient.Load()
	ev.Duration = time.Duration(max(now-f.opened, 0))
	return ev
}

// ended emits the end record of flow f (not of a local service's).
func (a *Authorizer) ended(f *flow, m flowMeta, now int64, reason, detail string) {
	if m.local {
		return
	}
	a.stats.flowsEnded.Add(1)
	a.emit(a.endEvent(f, m, now, reason, detail))
}

// limiter lets one log line through per interval and counts the rest.
type limiter struct {
	next       atomic.Int64 // monotonic nanoseconds
	suppressed atomic.Uint64
}

// logEvery is how often a per-packet condition may log.
const logEvery = int64(10 * time.Second)

// logAllowed reports whether a rate-limited log line may be written now,
// and how many were suppressed since the last one. Callers check it before
// building log arguments, which allocate.
func (a *Authorizer) logAllowed(l *limiter) (suppressed uint64, ok bool) {
	now := a.clock.Load()
	next := l.next.Load()
	if now < next || !l.next.CompareAndSwap(next, now+logEvery) {
		l.suppressed.Add(1)
		return 0, false
	}
	return l.suppressed.Swap(0), true
}
