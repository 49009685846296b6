package state

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// This file: the one-by-one directory (segments, apps, users, groups,
// rules), enrollment tokens, and deleting gateways and devices.

// Refused is a mutation an invariant refused; nothing changed. Msg says why
// and what to do; Unwrap gives the store sentinel that classifies it
// (ErrNotFound, ErrAlreadyExists, ErrInUse) or ErrConflict.
type Refused struct {
	Kind error
	Msg  string
}

func (e *Refused) Error() string { return e.Msg }
func (e *Refused) Unwrap() error { return e.Kind }

// ErrConflict classifies a refusal by the current state (not a name clash):
// for example, a directory edit while a policy file is active.
var ErrConflict = errors.New("conflicts with the current state")

func refuse(kind error, format string, args ...any) error {
	return &Refused{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// directoryEditable refuses one-by-one edits of segments, apps, groups and
// rules once a policy file is active: it is then their single source and
// such an edit would silently change nothing. Checked inside the edit's
// transaction, so a policy applied meanwhile cannot slip between.
func directoryEditable(ctx context.Context, tx store.Store) error {
	v, err := tx.ActivePolicy(ctx)
	switch {
	case err == nil:
		return refuse(ErrConflict, "policy version %d is active: segments, apps, groups and rules come from the policy file now; "+
			"edit the file and run 'cordonctl policy plan' and 'cordonctl policy apply' instead", v.Version)
	case !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("read the active policy: %w", err)
	}
	return nil
}

// CreateSegment creates a segment. CreatedAt is set.
func (s *State) CreateSegment(ctx context.Context, o Origin, seg store.Segment) (store.Segment, error) {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if err := directoryEditable(ctx, tx); err != nil {
			return err
		}
		seg.CreatedAt = op.at
		if err := tx.CreateSegment(ctx, seg); errors.Is(err, store.ErrAlreadyExists) {
			return refuse(store.ErrAlreadyExists, "segment %q already exists", seg.Name)
		} else if err != nil {
			return err
		}
		op.success(audit.AdminSegmentCreate, seg.Name, nil)
		op.change.Segments = []string{seg.Name}
		return nil
	})
	return seg, err
}

// DeleteSegment deletes a segment no app or gateway uses.
func (s *State) DeleteSegment(ctx context.Context, o Origin, name string) error {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if err := directoryEditable(ctx, tx); err != nil {
			return err
		}
		switch err := tx.DeleteSegment(ctx, name); {
		case errors.Is(err, store.ErrNotFound):
			return refuse(store.ErrNotFound, "segment %q not found", name)
		case errors.Is(err, store.ErrInUse):
			users, lerr := segmentUsers(ctx, tx, name)
			if lerr != nil {
				return lerr
			}
			return refuse(store.ErrInUse, "segment %q is still used by %s: delete those first (or move the apps to another segment)", name, users)
		case err != nil:
			return err
		}
		op.success(audit.AdminSegmentDelete, name, nil)
		op.change.Segments = []string{name}
		return nil
	})
	return err
}

// segmentUsers names what keeps segment name in use: its apps and
// gateways, the first few of each by name.
func segmentUsers(ctx context.Context, tx store.Store, name string) (string, error) {
	apps, err := tx.ListApps(ctx)
	if err != nil {
		return "", err
	}
	gws, err := tx.ListGateways(ctx)
	if err != nil {
		return "", err
	}
	var a, g []string
	for _, x := range apps {
		if x.Segment == name {
			a = append(a, x.Name)
		}
	}
	for _, x := range gws {
		if x.Segment == name {
			g = append(g, x.Name)
		}
	}
	var parts []string
	for _, l := range []struct {
		kind  string
		names []string
	}{{"app", a}, {"gateway", g}} {
		if len(l.names) == 0 {
			continue
		}
		slices.Sort(l.names)
		kind := l.kind
		if len(l.names) > 1 {
			kind += "s"
		}
		list := strings.Join(l.names[:min(len(l.names), 5)], ", ")
		if len(l.names) > 5 {
			list += fmt.Sprintf(" and %d more", len(l.names)-5)
		}
		parts = append(parts, kind+" "+list)
	}
	if len(parts) == 0 {
		return "apps or gateways", nil // deleted meanwhile; the store still refused
	}
	return strings.Join(parts, " and "), nil
}

// AppFitsSegment checks an app against its segment (the API's validation;
// nil when it fits).
type AppFitsSegment func(app store.App, seg store.Segment) error

// CreateApp creates an app in an existing segment, with a DNS name no other
// app has. fits checks the app's address against the segment.
func (s *State) CreateApp(ctx context.Context, o Origin, app store.App, fits AppFitsSegment) (store.App, error) {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if err := directoryEditable(ctx, tx); err != nil {
			return err
		}
		seg, err := tx.GetSegment(ctx, app.Segment)
		if errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "segment %q not found: create it first (cordonctl segment create)", app.Segment)
		} else if err != nil {
			return err
		}
		if fits != nil {
			if err := fits(app, seg); err != nil {
				return err
			}
		}
		// Two apps answering to one name would make DNS ambiguous (the
		// schema's unique index is the backstop; this names the other app).
		apps, err := tx.ListApps(ctx)
		if err != nil {
			return err
		}
		for _, other := range apps {
			if other.DNSName == app.DNSName && other.Name != app.Name {
				return refuse(store.ErrAlreadyExists, "dns_name %q is already used by app %q", app.DNSName, other.Name)
			}
		}
		app.CreatedAt = op.at
		if err := tx.CreateApp(ctx, app); errors.Is(err, store.ErrAlreadyExists) {
			return refuse(store.ErrAlreadyExists, "app %q already exists", app.Name)
		} else if err != nil {
			return err
		}
		details := map[string]string{"segment": app.Segment, "classification": string(app.Classification)}
		if app.Emergency {
			details["emergency"] = "true"
		}
		op.success(audit.AdminAppCreate, app.Name, details)
		op.change.Apps, op.change.Segments = []string{app.Name}, []string{app.Segment}
		return nil
	})
	return app, err
}

// DeleteApp deletes an app no rule uses.
func (s *State) DeleteApp(ctx context.Context, o Origin, name string) error {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if err := directoryEditable(ctx, tx); err != nil {
			return err
		}
		app, err := tx.GetApp(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "app %q not found", name)
		} else if err != nil {
			return err
		}
		switch err := tx.DeleteApp(ctx, name); {
		case errors.Is(err, store.ErrInUse):
			return refuse(store.ErrInUse, "app %q is still used by rules: delete those first", name)
		case err != nil:
			return err
		}
		op.success(audit.AdminAppDelete, name, nil)
		op.change.Apps, op.change.Segments = []string{name}, []string{app.Segment}
		return nil
	})
	return err
}

// CreateUser creates a local user with their recovery codes (hashes), in
// one transaction: no user is left without codes.
func (s *State) CreateUser(ctx context.Context, o Origin, u store.User, recoveryHashes [][]byte) (store.User, error) {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		u.CreatedAt = op.at
		if err := tx.CreateUser(ctx, u); errors.Is(err, store.ErrAlreadyExists) {
			return refuse(store.ErrAlreadyExists, "user %q already exists", u.Name)
		} else if err != nil {
			return err
		}
		if err := tx.ReplaceRecoveryCodes(ctx, u.Name, recoveryHashes, op.at); err != nil {
			return fmt.Errorf("store recovery codes of user %s: %w", u.Name, err)
		}
		op.success(audit.AdminUserCreate, u.Name, map[string]string{"recovery_codes": strconv.Itoa(len(recoveryHashes))})
		// A new user has no devices yet, so no map changes; the map
		// engine still keeps the user (it reads only what changes name).
		op.change.Users = []string{u.Name}
		return nil
	})
	return u, err
}

// ReplaceRecoveryCodes gives a user new recovery codes (hashes); the old
// ones stop working.
func (s *State) ReplaceRecoveryCodes(ctx context.Context, o Origin, user string, hashes [][]byte) error {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if err := tx.ReplaceRecoveryCodes(ctx, user, hashes, op.at); errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "user %q not found", user)
		} else if err != nil {
			return err
		}
		op.success(audit.AdminUserRecoveryCodes, user, map[string]string{"count": strconv.Itoa(len(hashes))})
		return nil
	})
	return err
}

// SetUserDisabled disables or enables a user. Disabling ends the user's
// sessions in the same transaction (each with its session.end record);
// enabling brings none back.
func (s *State) SetUserDisabled(ctx context.Context, o Origin, name string, disabled bool) (store.User, error) {
	var u store.User
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		ended, err := tx.SetUserDisabled(ctx, name, disabled, op.at)
		if errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "user %q not found", name)
		} else if err != nil {
			return err
		}
		verb := audit.AdminUserEnable
		if disabled {
			verb = audit.AdminUserDisable
		}
		op.success(verb, name, nil)
		op.sessionsEnded(ended, "")
		op.change.Users = []string{name}
		u, err = tx.GetUser(ctx, name)
		return err
	})
	return u, err
}

// sessionsEnded records one session.end event per ended session.
func (o *op) sessionsEnded(ended []store.Session, comment string) {
	for _, ss := range ended {
		d := map[string]string{"device": ss.DeviceID, "user": ss.User, "reason": ss.EndReason}
		if comment != "" {
			d["comment"] = comment
		}
		o.record(store.AuditEvent{Time: ss.EndedAt, Type: audit.SessionEnd, Outcome: "success", Subject: ss.ID, Details: d})
		o.change.Devices = append(o.change.Devices, ss.DeviceID)
	}
}

// DeleteUser deletes a user, their memberships and devices.
func (s *State) DeleteUser(ctx context.Context, o Origin, name string) error {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if err := tx.DeleteUser(ctx, name); errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "user %q not found", name)
		} else if err != nil {
			return err
		}
		op.success(audit.AdminUserDelete, name, nil)
		op.change.Users = []string{name}
		return nil
	})
	return err
}

// CreateGroup creates an empty group.
func (s *State) CreateGroup(ctx context.Context, o Origin, g store.Group) (store.Group, error) {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if err := directoryEditable(ctx, tx); err != nil {
			return err
		}
		g.CreatedAt = op.at
		if err := tx.CreateGroup(ctx, g); errors.Is(err, store.ErrAlreadyExists) {
			return refuse(store.ErrAlreadyExists, "group %q already exists", g.Name)
		} else if err != nil {
			return err
		}
		op.success(audit.AdminGroupCreate, g.Name, nil)
		op.change.Groups = []string{g.Name} // no members, no rules yet: no map changes
		return nil
	})
	return g, err
}

// DeleteGroup deletes a group no rule uses, with its memberships.
func (s *State) DeleteGroup(ctx context.Context, o Origin, name string) error {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if err := directoryEditable(ctx, tx); err != nil {
			return err
		}
		switch err := tx.DeleteGroup(ctx, name); {
		case errors.Is(err, store.ErrNotFound):
			return refuse(store.ErrNotFound, "group %q not found", name)
		case errors.Is(err, store.ErrInUse):
			return refuse(store.ErrInUse, "group %q is still used by rules: delete those first", name)
		case err != nil:
			return err
		}
		op.success(audit.AdminGroupDelete, name, nil)
		op.change.Groups = []string{name}
		return nil
	})
	return err
}

// AddMember adds an existing user to an existing group and returns the
// group as it now is.
func (s *State) AddMember(ctx context.Context, o Origin, group, user string) (store.Group, error) {
	var g store.Group
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if err := directoryEditable(ctx, tx); err != nil {
			return err
		}
		// Look both up first so the error can say which one is missing.
		if _, err := tx.GetGroup(ctx, group); errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "group %q not found", group)
		} else if err != nil {
			return err
		}
		if _, err := tx.GetUser(ctx, user); errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "user %q not found", user)
		} else if err != nil {
			return err
		}
		if err := tx.AddMember(ctx, group, user); errors.Is(err, store.ErrAlreadyExists) {
			return refuse(store.ErrAlreadyExists, "user %q is already a member of group %q", user, group)
		} else if err != nil {
			return err
		}
		op.success(audit.AdminGroupAddMember, group, map[string]string{"user": user})
		op.change.Users, op.change.Groups = []string{user}, []string{group}
		var err error
		g, err = tx.GetGroup(ctx, group)
		return err
	})
	return g, err
}

// RemoveMember takes a user out of a group.
func (s *State) RemoveMember(ctx context.Context, o Origin, group, user string) error {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if err := directoryEditable(ctx, tx); err != nil {
			return err
		}
		if err := tx.RemoveMember(ctx, group, user); errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "user %q is not a member of group %q (or the group does not exist)", user, group)
		} else if err != nil {
			return err
		}
		op.success(audit.AdminGroupRemoveMember, group, map[string]string{"user": user})
		op.change.Users, op.change.Groups = []string{user}, []string{group}
		return nil
	})
	return err
}

// CreateRule lets an existing group reach an existing app.
func (s *State) CreateRule(ctx context.Context, o Origin, rule store.Rule) (store.Rule, error) {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if err := directoryEditable(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.GetGroup(ctx, rule.Group); errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "group %q not found", rule.Group)
		} else if err != nil {
			return err
		}
		if _, err := tx.GetApp(ctx, rule.App); errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "app %q not found", rule.App)
		} else if err != nil {
			return err
		}
		rule.CreatedAt = op.at
		if err := tx.CreateRule(ctx, rule); errors.Is(err, store.ErrAlreadyExists) {
			return refuse(store.ErrAlreadyExists, "rule %q already exists", rule.Name)
		} else if err != nil {
			return err
		}
		op.success(audit.AdminRuleCreate, rule.Name, map[string]string{"group": rule.Group, "app": rule.App})
		op.change.Groups, op.change.Apps = []string{rule.Group}, []string{rule.App}
		return nil
	})
	return rule, err
}

// DeleteRule deletes a rule.
func (s *State) DeleteRule(ctx context.Context, o Origin, name string) error {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if err := directoryEditable(ctx, tx); err != nil {
			return err
		}
		rule, err := tx.GetRule(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "rule %q not found", name)
		} else if err != nil {
			return err
		}
		if err := tx.DeleteRule(ctx, name); err != nil {
			return err
		}
		op.success(audit.AdminRuleDelete, name, nil)
		op.change.Groups, op.change.Apps = []string{rule.Group}, []string{rule.App}
		return nil
	})
	return err
}

// CreateEnrollToken stores a gateway enrollment token (its hash) for an
// existing segment. Under an active policy file the segment must be one of
// the file's; the directory then gets a record of it (gateways and tokens
// are keyed to it in the store; maps ignore it), made here once.
func (s *State) CreateEnrollToken(ctx context.Context, o Origin, t store.EnrollToken) error {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if err := tokenSegment(ctx, tx, t.Segment, op.at); err != nil {
			return err
		}
		if err := tx.CreateEnrollToken(ctx, t); errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "segment %q not found", t.Segment)
		} else if err != nil {
			return err
		}
		details := map[string]string{"segment": t.Segment, "expires_at": t.ExpiresAt.Format(time.RFC3339)}
		if t.Name != "" {
			details["name"] = t.Name
		}
		op.success(audit.AdminGatewayTokenCreate, t.ID, details)
		return nil
	})
	return err
}

// tokenSegment checks the segment of a new enrollment token (see
// CreateEnrollToken).
func tokenSegment(ctx context.Context, tx store.Store, name string, at time.Time) error {
	v, err := tx.ActivePolicy(ctx)
	if errors.Is(err, store.ErrNotFound) {
		if _, err := tx.GetSegment(ctx, name); errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "segment %q not found: create it first (cordonctl segment create), or apply a policy file that defines it", name)
		} else if err != nil {
			return err
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the active policy: %w", err)
	}
	pol, err := policyfile.Parse(v.File, v.Source)
	if err != nil {
		return fmt.Errorf("the active policy (version %d, %s) no longer parses: apply a corrected file: %w", v.Version, v.File, err)
	}
	seg, found := pol.Segments[name]
	if !found {
		have := strings.Join(pol.SegmentNames, ", ")
		if have == "" {
			have = "none"
		}
		return refuse(store.ErrNotFound, "segment %q is not in the active policy version %d (%s), whose segments are: %s; add it to the file, then 'cordonctl policy plan' and 'cordonctl policy apply'",
			clip(name), v.Version, v.File, have)
	}
	switch _, err := tx.GetSegment(ctx, name); {
	case err == nil:
		return nil
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	err = tx.CreateSegment(ctx, store.Segment{Name: name, CIDRs: seg.Prefixes, CreatedAt: at})
	if err != nil && !errors.Is(err, store.ErrAlreadyExists) {
		return fmt.Errorf("record policy segment %q for its gateways: %w", name, err)
	}
	return nil
}

// DeleteGateway deletes an enrolled gateway (its connection is closed with
// the next map push).
func (s *State) DeleteGateway(ctx context.Context, o Origin, id string) error {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if err := tx.DeleteGateway(ctx, id); errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "gateway %q not found", clip(id))
		} else if err != nil {
			return err
		}
		op.success(audit.AdminGatewayDelete, id, nil)
		op.change.Gateways = []string{id}
		return nil
	})
	return err
}

// DeleteDevice deletes a device (it must enroll again).
func (s *State) DeleteDevice(ctx context.Context, o Origin, id string) error {
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		if err := tx.DeleteDevice(ctx, id); errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "device %q not found", clip(id))
		} else if err != nil {
			return err
		}
		op.success(audit.AdminDeviceDelete, id, nil)
		op.change.Devices = []string{id}
		return nil
	})
	return err
}

// clip shortens an untrusted identifier for a message.
func clip(s string) string {
	const n = 80
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
