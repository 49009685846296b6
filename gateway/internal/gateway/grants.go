package gateway

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"time"

	"github.com/cordonhq/cordon/gateway/internal/lastmap"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// Fail static, fail closed. A map grants access for its grant lifetime
// after the gateway last heard from the controller (a map, or a control
// connection that is up); the gateway saves it, with that validity, so a
// restart while the controller is away serves the same clinicians. Past
// the validity the gateway admits nobody until the controller is back,
// and each device drops out at its session's absolute limit whatever the
// gateway hears: the controller going away never extends anyone's access.
//
//	map pushed ──▶ validUntil = now + lifetime, saved ─┐
//	connected  ──▶ validUntil renewed every keepValidEvery, saved
//	                                                   │
//	restart ──▶ saved map served while now < validUntil
//	now ≥ peer.ExpiresAt ──▶ that peer removed
//	now ≥ validUntil     ──▶ every peer removed, nothing forwarded

// grantLifetime is m's lifetime (older controllers send none).
func grantLifetime(m *controlproto.GatewayMap) time.Duration {
	if m.GrantLifetime > 0 {
		return m.GrantLifetime
	}
	return controlproto.DefaultGrantLifetime
}

// keepValidEvery is how often a connected gateway renews (and saves) the
// validity of its map: often enough that a restart loses little of it.
func keepValidEvery(lifetime time.Duration) time.Duration {
	return min(max(lifetime/10, time.Second), 15*time.Minute)
}

// livePeers returns the peers still admitted at now, and the next time one
// of them (or the whole map) expires; zero when nothing will.
func livePeers(peers []controlproto.GatewayPeer, now, validUntil time.Time) ([]controlproto.GatewayPeer, time.Time) {
	if !now.Before(validUntil) {
		return nil, time.Time{}
	}
	next := validUntil
	live := make([]controlproto.GatewayPeer, 0, len(peers))
	for _, p := range peers {
		if p.ExpiresAt.IsZero() {
			live = append(live, p)
			continue
		}
		if !now.Before(p.ExpiresAt) {
			continue
		}
		live = append(live, p)
		if p.ExpiresAt.Before(next) {
			next = p.ExpiresAt
		}
	}
	return live, next
}

// scheduleExpiryLocked arms the timer that applies the map again at next.
func (g *gw) scheduleExpiryLocked(now, next time.Time) {
	if g.expiry != nil {
		g.expiry.Stop()
		g.expiry = nil
	}
	if next.IsZero() {
		return
	}
	g.expiry = time.AfterFunc(next.Sub(now), func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		now := g.now()
		before := len(g.want)
		if err := g.applyLocked(now); err != nil {
			g.log.Error("apply expiries", "err", err)
			return
		}
		if !now.Before(g.validUntil) {
			g.log.Warn("grants expired: the controller was not heard from for the grant lifetime; admitting nobody until it is back",
				"valid_until", g.validUntil, "grant_lifetime", grantLifetime(g.cur), "peers_removed", before)
			return
		}
		if n := before - len(g.want); n > 0 {
			g.log.Info("sessions reached their absolute limit at this gateway", "peers_removed", n, "peers", len(g.want))
		}
	})
}

// saveLocked hands the current map and its validity to the saver.
func (g *gw) saveLocked(now time.Time) {
	if g.cur == nil {
		return
	}
	g.toSave = &lastmap.Record{Map: g.cur, ValidUntil: g.validUntil, SavedAt: now}
	select {
	case g.saveNow <- struct{}{}:
	default:
	}
}

// saver writes the newest record handed to it until ctx ends, then what
// is still pending. A write (synced) is slow next to applying a map: the
// map takes effect, and is acknowledged, without waiting for it. Every
// endpointCheck it also looks whether the peers' endpoints moved since the
// last save (a clinician connected, or roamed), and saves them if so.
func (g *gw) saver(ctx context.Context) {
	var last *lastmap.Record
	save := func(r *lastmap.Record) {
		if err := g.saved.Save(*r); err != nil {
			// Not fatal: the gateway serves on; a restart without the
			// controller would then start with an older map or nobody.
			g.log.Error("save the map for restarts", "err", err)
			return
		}
		last = r
	}
	pending := func() *lastmap.Record {
		g.mu.Lock()
		defer g.mu.Unlock()
		r := g.toSave
		g.toSave = nil
		return r
	}
	check := time.NewTicker(endpointCheck)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			if r := pending(); r != nil {
				r.Endpoints = g.recentEndpoints(r.SavedAt)
				save(r)
			}
			return
		case <-g.saveNow:
			if r := pending(); r != nil {
				r.Endpoints = g.recentEndpoints(r.SavedAt)
				save(r)
			}
		case <-check.C:
			if last == nil {
				continue
			}
			eps := g.recentEndpoints(g.now())
			if !maps.Equal(eps, last.Endpoints) {
				r := *last
				r.Endpoints = eps
				save(&r)
			}
		}
	}
}

// endpointCheck is how often the saver looks for moved endpoints.
const endpointCheck = 5 * time.Second

// endpointFresh bounds how long ago a peer must have handshaken for its
// endpoint to be worth saving: a session lives at most 3 minutes without
// a new handshake (WireGuard's Reject-After-Time), and an endpoint older
// than a few of those is likely stale (the device roamed or left).
const endpointFresh = 10 * time.Minute

// recentEndpoints returns where the peers that handshook lately are.
func (g *gw) recentEndpoints(now time.Time) map[wgkey.Public]netip.AddrPort {
	st, err := g.wg.Status()
	if err != nil {
		g.log.Warn("read peer endpoints to save", "err", err)
		return nil
	}
	out := map[wgkey.Public]netip.AddrPort{}
	for _, p := range st {
		if p.Endpoint == "" || p.LastHandshake.IsZero() || now.Sub(p.LastHandshake) > endpointFresh {
			continue
		}
		if ap, err := netip.ParseAddrPort(p.Endpoint); err == nil {
			out[p.PublicKey] = ap
		}
	}
	return out
}

// restore serves the saved map, if it is still valid, until the
// controller is reached.
func (g *gw) restore() {
	rec, err := g.saved.Load()
	switch {
	case errors.Is(err, lastmap.ErrNone):
		g.log.Info("no saved map: admitting nobody until the controller pushes one")
		return
	case err != nil:
		g.log.Error("ignoring the saved map: admitting nobody until the controller pushes one", "err", err)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if !now.Before(rec.ValidUntil) {
		g.log.Warn("the saved map's grants expired: admitting nobody until the controller pushes a map",
			"revision", rec.Map.Revision, "valid_until", rec.ValidUntil)
		return
	}
	g.cur, g.validUntil = rec.Map, rec.ValidUntil
	if err := g.applyLocked(now); err != nil {
		g.cur, g.validUntil = nil, time.Time{}
		g.log.Error("ignoring the saved map: it does not apply", "err", err)
		return
	}
	// Their sessions died with the old process, and without the
	// controller nobody tells them: handshake with them first.
	reached := 0
	for _, p := range g.want {
		if ep, ok := rec.Endpoints[p.PublicKey]; ok {
			if err := g.wg.Handshake(p.PublicKey, ep); err != nil {
				g.log.Warn("handshake with a saved peer", "peer", p.PublicKey.String(), "err", err)
				continue
			}
			reached++
		}
	}
	g.log.Info("serving the saved map until the controller is reached", "revision", rec.Map.Revision,
		"peers", len(g.want), "handshakes_started", reached, "valid_until", rec.ValidUntil, "saved_at", rec.SavedAt)
}

// keepValid renews the map's validity while the control connection is up,
// and saves it, until ctx ends.
func (g *gw) keepValid(ctx context.Context, connected func() bool) {
	for {
		g.mu.Lock()
		every := keepValidEvery(controlproto.DefaultGrantLifetime)
		if g.cur != nil {
			every = keepValidEvery(grantLifetime(g.cur))
		}
		g.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		if !connected() {
			continue
		}
		g.mu.Lock()
		if g.cur != nil && !g.closed {
			now := g.now()
			g.validUntil = now.Add(grantLifetime(g.cur))
			_, next := livePeers(g.cur.Peers, now, g.validUntil)
			g.scheduleExpiryLocked(now, next)
			g.saveLocked(now)
		}
		g.mu.Unlock()
	}
}
