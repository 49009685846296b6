package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// migrationPosture (schema 6): device posture reports (issue 5). Only the
// latest report of each device is kept (its history is in the audit
// trail); it goes with its device.
const migrationPosture = `
CREATE TABLE device_posture (
	device_id   TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
	report      TEXT NOT NULL,    -- posture.Report as JSON, self-reported
	digest      TEXT NOT NULL,    -- of the content apart from collected_at
	received_at INTEGER NOT NULL, -- unix µs, controller clock
	changed_at  INTEGER NOT NULL,
	audited_at  INTEGER NOT NULL, -- 0: never
	passing     TEXT NOT NULL     -- JSON list of check names
) STRICT;
`

const postureCols = `device_id, report, digest, received_at, changed_at, audited_at, passing`

func scanPosture(r rowScanner) (store.PostureRecord, error) {
	var (
		p                          store.PostureRecord
		report, passing            string
		received, changed, audited int64
	)
	if err := r.Scan(&p.DeviceID, &report, &p.Digest, &received, &changed, &audited, &passing); err != nil {
		return p, err
	}
	if err := json.Unmarshal([]byte(report), &p.Report); err != nil {
		return p, fmt.Errorf("posture report of device %q: %w", p.DeviceID, err)
	}
	if err := json.Unmarshal([]byte(passing), &p.Passing); err != nil {
		return p, fmt.Errorf("posture checks of device %q: %w", p.DeviceID, err)
	}
	p.ReceivedAt, p.ChangedAt, p.AuditedAt = fromMicros(received), fromMicros(changed), fromOptMicros(audited)
	return p, nil
}

// PutPosture implements [store.PostureStore].
func (s *Store) PutPosture(ctx context.Context, p store.PostureRecord) error {
	report, err := json.Marshal(p.Report)
	if err != nil {
		return fmt.Errorf("put posture: %w", err)
	}
	passing, err := jsonText(p.Passing)
	if err != nil {
		return fmt.Errorf("put posture: %w", err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO device_posture (`+postureCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (device_id) DO UPDATE SET report = excluded.report, digest = excluded.digest,
				received_at = excluded.received_at, changed_at = excluded.changed_at,
				audited_at = excluded.audited_at, passing = excluded.passing`,
			p.DeviceID, string(report), p.Digest, toMicros(p.ReceivedAt), toMicros(p.ChangedAt), optMicros(p.AuditedAt), passing)
		return insertErr(err)
	})
	if err != nil {
		return fmt.Errorf("put posture of device %q: %w", p.DeviceID, err)
	}
	return nil
}

// GetPosture implements [store.PostureStore].
func (s *Store) GetPosture(ctx context.Context, deviceID string) (store.PostureRecord, error) {
	p, err := getRow(ctx, s.reader(), scanPosture, `SELECT `+postureCols+` FROM device_posture WHERE device_id = ?`, deviceID)
	if err != nil {
		return store.PostureRecord{}, fmt.Errorf("get posture of device %q: %w", deviceID, err)
	}
	return p, nil
}

// listPosture returns every device's latest report by device ID.
func listPosture(ctx context.Context, q queryer) (map[string]store.PostureRecord, error) {
	list, err := listRows(ctx, q, scanPosture, `SELECT `+postureCols+` FROM device_posture`)
	if err != nil {
		return nil, err
	}
	out := make(map[string]store.PostureRecord, len(list))
	for _, p := range list {
		out[p.DeviceID] = p
	}
	return out, nil
}
