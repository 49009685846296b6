package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
)

const policyCols = `version, file, source, sha256, actor, reason, rollback_of, created_at`

func scanPolicyVersion(r rowScanner) (store.PolicyVersion, error) {
	var v store.PolicyVersion
	var created int64
	if err := r.Scan(&v.Version, &v.File, &v.Source, &v.SHA256, &v.Actor, &v.Reason, &v.RollbackOf, &created); err != nil {
		return v, err
	}
	v.CreatedAt = fromMicros(created)
	return v, nil
}

// PutPolicyVersion implements [store.Store]. The BEGIN IMMEDIATE write
// transaction makes the read of the active version and the insert one step.
func (s *Store) PutPolicyVersion(ctx context.Context, prev int64, v store.PolicyVersion) (store.PolicyVersion, error) {
	if v.CreatedAt.IsZero() {
		v.CreatedAt = time.Now()
	}
	v.CreatedAt = v.CreatedAt.UTC().Truncate(time.Microsecond)
	if v.Source == nil {
		v.Source = []byte{}
	}
	sum := sha256.Sum256(v.Source)
	v.SHA256 = hex.EncodeToString(sum[:])
	err := s.write(ctx, func(tx *sql.Tx) error {
		var active int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM policy_versions`).Scan(&active); err != nil {
			return err
		}
		if active != prev {
			return store.ErrStale
		}
		v.Version = active + 1
		_, err := tx.ExecContext(ctx, `INSERT INTO policy_versions (`+policyCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			v.Version, v.File, v.Source, v.SHA256, v.Actor, v.Reason, v.RollbackOf, toMicros(v.CreatedAt))
		return err
	})
	if err != nil {
		return store.PolicyVersion{}, fmt.Errorf("put policy version: %w", err)
	}
	return v, nil
}

// GetPolicyVersion implements [store.Store].
func (s *Store) GetPolicyVersion(ctx context.Context, version int64) (store.PolicyVersion, error) {
	v, err := getRow(ctx, s.reader(), scanPolicyVersion, `SELECT `+policyCols+` FROM policy_versions WHERE version = ?`, version)
	if err != nil {
		return v, fmt.Errorf("get policy version %d: %w", version, err)
	}
	return v, nil
}

// ListPolicyVersions implements [store.Store].
func (s *Store) ListPolicyVersions(ctx context.Context) ([]store.PolicyVersion, error) {
	vs, err := listRows(ctx, s.reader(), scanPolicyVersion,
		`SELECT version, file, X'', sha256, actor, reason, rollback_of, created_at FROM policy_versions ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("list policy versions: %w", err)
	}
	for i := range vs {
		vs[i].Source = nil
	}
	return vs, nil
}

// ActivePolicy implements [store.Store].
func (s *Store) ActivePolicy(ctx context.Context) (store.PolicyVersion, error) {
	v, err := activePolicy(ctx, s.reader())
	if err != nil {
		return v, fmt.Errorf("active policy: %w", err)
	}
	return v, nil
}

func activePolicy(ctx context.Context, q queryer) (store.PolicyVersion, error) {
	return getRow(ctx, q, scanPolicyVersion, `SELECT `+policyCols+` FROM policy_versions ORDER BY version DESC LIMIT 1`)
}
