package sqlite

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// This file: the overlay address allocator, enrollment tokens, gateways and
// devices.

// --- overlay addresses ---

// maxOffset is the last offset of store.OverlayPrefix. Offset 0, the
// network address, is never handed out.
func maxOffset() uint32 {
	host := 32 - store.OverlayPrefix.Bits()
	if host >= 32 {
		return ^uint32(0)
	}
	return uint32(1)<<host - 1
}

func overlayBase() uint32 {
	b := store.OverlayPrefix.Masked().Addr().As4()
	return binary.BigEndian.Uint32(b[:])
}

// offsetAddr turns a stored offset into the address.
func offsetAddr(off int64) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], overlayBase()+uint32(off))
	return netip.AddrFrom4(b)
}

// allocAddr leases the lowest free offset (see the overlay_leases comment in
// the schema). It must run inside the write transaction that stores the
// owner.
func (s *Store) allocAddr(ctx context.Context, tx *sql.Tx) (int64, error) {
	var free sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MIN(addr) FROM overlay_free`).Scan(&free); err != nil {
		return 0, fmt.Errorf("allocate overlay address: %w", err)
	}
	var off int64
	if free.Valid {
		off = free.Int64
		if _, err := tx.ExecContext(ctx, `DELETE FROM overlay_free WHERE addr = ?`, off); err != nil {
			return 0, fmt.Errorf("allocate overlay address: %w", err)
		}
	} else {
		var top sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MAX(addr) FROM overlay_leases`).Scan(&top); err != nil {
			return 0, fmt.Errorf("allocate overlay address: %w", err)
		}
		off = top.Int64 + 1 // 1 on an empty pool: skips the network address
		if off > int64(s.maxOffset) {
			return 0, fmt.Errorf("allocate overlay address in %s: %w", store.OverlayPrefix, store.ErrAddrExhausted)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO overlay_leases (addr) VALUES (?)`, off); err != nil {
		return 0, fmt.Errorf("allocate overlay address %s: %w", offsetAddr(off), err)
	}
	return off, nil
}

// releaseAddr returns an offset to the pool. The owner row must be gone.
func releaseAddr(ctx context.Context, tx *sql.Tx, off int64) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM overlay_leases WHERE addr = ?`, off); err != nil {
		return fmt.Errorf("release overlay address %s: %w", offsetAddr(off), err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO overlay_free (addr) VALUES (?)`, off); err != nil {
		return fmt.Errorf("release overlay address %s: %w", offsetAddr(off), err)
	}
	return nil
}

func parseKey(s string) (wgkey.Public, error) {
	return wgkey.ParsePublic(s)
}

// --- enrollment tokens ---

const tokenCols = `id, hash, segment, name, created_at, expires_at, used_at, used_by`

func scanToken(r rowScanner) (store.EnrollToken, error) {
	var (
		t       store.EnrollToken
		at, exp int64
		used    sql.NullInt64
	)
	if err := r.Scan(&t.ID, &t.Hash, &t.Segment, &t.Name, &at, &exp, &used, &t.UsedBy); err != nil {
		return t, err
	}
	t.CreatedAt, t.ExpiresAt = fromMicros(at), fromMicros(exp)
	if used.Valid {
		u := fromMicros(used.Int64)
		t.UsedAt = &u
	}
	return t, nil
}

// CreateEnrollToken implements [store.Store]: store.ErrNotFound if the
// segment is missing, store.ErrAlreadyExists for a duplicate ID or hash.
// UsedAt and UsedBy are taken as given (normally unset).
func (s *Store) CreateEnrollToken(ctx context.Context, t store.EnrollToken) error {
	if t.ID == "" {
		t.ID = newID()
	}
	hash := t.Hash
	if hash == nil {
		hash = []byte{}
	}
	var used sql.NullInt64
	if t.UsedAt != nil {
		used = sql.NullInt64{Int64: toMicros(*t.UsedAt), Valid: true}
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		ok, err := exists(ctx, tx, `SELECT 1 FROM segments WHERE name = ?`, t.Segment)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("segment %q: %w", t.Segment, store.ErrNotFound)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO enroll_tokens (`+tokenCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			t.ID, hash, t.Segment, t.Name, createdAt(t.CreatedAt), toMicros(t.ExpiresAt), used, t.UsedBy)
		return insertErr(err)
	})
	if err != nil {
		return fmt.Errorf("create enrollment token %q: %w", t.ID, err)
	}
	return nil
}

// ListEnrollTokens implements [store.Store], sorted by ID.
func (s *Store) ListEnrollTokens(ctx context.Context) ([]store.EnrollToken, error) {
	out, err := listRows(ctx, s.reader(), scanToken, `SELECT `+tokenCols+` FROM enroll_tokens ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list enrollment tokens: %w", err)
	}
	return out, nil
}

// RedeemEnrollToken implements [store.Store]. The gateway's Name and
// Segment come from the token (Name from g if the token has none); its
// overlay address is allocated; an empty ID is generated and a zero
// CreatedAt becomes now.
//
// The token is consumed by a conditional UPDATE ... RETURNING: whether it
// returns a row decides the race, in the same transaction as the gateway insert: if the
// insert fails the token stays unused.
func (s *Store) RedeemEnrollToken(ctx context.Context, hash []byte, now time.Time, g store.Gateway) (store.Gateway, error) {
	if g.ID == "" {
		g.ID = newID()
	}
	if g.CreatedAt.IsZero() {
		g.CreatedAt = now
	}
	g.CreatedAt = fromMicros(toMicros(g.CreatedAt))
	if hash == nil {
		hash = []byte{}
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		var name string
		err := tx.QueryRowContext(ctx, `UPDATE enroll_tokens SET used_at = ?, used_by = ?
			WHERE hash = ? AND used_at IS NULL AND expires_at > ?
			RETURNING segment, name`,
			toMicros(now), g.ID, hash, toMicros(now)).Scan(&g.Segment, &name)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrTokenInvalid
		}
		if err != nil {
			return err
		}
		if name != "" {
			g.Name = name
		}
		ok, err := exists(ctx, tx, `SELECT 1 FROM gateways WHERE id = ?`, g.ID)
		if err != nil {
			return err
		}
		if ok {
			return fmt.Errorf("gateway %q: %w", g.ID, store.ErrAlreadyExists)
		}
		off, err := s.allocAddr(ctx, tx)
		if err != nil {
			return err
		}
		g.OverlayAddr = offsetAddr(off)
		_, err = tx.ExecContext(ctx, `INSERT INTO gateways (`+gatewayCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, 0)`,
			g.ID, g.Name, g.Segment, g.PublicKey.String(), off, g.Endpoint, toMicros(g.CreatedAt))
		return insertErr(err)
	})
	if err != nil {
		return store.Gateway{}, fmt.Errorf("redeem enrollment token: %w", err)
	}
	return g, nil
}

// --- gateways ---

const gatewayCols = `id, name, segment, public_key, overlay_addr, endpoint, created_at, drained_at`

func scanGateway(r rowScanner) (store.Gateway, error) {
	var (
		g                store.Gateway
		key              string
		off, at, drained int64
	)
	if err := r.Scan(&g.ID, &g.Name, &g.Segment, &key, &off, &g.Endpoint, &at, &drained); err != nil {
		return g, err
	}
	var err error
	if g.PublicKey, err = parseKey(key); err != nil {
		return g, fmt.Errorf("decode gateway %q: %w", g.ID, err)
	}
	g.OverlayAddr = offsetAddr(off)
	g.CreatedAt = fromMicros(at)
	if drained != 0 {
		g.DrainedAt = fromMicros(drained)
	}
	return g, nil
}

// GetGateway implements [store.Store].
func (s *Store) GetGateway(ctx context.Context, id string) (store.Gateway, error) {
	g, err := getRow(ctx, s.reader(), scanGateway, `SELECT `+gatewayCols+` FROM gateways WHERE id = ?`, id)
	if err != nil {
		return store.Gateway{}, fmt.Errorf("get gateway %q: %w", id, err)
	}
	return g, nil
}

// ListGateways implements [store.Store], sorted by ID.
func (s *Store) ListGateways(ctx context.Context) ([]store.Gateway, error) {
	out, err := listGateways(ctx, s.reader())
	if err != nil {
		return nil, fmt.Errorf("list gateways: %w", err)
	}
	return out, nil
}

func listGateways(ctx context.Context, q queryer) ([]store.Gateway, error) {
	return listRows(ctx, q, scanGateway, `SELECT `+gatewayCols+` FROM gateways ORDER BY id`)
}

// UpdateGatewayEndpoint implements [store.Store].
func (s *Store) UpdateGatewayEndpoint(ctx context.Context, id, endpoint string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE gateways SET endpoint = ? WHERE id = ?`, endpoint, id)
		if err != nil {
			return err
		}
		return mustAffect(res)
	})
	if err != nil {
		return fmt.Errorf("update gateway %q endpoint: %w", id, err)
	}
	return nil
}

// migrationGatewayDrain (schema 14): when an admin drained each gateway
// (0: not drained).
const migrationGatewayDrain = `
ALTER TABLE gateways ADD COLUMN drained_at INTEGER NOT NULL DEFAULT 0; -- unix µs, 0: not drained
`

// SetGatewayDrained implements [store.Store].
func (s *Store) SetGatewayDrained(ctx context.Context, id string, at time.Time) error {
	var micros int64
	if !at.IsZero() {
		micros = toMicros(at)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE gateways SET drained_at = ? WHERE id = ?`, micros, id)
		if err != nil {
			return err
		}
		return mustAffect(res)
	})
	if err != nil {
		return fmt.Errorf("set gateway %q drained: %w", id, err)
	}
	return nil
}

// DeleteGateway implements [store.Store]; its overlay address is released.
func (s *Store) DeleteGateway(ctx context.Context, id string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		var off int64
		err := tx.QueryRowContext(ctx, `DELETE FROM gateways WHERE id = ? RETURNING overlay_addr`, id).Scan(&off)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		return releaseAddr(ctx, tx, off)
	})
	if err != nil {
		return fmt.Errorf("delete gateway %q: %w", id, err)
	}
	return nil
}

// --- devices ---

const deviceCols = `id, user_name, hostname, public_key, overlay_addr, created_at, mfa_at, revoked_at, quarantined_at, quarantined_by, quarantine_reason`

func scanDevice(r rowScanner) (store.Device, error) {
	var (
		d                                  store.Device
		key                                string
		off, at, mfa, revoked, quarantined int64
	)
	if err := r.Scan(&d.ID, &d.User, &d.Hostname, &key, &off, &at, &mfa, &revoked,
		&quarantined, &d.Quarantine.By, &d.Quarantine.Reason); err != nil {
		return d, err
	}
	var err error
	if d.PublicKey, err = parseKey(key); err != nil {
		return d, fmt.Errorf("decode device %q: %w", d.ID, err)
	}
	d.OverlayAddr = offsetAddr(off)
	d.CreatedAt = fromMicros(at)
	d.MFAAt = fromOptMicros(mfa)
	d.RevokedAt = fromOptMicros(revoked)
	d.Quarantine.At = fromOptMicros(quarantined)
	return d, nil
}

// optMicros stores an optional time: 0 for the zero time.
func optMicros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return toMicros(t)
}

func fromOptMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return fromMicros(us)
}

// CreateDevice implements [store.Store]: store.ErrNotFound if the user is
// missing, store.ErrAlreadyExists for a duplicate ID. d.OverlayAddr is
// ignored and replaced by an allocated one; an empty ID is generated and a
// zero CreatedAt becomes now.
func (s *Store) CreateDevice(ctx context.Context, d store.Device) (store.Device, error) {
	if d.ID == "" {
		d.ID = newID()
	}
	d.CreatedAt = fromMicros(createdAt(d.CreatedAt))
	d.MFAAt = fromOptMicros(optMicros(d.MFAAt))
	err := s.write(ctx, func(tx *sql.Tx) error {
		ok, err := exists(ctx, tx, `SELECT 1 FROM users WHERE name = ?`, d.User)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("user %q: %w", d.User, store.ErrNotFound)
		}
		ok, err = exists(ctx, tx, `SELECT 1 FROM devices WHERE id = ?`, d.ID)
		if err != nil {
			return err
		}
		if ok {
			return store.ErrAlreadyExists
		}
		off, err := s.allocAddr(ctx, tx)
		if err != nil {
			return err
		}
		d.OverlayAddr = offsetAddr(off)
		_, err = tx.ExecContext(ctx, `INSERT INTO devices (`+deviceCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, '', '')`,
			d.ID, d.User, d.Hostname, d.PublicKey.String(), off, toMicros(d.CreatedAt), optMicros(d.MFAAt))
		return insertErr(err)
	})
	if err != nil {
		return store.Device{}, fmt.Errorf("create device %q: %w", d.ID, err)
	}
	return d, nil
}

// UpdateDevice implements [store.Store]: only PublicKey, Hostname and MFAAt
// change; a revoked device is not found.
func (s *Store) UpdateDevice(ctx context.Context, d store.Device) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE devices SET public_key = ?, hostname = ?, mfa_at = ? WHERE id = ? AND revoked_at = 0`,
			d.PublicKey.String(), d.Hostname, optMicros(d.MFAAt), d.ID)
		if err != nil {
			return err
		}
		return mustAffect(res)
	})
	if err != nil {
		return fmt.Errorf("update device %q: %w", d.ID, err)
	}
	return nil
}

// migrationDeviceQuarantine (schema 16): an admin's quarantine of each
// device (quarantined_at 0: not quarantined).
const migrationDeviceQuarantine = `
ALTER TABLE devices ADD COLUMN quarantined_at INTEGER NOT NULL DEFAULT 0; -- unix µs, 0: not quarantined
ALTER TABLE devices ADD COLUMN quarantined_by TEXT NOT NULL DEFAULT '';   -- the admin's actor
ALTER TABLE devices ADD COLUMN quarantine_reason TEXT NOT NULL DEFAULT '';
CREATE INDEX devices_public_key ON devices(public_key); -- a sign-in finds quarantined holders of its key
`

// SetDeviceQuarantine implements [store.Store].
func (s *Store) SetDeviceQuarantine(ctx context.Context, id string, q store.Quarantine) error {
	if q.At.IsZero() {
		q = store.Quarantine{}
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE devices SET quarantined_at = ?, quarantined_by = ?, quarantine_reason = ? WHERE id = ?`,
			optMicros(q.At), q.By, q.Reason, id)
		if err != nil {
			return err
		}
		return mustAffect(res)
	})
	if err != nil {
		return fmt.Errorf("set quarantine of device %q: %w", id, err)
	}
	return nil
}

// GetDevice implements [store.Store].
func (s *Store) GetDevice(ctx context.Context, id string) (store.Device, error) {
	d, err := getRow(ctx, s.reader(), scanDevice, `SELECT `+deviceCols+` FROM devices WHERE id = ?`, id)
	if err != nil {
		return store.Device{}, fmt.Errorf("get device %q: %w", id, err)
	}
	return d, nil
}

// ListDevices implements [store.Store], sorted by ID.
func (s *Store) ListDevices(ctx context.Context) ([]store.Device, error) {
	out, err := listDevices(ctx, s.reader())
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	return out, nil
}

// ListDevicesByKey implements [store.Store].
func (s *Store) ListDevicesByKey(ctx context.Context, key wgkey.Public) ([]store.Device, error) {
	out, err := listRows(ctx, s.reader(), scanDevice, `SELECT `+deviceCols+` FROM devices WHERE public_key = ? ORDER BY id`, key.String())
	if err != nil {
		return nil, fmt.Errorf("list devices by key: %w", err)
	}
	return out, nil
}

func listDevices(ctx context.Context, q queryer) ([]store.Device, error) {
	return listRows(ctx, q, scanDevice, `SELECT `+deviceCols+` FROM devices ORDER BY id`)
}

// DeleteDevice implements [store.Store]; its overlay address is released.
func (s *Store) DeleteDevice(ctx context.Context, id string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		var off int64
		err := tx.QueryRowContext(ctx, `DELETE FROM devices WHERE id = ? RETURNING overlay_addr`, id).Scan(&off)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if _, err := endSessions(ctx, tx, store.SessionFilter{DeviceID: id}, time.Now(), store.EndDeviceRevoked); err != nil {
			return err
		}
		return releaseAddr(ctx, tx, off)
	})
	if err != nil {
		return fmt.Errorf("delete device %q: %w", id, err)
	}
	return nil
}
