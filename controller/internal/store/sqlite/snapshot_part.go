package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// SnapshotPart implements [store.Store]: what change c can have changed,
// read as store.Snapshot.Patch expects it.
func (s *Store) SnapshotPart(ctx context.Context, c store.Change) (*store.Snapshot, error) {
	var snap store.Snapshot
	users, groups, devices := inList(c.Users), inList(c.Groups), inList(c.Devices)
	apps, segments, gateways := inList(c.Apps), inList(c.Segments), inList(c.Gateways)
	// The devices covered: those named and those of named users.
	devWhere := `id IN ` + devices.sql + ` OR user_name IN ` + users.sql
	devArgs := append(devices.args(), users.args()...)
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		if snap.Users, err = listRows(ctx, tx, scanUser, `SELECT `+userCols+` FROM users WHERE name IN `+users.sql+` ORDER BY name`, users.args()...); err != nil {
			return err
		}
		// Named groups and those a named user is in now.
		names, err := listRows(ctx, tx, scanString, `SELECT name FROM user_groups WHERE name IN `+groups.sql+
			` OR name IN (SELECT group_name FROM group_members WHERE user_name IN `+users.sql+`) ORDER BY name`,
			append(groups.args(), users.args()...)...)
		if err != nil {
			return err
		}
		for _, n := range names {
			g, err := getGroup(ctx, tx, n)
			if err != nil {
				return err
			}
			snap.Groups = append(snap.Groups, g)
		}
		if snap.Rules, err = listRules(ctx, tx); err != nil {
			return err
		}
		if snap.Apps, err = listRows(ctx, tx, scanApp, `SELECT `+appCols+` FROM apps WHERE name IN `+apps.sql+` ORDER BY name`, apps.args()...); err != nil {
			return err
		}
		if snap.Segments, err = listRows(ctx, tx, scanSegment, `SELECT `+segmentCols+` FROM segments WHERE name IN `+segments.sql+` ORDER BY name`, segments.args()...); err != nil {
			return err
		}
		if snap.Gateways, err = listRows(ctx, tx, scanGateway, `SELECT `+gatewayCols+` FROM gateways WHERE id IN `+gateways.sql+` ORDER BY id`, gateways.args()...); err != nil {
			return err
		}
		if snap.Devices, err = listRows(ctx, tx, scanDevice, `SELECT `+deviceCols+` FROM devices WHERE `+devWhere+` ORDER BY id`, devArgs...); err != nil {
			return err
		}
		posture, err := listRows(ctx, tx, scanPosture, `SELECT `+postureCols+` FROM device_posture WHERE device_id IN (SELECT id FROM devices WHERE `+devWhere+`)`, devArgs...)
		if err != nil {
			return err
		}
		snap.Posture = make(map[string]store.PostureRecord, len(posture))
		for _, p := range posture {
			snap.Posture[p.DeviceID] = p
		}
		// Newest session of each device named, of each device of a named
		// user, and of each device a named user had a session on.
		if snap.Sessions, err = listRows(ctx, tx, scanSession, `SELECT `+sessionCols+` FROM sessions s
			WHERE (s.device_id IN `+devices.sql+` OR s.user_name IN `+users.sql+` OR s.device_id IN (SELECT id FROM devices WHERE user_name IN `+users.sql+`))
			AND s.id = (SELECT id FROM sessions WHERE device_id = s.device_id ORDER BY started_at DESC, ended_at = 0 DESC LIMIT 1)
			ORDER BY device_id`, append(append(devices.args(), users.args()...), users.args()...)...); err != nil {
			return err
		}
		if snap.Identities, err = listRows(ctx, tx, scanIdentity, `SELECT `+identityCols+` FROM identities WHERE user_name IN `+users.sql+` ORDER BY idp, subject`, users.args()...); err != nil {
			return err
		}
		for i := range snap.Identities {
			snap.Identities[i].RefreshToken = "" // the map never needs it
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("partial snapshot: %w", err)
	}
	return &snap, nil
}

// names is a list of names as an SQL "(?, ?, ...)" with its arguments.
type names struct {
	sql  string
	list []string
}

func inList(list []string) names {
	if len(list) == 0 {
		return names{sql: "(NULL)"} // matches nothing
	}
	return names{sql: "(" + strings.TrimSuffix(strings.Repeat("?, ", len(list)), ", ") + ")", list: list}
}

func (n names) args() []any {
	out := make([]any, len(n.list))
	for i, v := range n.list {
		out[i] = v
	}
	return out
}

func scanString(r rowScanner) (string, error) {
	var v string
	return v, r.Scan(&v)
}
