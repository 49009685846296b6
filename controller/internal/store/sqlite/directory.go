package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/policy"
)

// This file: segments, apps, users, groups and rules.

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(dest ...any) error }

// queryer is *sql.Tx or *sql.DB.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// listRows runs query and scans every row with scan.
func listRows[T any](ctx context.Context, q queryer, scan func(rowScanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// getRow runs query for one row; no row is store.ErrNotFound.
func getRow[T any](ctx context.Context, q queryer, scan func(rowScanner) (T, error), query string, args ...any) (T, error) {
	v, err := scan(q.QueryRowContext(ctx, query, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return v, store.ErrNotFound
	}
	return v, err
}

// jsonText marshals v (slices of netip.Prefix or policy.PortRange; these
// cannot fail) as a JSON column, "[]" for nil.
func jsonText[T any](v []T) (string, error) {
	if v == nil {
		v = []T{}
	}
	b, err := json.Marshal(v)
	return string(b), err
}

// prefixText is p's text form, "" for the zero Prefix.
func prefixText(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

// parsePrefix reverses prefixText.
func parsePrefix(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	return netip.ParsePrefix(s)
}

// --- segments ---

const segmentCols = `name, cidrs, created_at`

func scanSegment(r rowScanner) (store.Segment, error) {
	var (
		s     store.Segment
		cidrs string
		at    int64
	)
	if err := r.Scan(&s.Name, &cidrs, &at); err != nil {
		return s, err
	}
	if err := json.Unmarshal([]byte(cidrs), &s.CIDRs); err != nil {
		return s, fmt.Errorf("decode segment %q cidrs: %w", s.Name, err)
	}
	s.CreatedAt = fromMicros(at)
	return s, nil
}

// CreateSegment implements [store.Store].
func (s *Store) CreateSegment(ctx context.Context, seg store.Segment) error {
	cidrs, err := jsonText(seg.CIDRs)
	if err != nil {
		return fmt.Errorf("create segment %q: %w", seg.Name, err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO segments (`+segmentCols+`) VALUES (?, ?, ?)`,
			seg.Name, cidrs, createdAt(seg.CreatedAt))
		return insertErr(err)
	})
	if err != nil {
		return fmt.Errorf("create segment %q: %w", seg.Name, err)
	}
	return nil
}

// GetSegment implements [store.Store].
func (s *Store) GetSegment(ctx context.Context, name string) (store.Segment, error) {
	seg, err := getRow(ctx, s.reader(), scanSegment, `SELECT `+segmentCols+` FROM segments WHERE name = ?`, name)
	if err != nil {
		return store.Segment{}, fmt.Errorf("get segment %q: %w", name, err)
	}
	return seg, nil
}

// ListSegments implements [store.Store].
func (s *Store) ListSegments(ctx context.Context) ([]store.Segment, error) {
	out, err := listSegments(ctx, s.reader())
	if err != nil {
		return nil, fmt.Errorf("list segments: %w", err)
	}
	return out, nil
}

func listSegments(ctx context.Context, q queryer) ([]store.Segment, error) {
	return listRows(ctx, q, scanSegment, `SELECT `+segmentCols+` FROM segments ORDER BY name`)
}

// DeleteSegment implements [store.Store]. Its enrollment tokens go with it.
func (s *Store) DeleteSegment(ctx context.Context, name string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		ok, err := exists(ctx, tx, `SELECT 1 FROM segments WHERE name = ?`, name)
		if err != nil {
			return err
		}
		if !ok {
			return store.ErrNotFound
		}
		apps, err := count(ctx, tx, `SELECT COUNT(*) FROM apps WHERE segment = ?`, name)
		if err != nil {
			return err
		}
		gws, err := count(ctx, tx, `SELECT COUNT(*) FROM gateways WHERE segment = ?`, name)
		if err != nil {
			return err
		}
		if apps > 0 || gws > 0 {
			return fmt.Errorf("%d apps and %d gateways reference it: %w", apps, gws, store.ErrInUse)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM segments WHERE name = ?`, name)
		return deleteErr(err)
	})
	if err != nil {
		return fmt.Errorf("delete segment %q: %w", name, err)
	}
	return nil
}

// --- apps ---

const appCols = `name, segment, dns_name, addr, proto, ports, classification, created_at, emergency`

func scanApp(r rowScanner) (store.App, error) {
	var (
		a           store.App
		addr, ports string
		proto       int64
		at          int64
	)
	if err := r.Scan(&a.Name, &a.Segment, &a.DNSName, &addr, &proto, &ports, &a.Classification, &at, &a.Emergency); err != nil {
		return a, err
	}
	var err error
	if a.Addr, err = parsePrefix(addr); err != nil {
		return a, fmt.Errorf("decode app %q addr: %w", a.Name, err)
	}
	a.Proto = policy.Proto(proto)
	if err := json.Unmarshal([]byte(ports), &a.Ports); err != nil {
		return a, fmt.Errorf("decode app %q ports: %w", a.Name, err)
	}
	a.CreatedAt = fromMicros(at)
	return a, nil
}

// CreateApp implements [store.Store].
func (s *Store) CreateApp(ctx context.Context, a store.App) error {
	ports, err := jsonText(a.Ports)
	if err != nil {
		return fmt.Errorf("create app %q: %w", a.Name, err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		ok, err := exists(ctx, tx, `SELECT 1 FROM segments WHERE name = ?`, a.Segment)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("segment %q: %w", a.Segment, store.ErrNotFound)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO apps (`+appCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			a.Name, a.Segment, a.DNSName, prefixText(a.Addr), int64(a.Proto), ports, string(a.Classification), createdAt(a.CreatedAt), a.Emergency)
		return insertErr(err)
	})
	if err != nil {
		return fmt.Errorf("create app %q: %w", a.Name, err)
	}
	return nil
}

// GetApp implements [store.Store].
func (s *Store) GetApp(ctx context.Context, name string) (store.App, error) {
	a, err := getRow(ctx, s.reader(), scanApp, `SELECT `+appCols+` FROM apps WHERE name = ?`, name)
	if err != nil {
		return store.App{}, fmt.Errorf("get app %q: %w", name, err)
	}
	return a, nil
}

// ListApps implements [store.Store].
func (s *Store) ListApps(ctx context.Context) ([]store.App, error) {
	out, err := listApps(ctx, s.reader())
	if err != nil {
		return nil, fmt.Errorf("list apps: %w", err)
	}
	return out, nil
}

func listApps(ctx context.Context, q queryer) ([]store.App, error) {
	return listRows(ctx, q, scanApp, `SELECT `+appCols+` FROM apps ORDER BY name`)
}

// DeleteApp implements [store.Store].
func (s *Store) DeleteApp(ctx context.Context, name string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		ok, err := exists(ctx, tx, `SELECT 1 FROM apps WHERE name = ?`, name)
		if err != nil {
			return err
		}
		if !ok {
			return store.ErrNotFound
		}
		n, err := count(ctx, tx, `SELECT COUNT(*) FROM rules WHERE app = ?`, name)
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%d rules reference it: %w", n, store.ErrInUse)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM apps WHERE name = ?`, name)
		return deleteErr(err)
	})
	if err != nil {
		return fmt.Errorf("delete app %q: %w", name, err)
	}
	return nil
}

// --- users ---

const userCols = `name, password_hash, totp_secret, disabled, created_at, break_glass`

func scanUser(r rowScanner) (store.User, error) {
	var (
		u  store.User
		at int64
	)
	if err := r.Scan(&u.Name, &u.PasswordHash, &u.TOTPSecret, &u.Disabled, &at, &u.BreakGlass); err != nil {
		return u, err
	}
	u.CreatedAt = fromMicros(at)
	return u, nil
}

// CreateUser implements [store.Store].
func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO users (`+userCols+`) VALUES (?, ?, ?, ?, ?, ?)`,
			u.Name, u.PasswordHash, u.TOTPSecret, u.Disabled, createdAt(u.CreatedAt), u.BreakGlass)
		return insertErr(err)
	})
	if err != nil {
		return fmt.Errorf("create user %q: %w", u.Name, err)
	}
	return nil
}

// GetUser implements [store.Store].
func (s *Store) GetUser(ctx context.Context, name string) (store.User, error) {
	u, err := getRow(ctx, s.reader(), scanUser, `SELECT `+userCols+` FROM users WHERE name = ?`, name)
	if err != nil {
		return store.User{}, fmt.Errorf("get user %q: %w", name, err)
	}
	return u, nil
}

// ListUsers implements [store.Store].
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	out, err := listUsers(ctx, s.reader())
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out, nil
}

func listUsers(ctx context.Context, q queryer) ([]store.User, error) {
	return listRows(ctx, q, scanUser, `SELECT `+userCols+` FROM users ORDER BY name`)
}

// SetUserDisabled implements [store.Store]: disabling ends the user's
// active sessions in the same transaction.
func (s *Store) SetUserDisabled(ctx context.Context, name string, disabled bool, at time.Time) ([]store.Session, error) {
	var ended []store.Session
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE users SET disabled = ? WHERE name = ?`, disabled, name)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return store.ErrNotFound
		}
		if disabled {
			ended, err = endSessions(ctx, tx, store.SessionFilter{User: name}, at, store.EndUserDisabled)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("set user %q disabled=%v: %w", name, disabled, err)
	}
	return ended, nil
}

// DeleteUser implements [store.Store]: the user's group memberships and
// devices go too, and the devices' overlay addresses are released.
func (s *Store) DeleteUser(ctx context.Context, name string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		ok, err := exists(ctx, tx, `SELECT 1 FROM users WHERE name = ?`, name)
		if err != nil {
			return err
		}
		if !ok {
			return store.ErrNotFound
		}
		addrs, err := listRows(ctx, tx, func(r rowScanner) (int64, error) {
			var a int64
			return a, r.Scan(&a)
		}, `SELECT overlay_addr FROM devices WHERE user_name = ?`, name)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE user_name = ?`, name); err != nil {
			return err
		}
		if _, err := endSessions(ctx, tx, store.SessionFilter{User: name}, time.Now(), store.EndUserDisabled); err != nil {
			return err
		}
		for _, a := range addrs {
			if err := releaseAddr(ctx, tx, a); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM group_members WHERE user_name = ?`, name); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM users WHERE name = ?`, name)
		return deleteErr(err)
	})
	if err != nil {
		return fmt.Errorf("delete user %q: %w", name, err)
	}
	return nil
}

// --- groups ---

// getGroup reads one group and its members; q must be a transaction for the
// two reads to agree.
func getGroup(ctx context.Context, q queryer, name string) (store.Group, error) {
	g, err := getRow(ctx, q, func(r rowScanner) (store.Group, error) {
		var (
			g  store.Group
			at int64
		)
		err := r.Scan(&g.Name, &at)
		g.CreatedAt = fromMicros(at)
		return g, err
	}, `SELECT name, created_at FROM user_groups WHERE name = ?`, name)
	if err != nil {
		return g, err
	}
	g.Members, err = listRows(ctx, q, func(r rowScanner) (string, error) {
		var u string
		return u, r.Scan(&u)
	}, `SELECT user_name FROM group_members WHERE group_name = ? ORDER BY user_name`, name)
	return g, err
}

// listGroups reads every group with its members in two queries.
func listGroups(ctx context.Context, q queryer) ([]store.Group, error) {
	groups, err := listRows(ctx, q, func(r rowScanner) (store.Group, error) {
		var (
			g  store.Group
			at int64
		)
		err := r.Scan(&g.Name, &at)
		g.CreatedAt = fromMicros(at)
		g.Members = []string{}
		return g, err
	}, `SELECT name, created_at FROM user_groups ORDER BY name`)
	if err != nil {
		return nil, err
	}
	idx := make(map[string]int, len(groups))
	for i, g := range groups {
		idx[g.Name] = i
	}
	type member struct{ group, user string }
	members, err := listRows(ctx, q, func(r rowScanner) (member, error) {
		var m member
		return m, r.Scan(&m.group, &m.user)
	}, `SELECT group_name, user_name FROM group_members ORDER BY group_name, user_name`)
	if err != nil {
		return nil, err
	}
	for _, m := range members {
		if i, ok := idx[m.group]; ok {
			groups[i].Members = append(groups[i].Members, m.user)
		}
	}
	return groups, nil
}

// CreateGroup implements [store.Store]. Every member must exist
// (store.ErrNotFound otherwise, and nothing is created); duplicates in
// Members are stored once.
func (s *Store) CreateGroup(ctx context.Context, g store.Group) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO user_groups (name, created_at) VALUES (?, ?)`,
			g.Name, createdAt(g.CreatedAt)); err != nil {
			return insertErr(err)
		}
		for _, u := range g.Members {
			ok, err := exists(ctx, tx, `SELECT 1 FROM users WHERE name = ?`, u)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("member %q: %w", u, store.ErrNotFound)
			}
			if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO group_members (group_name, user_name) VALUES (?, ?)`,
				g.Name, u); err != nil {
				return insertErr(err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create group %q: %w", g.Name, err)
	}
	return nil
}

// GetGroup implements [store.Store].
func (s *Store) GetGroup(ctx context.Context, name string) (store.Group, error) {
	var g store.Group
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		g, err = getGroup(ctx, tx, name)
		return err
	})
	if err != nil {
		return store.Group{}, fmt.Errorf("get group %q: %w", name, err)
	}
	return g, nil
}

// ListGroups implements [store.Store].
func (s *Store) ListGroups(ctx context.Context) ([]store.Group, error) {
	var out []store.Group
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = listGroups(ctx, tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	return out, nil
}

// DeleteGroup implements [store.Store]. Its memberships go with it.
func (s *Store) DeleteGroup(ctx context.Context, name string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		ok, err := exists(ctx, tx, `SELECT 1 FROM user_groups WHERE name = ?`, name)
		if err != nil {
			return err
		}
		if !ok {
			return store.ErrNotFound
		}
		n, err := count(ctx, tx, `SELECT COUNT(*) FROM rules WHERE group_name = ?`, name)
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%d rules reference it: %w", n, store.ErrInUse)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM group_members WHERE group_name = ?`, name); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM user_groups WHERE name = ?`, name)
		return deleteErr(err)
	})
	if err != nil {
		return fmt.Errorf("delete group %q: %w", name, err)
	}
	return nil
}

// AddMember implements [store.Store]: store.ErrNotFound if the group or
// user is missing, store.ErrAlreadyExists if user is already a member.
func (s *Store) AddMember(ctx context.Context, group, user string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		ok, err := exists(ctx, tx, `SELECT 1 FROM user_groups WHERE name = ?`, group)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("group %q: %w", group, store.ErrNotFound)
		}
		ok, err = exists(ctx, tx, `SELECT 1 FROM users WHERE name = ?`, user)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("user %q: %w", user, store.ErrNotFound)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO group_members (group_name, user_name) VALUES (?, ?)`, group, user)
		return insertErr(err)
	})
	if err != nil {
		return fmt.Errorf("add %q to group %q: %w", user, group, err)
	}
	return nil
}

// RemoveMember implements [store.Store].
func (s *Store) RemoveMember(ctx context.Context, group, user string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM group_members WHERE group_name = ? AND user_name = ?`, group, user)
		if err != nil {
			return err
		}
		return mustAffect(res)
	})
	if err != nil {
		return fmt.Errorf("remove %q from group %q: %w", user, group, err)
	}
	return nil
}

// --- rules ---

const ruleCols = `name, group_name, app, created_at`

func scanRule(r rowScanner) (store.Rule, error) {
	var (
		ru store.Rule
		at int64
	)
	err := r.Scan(&ru.Name, &ru.Group, &ru.App, &at)
	ru.CreatedAt = fromMicros(at)
	return ru, err
}

// CreateRule implements [store.Store].
func (s *Store) CreateRule(ctx context.Context, r store.Rule) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		ok, err := exists(ctx, tx, `SELECT 1 FROM user_groups WHERE name = ?`, r.Group)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("group %q: %w", r.Group, store.ErrNotFound)
		}
		ok, err = exists(ctx, tx, `SELECT 1 FROM apps WHERE name = ?`, r.App)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("app %q: %w", r.App, store.ErrNotFound)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO rules (`+ruleCols+`) VALUES (?, ?, ?, ?)`,
			r.Name, r.Group, r.App, createdAt(r.CreatedAt))
		return insertErr(err)
	})
	if err != nil {
		return fmt.Errorf("create rule %q: %w", r.Name, err)
	}
	return nil
}

// GetRule implements [store.Store].
func (s *Store) GetRule(ctx context.Context, name string) (store.Rule, error) {
	r, err := getRow(ctx, s.reader(), scanRule, `SELECT `+ruleCols+` FROM rules WHERE name = ?`, name)
	if err != nil {
		return store.Rule{}, fmt.Errorf("get rule %q: %w", name, err)
	}
	return r, nil
}

// ListRules implements [store.Store].
func (s *Store) ListRules(ctx context.Context) ([]store.Rule, error) {
	out, err := listRules(ctx, s.reader())
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	return out, nil
}

func listRules(ctx context.Context, q queryer) ([]store.Rule, error) {
	return listRows(ctx, q, scanRule, `SELECT `+ruleCols+` FROM rules ORDER BY name`)
}

// DeleteRule implements [store.Store].
func (s *Store) DeleteRule(ctx context.Context, name string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM rules WHERE name = ?`, name)
		if err != nil {
			return err
		}
		return mustAffect(res)
	})
	if err != nil {
		return fmt.Errorf("delete rule %q: %w", name, err)
	}
	return nil
}
