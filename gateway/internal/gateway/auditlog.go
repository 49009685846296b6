package gateway

import (
	"errors"

	"github.com/cordonhq/cordon/gateway/internal/witness"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// onCheckpoint keeps a checkpoint of the controller's audit log that
// extends the one held, and refuses one that does not: it logs an error
// and reports an audit alert to the controller (once per held checkpoint
// and run: a forked controller would otherwise get one every few seconds)
// while keeping its own, for an auditor to compare (witness package).
func (g *gw) onCheckpoint(ac *controlproto.AuditCheckpoint) {
	c, err := g.witness.Offer(ac)
	if err == nil {
		g.log.Debug("audit log checkpoint kept", "size", c.Size, "root", c.Root.String())
		return
	}
	if !errors.Is(err, witness.ErrRefused) {
		g.log.Error("audit log checkpoint not kept", "err", err)
		return
	}
	held := string(g.witness.Held())
	g.mu.Lock()
	first := g.alerted != held
	g.alerted = held
	g.mu.Unlock()
	g.log.Error("AUDIT LOG CHECKPOINT REFUSED: the controller's audit log does not extend the checkpoint this gateway holds; run cordonctl audit verify --checkpoint "+witness.CheckpointFile,
		"err", err)
	if first && g.send != nil {
		g.send(&controlproto.Frame{Type: controlproto.TypeAuditAlert, AuditAlert: &controlproto.AuditAlert{Held: held, Got: ac.Checkpoint, Reason: err.Error()}})
	}
}
