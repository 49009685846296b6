package control

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Flow records from gateways (capability 11). A gateway spools its flow
// events to disk and numbers them; each flow_events frame is committed
// with the highest number held for the gateway's spool in one transaction
// (state.RecordFlowBatch), and only then acknowledged (flow_ack), so a
// resend after a crash on either side is recorded once and nothing
// acknowledged is lost. Frames without a spool ID (gateways below 11) are
// recorded as they come, unacknowledged, as before.
//
// Every frame of a capability-11 gateway carries its clock (SentAt) and its
// spool's state; the controller raises audit.clock.skew when the clock is
// off by more than Config.ClockSkewThreshold and audit.spool.full when the
// spool is full, each once per onset and once (cleared) when it is over.
// The onsets are kept in memory: after a controller restart a condition
// still present is raised again.

// DefaultClockSkewThreshold is Config.ClockSkewThreshold's default: far
// above NTP's error and a frame's transit, far below what misleads an
// investigator reading two gateways' records side by side.
const DefaultClockSkewThreshold = 2 * time.Second

// gatewayHealth is the alerts raised per gateway.
type gatewayHealth struct {
	mu        sync.Mutex
	skewed    map[string]bool
	spoolFull map[string]bool
}

// recordFlows records a gateway's flow events and acknowledges numbered
// ones.
func (s *Server) recordFlows(ctx context.Context, log *slog.Logger, a *agent, w *quic.Stream, fe *controlproto.FlowEvents) {
	received := s.cfg.Now().UTC()
	if !fe.SentAt.IsZero() {
		s.checkSkew(ctx, log, a.id, fe.SentAt, received)
	}
	if fe.Spool != nil {
		s.checkSpool(ctx, log, a.id, fe.Spool)
	}
	evs := fe.Events
	if len(evs) > maxEventsPerFrame {
		// Not recorded in part: a numbered batch is resent whole (it is
		// not acknowledged); an unnumbered one is lost, and said so.
		log.Error("flow event batch too large; dropped (the gateway resends numbered batches; upgrade it if it keeps happening)",
			"events", len(evs), "max", maxEventsPerFrame)
		return
	}
	a.mu.Lock()
	peers := a.peers
	a.mu.Unlock()
	out := make([]store.AuditEvent, 0, len(evs))
	seqs := make([]uint64, 0, len(evs))
	var stepUp []string // devices
	var last uint64
	for _, e := range evs {
		if fe.SpoolID != "" {
			if e.Seq <= last {
				log.Error("numbered flow events out of order; batch dropped (a gateway bug)", "seq", e.Seq, "after", last)
				return
			}
			last = e.Seq
		}
		ev, ok := FlowAudit(a.id, e)
		if !ok {
			log.Warn("flow event of an unknown action; dropped", "action", clipText(string(e.Action)))
			continue // an action this controller does not know
		}
		ev.Details["received_at"] = received.Format(time.RFC3339Nano)
		// Step-ups only for the gateway's own peers: a gateway cannot make
		// another gateway's device ask its user to sign in again.
		if e.Action == controlproto.FlowDeny && peers[e.DeviceID] && s.stepUps.note(e) {
			stepUp = append(stepUp, e.DeviceID)
		}
		out = append(out, ev)
		seqs = append(seqs, e.Seq)
	}
	origin := state.Origin{Actor: "gateway:" + a.id}
	if fe.SpoolID == "" {
		if err := s.cfg.State.Record(ctx, origin, out...); err != nil {
			log.Error("record flow events", "err", err, "events", len(out))
		}
	} else {
		acked, err := s.cfg.State.RecordFlowBatch(ctx, state.FlowBatch{GatewayID: a.id, SpoolID: fe.SpoolID, Events: out, Seqs: seqs})
		if err != nil {
			// Not acknowledged: the gateway keeps them and resends.
			log.Error("record flow events; not acknowledged (the gateway resends them)", "err", err, "events", len(out))
			return
		}
		s.reply(log, a, w, &controlproto.Frame{Type: controlproto.TypeFlowAck, FlowAck: &controlproto.FlowAck{SpoolID: fe.SpoolID, Seq: acked}})
	}
	// Each device's map asks its user to verify again.
	s.Changed(store.Change{Devices: stepUp})
}

// checkSkew raises or clears a gateway's clock skew alert.
func (s *Server) checkSkew(ctx context.Context, log *slog.Logger, id string, sent, received time.Time) {
	skew := sent.Sub(received)
	abs := skew
	if abs < 0 {
		abs = -abs
	}
	thr := s.cfg.ClockSkewThreshold
	h := &s.gwHealth
	h.mu.Lock()
	was := h.skewed[id]
	var outcome audit.Outcome
	switch {
	case !was && abs > thr:
		if h.skewed == nil {
			h.skewed = map[string]bool{}
		}
		h.skewed[id] = true
		outcome = audit.Raised
	case was && abs <= thr/2: // hysteresis: a clock hovering at the threshold alerts once
		delete(h.skewed, id)
		outcome = audit.Cleared
	}
	h.mu.Unlock()
	if outcome == "" {
		return
	}
	if outcome == audit.Raised {
		log.Error("GATEWAY CLOCK SKEW: the gateway's clock is off; its flow records carry wrong times until its time sync (NTP) is fixed",
			"skew", skew, "threshold", thr)
	} else {
		log.Info("gateway clock back in step", "skew", skew)
	}
	ev := store.AuditEvent{Type: audit.AuditClockSkew, Outcome: string(outcome), Subject: "gateway:" + id,
		Details: map[string]string{"skew": skew.String(), "threshold": thr.String(),
			"gateway_time": sent.UTC().Format(time.RFC3339Nano), "controller_time": received.Format(time.RFC3339Nano)}}
	if err := s.cfg.State.Record(ctx, state.Origin{Actor: "controller"}, ev); err != nil {
		log.Error("record clock skew alert", "err", err)
	}
}

// checkSpool raises or clears a gateway's spool-full alert.
func (s *Server) checkSpool(ctx context.Context, log *slog.Logger, id string, st *controlproto.SpoolStatus) {
	h := &s.gwHealth
	h.mu.Lock()
	was := h.spoolFull[id]
	var outcome audit.Outcome
	switch {
	case st.Full && !was:
		if h.spoolFull == nil {
			h.spoolFull = map[string]bool{}
		}
		h.spoolFull[id] = true
		outcome = audit.Raised
	case !st.Full && was:
		delete(h.spoolFull, id)
		outcome = audit.Cleared
	}
	h.mu.Unlock()
	if outcome == "" {
		return
	}
	if outcome == audit.Raised {
		log.Error("GATEWAY FLOW SPOOL FULL: the gateway cannot record new flows; it refuses them per its --spool-full policy",
			"policy", clipText(st.Policy), "bytes", st.Bytes, "max_bytes", st.MaxBytes, "lost", st.Lost, "refused", st.Refused)
	} else {
		log.Info("gateway flow spool has room again", "bytes", st.Bytes)
	}
	u := func(n uint64) string { return strconv.FormatUint(n, 10) }
	ev := store.AuditEvent{Type: audit.AuditSpoolFull, Outcome: string(outcome), Subject: id,
		Details: map[string]string{"policy": clipText(st.Policy), "bytes": strconv.FormatInt(st.Bytes, 10),
			"max_bytes": strconv.FormatInt(st.MaxBytes, 10), "lost": u(st.Lost), "refused": u(st.Refused)}}
	if err := s.cfg.State.Record(ctx, state.Origin{Actor: "gateway:" + id}, ev); err != nil {
		log.Error("record spool alert", "err", err)
	}
}

// FlowAudit converts a gateway's flow event into an audit event; false if
// its action is not one this controller knows.
func FlowAudit(gatewayID string, e controlproto.FlowEvent) (store.AuditEvent, bool) {
	subject := e.App
	if subject == "" {
		subject = e.Dst.String()
	}
	var typ audit.Type
	var outcome audit.Outcome
	switch e.Action {
	case controlproto.FlowAllow:
		typ, outcome = audit.FlowAllow, audit.Allow
	case controlproto.FlowDeny:
		typ, outcome = audit.FlowDeny, audit.Deny
	case controlproto.FlowCut:
		typ, outcome = audit.FlowCut, audit.Cut
	case controlproto.FlowEnd:
		typ, outcome = audit.FlowEnd, audit.Ended
	case controlproto.FlowDNSDeny:
		// A denied lookup: the name asked for is the subject.
		typ, outcome, subject = audit.DNSDeny, audit.Deny, e.Name
	default:
		return store.AuditEvent{}, false
	}
	d := map[string]string{
		"proto":   e.Proto.String(),
		"src":     e.Src.String(),
		"dst":     e.Dst.String(),
		"gateway": gatewayID,
	}
	for k, v := range map[string]string{"user": e.User, "device": e.DeviceID, "rule": e.Rule, "reason": e.Reason, "name": e.Name,
		"session": e.Session} {
		if v != "" {
			d[k] = clipText(v)
		}
	}
	if e.PolicyVersion != 0 {
		d["policy_version"] = strconv.FormatInt(e.PolicyVersion, 10)
	}
	if e.Seq != 0 {
		d["seq"] = strconv.FormatUint(e.Seq, 10)
	}
	if typ == audit.FlowEnd {
		u := func(n uint64) string { return strconv.FormatUint(n, 10) }
		d["end_reason"] = clipText(e.EndReason)
		d["packets_to_app"], d["bytes_to_app"] = u(e.PacketsToApp), u(e.BytesToApp)
		d["packets_to_client"], d["bytes_to_client"] = u(e.PacketsToClient), u(e.BytesToClient)
		d["duration"] = e.Duration.String()
	}
	return store.AuditEvent{
		Time:    e.Time,
		Type:    typ,
		Actor:   "gateway:" + gatewayID,
		Outcome: string(outcome),
		Subject: clipText(subject),
		Details: d,
	}, true
}
