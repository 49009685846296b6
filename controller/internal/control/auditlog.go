package control

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/quic-go/quic-go"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Audit log checkpoints to gateways (capability 8). Each gateway holds the
// latest checkpoint it accepted and refuses one that does not extend it,
// so a controller whose log was rolled back, truncated or replaced is
// caught by every gateway that saw the log before.
//
// Like maps, checkpoints are latest-only per agent: the ledger's publish
// only replaces the agent's pending checkpoint and wakes its writer, which
// computes the consistency proof when it sends, from the size the gateway
// holds (its Hello.AuditLogSize, then each checkpoint sent; after a
// refusal, the size its alert names). A slow gateway skips checkpoints,
// never proofs.

// agentCheckpoint is one gateway's checkpoint state.
//
// held is a belief: a sent checkpoint is assumed accepted (gateways only
// speak up to refuse), and a refusal's alert corrects it. An alert can
// arrive after later checkpoints went out with proofs from the wrong size;
// the gateway refuses those with "its proof starts at", not with the
// finding that matters (a fork). So sent remembers the proof start of each
// recent checkpoint: an alert for one proved from a size the gateway did
// not hold makes the writer send the latest checkpoint again, from the
// size the alert names. A refusal of a proof from the right size is the
// gateway's verdict and is not retried, so alerts cannot loop.
type agentCheckpoint struct {
	mu      sync.Mutex
	pending *ledger.Signed  // newest checkpoint not yet sent
	latest  *ledger.Signed  // newest checkpoint offered, for a resend
	held    int64           // the size the gateway holds, as far as we know
	sent    map[int64]int64 // checkpoint size -> proof start, of recent sends
}

// maxSentRemembered bounds agentCheckpoint.sent; alerts answer within a
// round trip, so only the last few sends can be in question.
const maxSentRemembered = 32

// noteSent records that a checkpoint of size was sent with a proof from
// since (0: none), to a gateway believed to hold heldBefore when it went.
func (c *agentCheckpoint) noteSent(size, since, heldBefore int64) {
	if c.sent == nil {
		c.sent = map[int64]int64{}
	}
	if len(c.sent) >= maxSentRemembered {
		lowest := int64(-1)
		for s := range c.sent {
			if lowest < 0 || s < lowest {
				lowest = s
			}
		}
		delete(c.sent, lowest)
	}
	c.sent[size] = since
	// Assume acceptance only if no alert changed what we know meanwhile,
	// and never of a checkpoint smaller than what the gateway holds (that
	// one is refused by design).
	if c.held == heldBefore && size >= heldBefore {
		c.held = size
	}
}

// refused takes a gateway's alert: it holds heldSize, and refused the
// checkpoint of gotSize. It reports whether the refusal was of a proof from
// a stale size, so the latest checkpoint must go again.
func (c *agentCheckpoint) refused(heldSize, gotSize int64) (resend bool) {
	c.held = heldSize
	since, ok := c.sent[gotSize]
	if gotSize <= heldSize {
		return false // a shrink or a same-size fork: no proof involved
	}
	return !ok || since != heldSize
}

// PublishCheckpoint hands a new checkpoint to every connected gateway that
// takes them. It never blocks.
func (s *Server) PublishCheckpoint(c ledger.Signed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.agents {
		s.offerCheckpoint(a, &c)
	}
}

// offerCheckpoint queues c for a, if a is a gateway that takes them.
func (s *Server) offerCheckpoint(a *agent, c *ledger.Signed) {
	if a.kind != ca.KindGateway || a.caps < controlproto.MinAuditCheckpointCapability || c == nil || s.cfg.Ledger == nil {
		return
	}
	a.checkpoint.mu.Lock()
	a.checkpoint.pending, a.checkpoint.latest = c, c
	a.checkpoint.mu.Unlock()
	a.poke()
}

// joinedCheckpoint sets up a gateway that just said hello: it holds the
// size it says, and gets the latest checkpoint.
func (s *Server) joinedCheckpoint(log *slog.Logger, a *agent, h *controlproto.Hello) {
	if s.cfg.Ledger == nil {
		return
	}
	latest := s.cfg.Ledger.Latest()
	a.checkpoint.mu.Lock()
	a.checkpoint.held = h.AuditLogSize
	a.checkpoint.mu.Unlock()
	if latest != nil && h.AuditLogSize > latest.Size {
		log.Error("AUDIT LOG: this gateway holds a checkpoint of a longer log than the controller's: the log was truncated or rolled back (the gateway will refuse ours and alert)",
			"gateway_size", h.AuditLogSize, "log_size", latest.Size)
	}
	s.offerCheckpoint(a, latest)
}

// writeCheckpoint sends a's pending checkpoint, if any, with the proof
// from the size a holds.
func (s *Server) writeCheckpoint(ctx context.Context, log *slog.Logger, a *agent, w *quic.Stream) error {
	a.checkpoint.mu.Lock()
	c, held := a.checkpoint.pending, a.checkpoint.held
	a.checkpoint.pending = nil
	a.checkpoint.mu.Unlock()
	if c == nil {
		return nil
	}
	ac := &controlproto.AuditCheckpoint{Key: s.cfg.Ledger.Key().VerifierKey(), Checkpoint: string(c.Note)}
	if held > 0 && held <= c.Size {
		p, err := s.cfg.Ledger.Prove(ctx, c.Size, held)
		if err != nil {
			log.Error("audit log consistency proof for a gateway; checkpoint not sent", "from", held, "to", c.Size, "err", err)
			return nil
		}
		ac.Since, ac.Proof = held, p
	}
	buf, err := controlproto.EncodeFrame(&controlproto.Frame{Type: controlproto.TypeAuditCheckpoint, AuditCheckpoint: ac})
	if err != nil {
		return err
	}
	a.wmu.Lock()
	_, err = w.Write(buf)
	a.wmu.Unlock()
	if err != nil {
		return err
	}
	a.checkpoint.mu.Lock()
	a.checkpoint.noteSent(c.Size, ac.Since, held)
	a.checkpoint.mu.Unlock()
	return nil
}

// auditAlert records a gateway's refusal of a checkpoint, and remembers
// the size the gateway still holds for the next proof.
func (s *Server) auditAlert(ctx context.Context, log *slog.Logger, a *agent, al *controlproto.AuditAlert) {
	held, got := describeNote(al.Held), describeNote(al.Got)
	log.Error("AUDIT LOG INCONSISTENT: a gateway refused the controller's checkpoint; run cordonctl audit verify",
		"reason", al.Reason, "held", held, "got", got)
	if c, err := auditlog.ParseCheckpointBody(noteText(al.Held)); err == nil {
		var gotSize int64
		if g, err := auditlog.ParseCheckpointBody(noteText(al.Got)); err == nil {
			gotSize = g.Size
		}
		a.checkpoint.mu.Lock()
		resend := a.checkpoint.refused(c.Size, gotSize)
		if resend && a.checkpoint.pending == nil {
			a.checkpoint.pending = a.checkpoint.latest
		}
		a.checkpoint.mu.Unlock()
		if resend {
			log.Info("resending the latest audit log checkpoint with a proof from the size the gateway holds", "held", c.Size)
			a.poke()
		}
	}
	subject := ""
	if s.cfg.Ledger != nil {
		subject = s.cfg.Ledger.Key().Origin()
	}
	ev := store.AuditEvent{Type: audit.AuditLogInconsistent, Outcome: string(audit.Raised), Subject: subject,
		Details: map[string]string{"reason": clipText(al.Reason), "held": held, "got": got}}
	if err := s.cfg.State.Record(ctx, state.Origin{Actor: "gateway:" + a.id}, ev); err != nil {
		log.Error("record audit log alert", "err", err)
	}
}

// noteText is a note's text without its signatures (best effort: for
// describing what a gateway reported, not for trusting it).
func noteText(note string) string {
	for i := 0; i+1 < len(note); i++ {
		if note[i] == '\n' && note[i+1] == '\n' {
			return note[:i+1]
		}
	}
	return note
}

// describeNote is "size N root H" of a checkpoint a gateway reported, or
// what could be read of it.
func describeNote(note string) string {
	c, err := auditlog.ParseCheckpointBody(noteText(note))
	if err != nil {
		return clipText(fmt.Sprintf("unreadable checkpoint (%v)", err))
	}
	return fmt.Sprintf("size %d root %s signed %s", c.Size, c.Root, c.Time.Format("2006-01-02T15:04:05Z"))
}

// clipText bounds text a gateway sent before it goes into a record.
func clipText(s string) string {
	if len(s) > 500 {
		return s[:500] + "..."
	}
	return s
}
