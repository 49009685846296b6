package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// migrationFlowAcks (schema 13): the highest flow event sequence number
// committed from each gateway's spool (issue 12): a resend after a crash
// is recorded once. It goes with its gateway.
const migrationFlowAcks = `
CREATE TABLE gateway_flow_acks (
	gateway_id TEXT PRIMARY KEY REFERENCES gateways(id) ON DELETE CASCADE,
	spool_id   TEXT NOT NULL,
	seq        INTEGER NOT NULL,
	updated_at INTEGER NOT NULL -- unix µs, controller clock
) STRICT;
`

func scanFlowAck(r rowScanner) (store.FlowAck, error) {
	var (
		a   store.FlowAck
		seq int64
		at  int64
	)
	if err := r.Scan(&a.GatewayID, &a.SpoolID, &seq, &at); err != nil {
		return a, err
	}
	a.Seq, a.UpdatedAt = uint64(seq), fromMicros(at)
	return a, nil
}

// GetFlowAck implements [store.FlowAckStore].
func (s *Store) GetFlowAck(ctx context.Context, gatewayID string) (store.FlowAck, error) {
	a, err := getRow(ctx, s.reader(), scanFlowAck, `SELECT gateway_id, spool_id, seq, updated_at FROM gateway_flow_acks WHERE gateway_id = ?`, gatewayID)
	if err != nil {
		return store.FlowAck{}, fmt.Errorf("get flow ack of gateway %q: %w", gatewayID, err)
	}
	return a, nil
}

// PutFlowAck implements [store.FlowAckStore].
func (s *Store) PutFlowAck(ctx context.Context, a store.FlowAck) error {
	if a.Seq > 1<<63-1 {
		return fmt.Errorf("put flow ack of gateway %q: sequence number %d out of range", a.GatewayID, a.Seq)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO gateway_flow_acks (gateway_id, spool_id, seq, updated_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (gateway_id) DO UPDATE SET spool_id = excluded.spool_id, seq = excluded.seq, updated_at = excluded.updated_at`,
			a.GatewayID, a.SpoolID, int64(a.Seq), toMicros(a.UpdatedAt))
		return insertErr(err)
	})
	if err != nil {
		return fmt.Errorf("put flow ack of gateway %q: %w", a.GatewayID, err)
	}
	return nil
}
