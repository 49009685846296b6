package control

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/cordonhq/cordon/controller/internal/netmap"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
	"github.com/cordonhq/cordon/pkg/posture"
)

// Device posture reports (issue 5). A client reports its posture when it
// connects, when it changed, and now and then unchanged; this file keeps
// the latest report per device and audits it as self-reported. The checks
// themselves are evaluated where maps are computed (netmap/posture.go), so
// a new policy re-decides stored reports too. A report that changes which
// checks the device passes triggers a recompute, which pushes the
// gateways the device's new session posture and the device its findings.

// DefaultPostureInterval is how often clients re-collect their posture
// when Config.PostureInterval is zero.
const DefaultPostureInterval = time.Minute

// postureAuditEvery bounds how often an unchanged report is audited per
// device: a device re-confirming its posture each interval must not flood
// the trail.
const postureAuditEvery = time.Hour

// postureInterval is the interval sent to clients.
func (s *Server) postureInterval() time.Duration {
	if s.cfg.PostureInterval > 0 {
		return s.cfg.PostureInterval
	}
	return DefaultPostureInterval
}

// postureDigest identifies a report's content apart from its collection
// time.
func postureDigest(r posture.Report) string {
	r.CollectedAt = time.Time{}
	b, _ := json.Marshal(r) // a struct of strings: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// handlePosture stores and audits one client's posture report. It runs on
// the agent's read loop. A report that does not decode (oversized, unknown
// fields, bad values) is dropped and counted like any out-of-place frame;
// it never changes the stored posture.
func (s *Server) handlePosture(ctx context.Context, log *slog.Logger, a *agent, pr *controlproto.PostureReport) {
	now := time.Now()
	var raw []byte
	if pr != nil {
		raw = pr.Report
	}
	rep, err := posture.Decode(bytes.NewReader(raw), now)
	if err != nil {
		a.unexpected++
		if a.unexpected <= 3 || a.unexpected%1000 == 0 {
			log.Warn("invalid posture report; dropped", "err", err, "count", a.unexpected)
			ev := store.AuditEvent{
				Time: now, Type: audit.PostureReport, Actor: "device:" + a.id, Outcome: "invalid", Subject: a.id,
				Details: map[string]string{"self_reported": "true", "error": truncate(err.Error(), 200)},
			}
			if err := s.cfg.State.Record(ctx, state.Origin{Actor: ev.Actor}, ev); err != nil {
				log.Error("record posture audit event", "err", err)
			}
		}
		return
	}
	// A report that changes the checks the device passes reaches its
	// maps through the state.
	if err := s.storePosture(ctx, log, a.id, rep, now); err != nil {
		log.Error("store posture report", "err", err)
	}
}

// storePosture stores rep as device id's latest report (with its record
// when it changed, or the periodic one), telling the state whether the
// posture checks the device passes under the active policy changed.
func (s *Server) storePosture(ctx context.Context, log *slog.Logger, id string, rep *posture.Report, now time.Time) error {
	prev, err := s.cfg.Store.GetPosture(ctx, id)
	hadPrev := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	rec := store.PostureRecord{DeviceID: id, Report: *rep, Digest: postureDigest(*rep), ReceivedAt: now, ChangedAt: now}
	if hadPrev && prev.Digest == rec.Digest {
		rec.ChangedAt, rec.AuditedAt = prev.ChangedAt, prev.AuditedAt
	}

	// The checks passed before and now, under the policy active now.
	var before []string
	if pol := s.activePolicy(ctx, log); pol != nil {
		var prevRec *store.PostureRecord
		if hadPrev {
			prevRec = &prev
		}
		before, _ = netmap.EvaluatePosture(pol, prevRec, now)
		rec.Passing, _ = netmap.EvaluatePosture(pol, &rec, now)
	}
	changed := !hadPrev || prev.Digest != rec.Digest
	audit := changed || now.Sub(prev.AuditedAt) >= postureAuditEvery
	var ev *store.AuditEvent
	if audit {
		rec.AuditedAt = now
		e := postureAudit(id, rec, changed)
		ev = &e
	}
	affects := !slices.Equal(before, rec.Passing) || !hadPrev
	if err := s.cfg.State.PutPosture(ctx, rec, ev, affects); err != nil {
		return err
	}
	s.mu.Lock()
	if s.postureAt == nil {
		s.postureAt = map[string]time.Time{}
	}
	s.postureAt[id] = rec.ReceivedAt
	s.mu.Unlock()
	return nil
}

// activePolicy is the parsed active policy, nil when there is none or it
// does not parse (maps then carry no rules anyway).
func (s *Server) activePolicy(ctx context.Context, log *slog.Logger) *policyfile.Policy {
	v, err := s.cfg.Store.ActivePolicy(ctx)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			log.Warn("read the active policy to evaluate posture", "err", err)
		}
		return nil
	}
	pol, err := s.policy.Policy(&v)
	if err != nil {
		return nil
	}
	return pol
}

// postureAudit is the audit event of a stored report. Every reported value
// is in it, and self_reported marks that the device says so: the
// controller did not (and cannot) verify it.
func postureAudit(id string, rec store.PostureRecord, changed bool) store.AuditEvent {
	r := rec.Report
	d := map[string]string{
		"self_reported":          "true",
		"changed":                boolText(changed),
		"collected_at":           r.CollectedAt.UTC().Format(time.RFC3339),
		"os":                     r.OS,
		"os_version":             r.OSVersion,
		"os_name":                r.OSName,
		"kernel":                 r.Kernel,
		"client_version":         r.ClientVersion,
		"disk_encryption":        string(r.DiskEncryption.State),
		"disk_encryption.detail": r.DiskEncryption.Detail,
		"firewall":               string(r.Firewall.State),
		"firewall.detail":        r.Firewall.Detail,
		"screen_lock":            string(r.ScreenLock.State),
		"screen_lock.detail":     r.ScreenLock.Detail,
		"integrity":              string(r.Integrity.State),
		"integrity.detail":       r.Integrity.Detail,
		"passing":                strings.Join(rec.Passing, ","),
	}
	for k, v := range d {
		if v == "" {
			delete(d, k)
		}
	}
	return store.AuditEvent{
		Time: rec.ReceivedAt, Type: audit.PostureReport, Actor: "device:" + id, Outcome: "success", Subject: id, Details: d,
	}
}

func boolText(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
