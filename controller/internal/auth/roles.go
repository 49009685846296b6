package auth

import (
	"fmt"
	"slices"
	"strings"
)

// Role is an administrator's role. Every admin token carries one; its
// permissions are the role's, optionally narrowed by the token's scopes.
type Role string

// Roles, from most to least powerful.
const (
	RoleOwner        Role = "owner"         // everything, including admins and their tokens
	RoleNetworkAdmin Role = "network-admin" // policy, directory, users, gateways; not admins
	RoleAuditor      Role = "auditor"       // reads configuration, audit and reports; changes nothing
	RoleHelpdesk     Role = "helpdesk"      // reads; ends sessions, revokes devices, disables users
	RoleReviewer     Role = "reviewer"      // reads and decides access reviews; nothing else
)

// Roles lists every role, most powerful first.
var Roles = []Role{RoleOwner, RoleNetworkAdmin, RoleAuditor, RoleHelpdesk, RoleReviewer}

// Permission is one thing an admin route needs. Each admin route requires
// exactly one.
type Permission string

// Permissions.
const (
	// PermRead: read the directory, gateways, devices, sessions, policy
	// versions and plans (a plan changes nothing).
	PermRead Permission = "read"
	// PermAuditRead: read the audit trail.
	PermAuditRead Permission = "audit.read"
	// PermAccessRevoke: take access away, never grant it: end sessions,
	// revoke devices, disable users.
	PermAccessRevoke Permission = "access.revoke"
	// PermUsersWrite: create, delete and re-enable users, regenerate their
	// recovery codes, delete devices.
	PermUsersWrite Permission = "users.write"
	// PermPolicyWrite: segments, apps, groups, rules, policy apply and
	// rollback.
	PermPolicyWrite Permission = "policy.write"
	// PermGatewaysWrite: gateway enrollment tokens, gateway deletion.
	PermGatewaysWrite Permission = "gateways.write"
	// PermAdminsRead: list admin accounts and admin tokens (never secrets).
	PermAdminsRead Permission = "admins.read"
	// PermAdminsWrite: create, disable and delete admins; create and revoke
	// admin tokens.
	PermAdminsWrite Permission = "admins.write"
	// PermAuditArchive: request and approve archiving audit records (two
	// different admins before the retention end).
	PermAuditArchive Permission = "audit.archive"
	// PermReviewsRead: list and show access review campaigns, their
	// lines and evidence.
	PermReviewsRead Permission = "reviews.read"
	// PermReviewsDecide: decide the lines of a campaign one is a reviewer
	// of (keep, revoke, narrow), applying a revocation at once if asked:
	// it only ever takes access away.
	PermReviewsDecide Permission = "reviews.decide"
	// PermReviewsManage: start and close campaigns (closing applies the
	// revocations decided).
	PermReviewsManage Permission = "reviews.manage"
	// PermBreakGlassReview: sign off a break-glass use after the fact
	// (two different admins close one). A sign-off changes no access.
	PermBreakGlassReview Permission = "breakglass.review"
)

// Permissions lists every permission.
var Permissions = []Permission{
	PermRead, PermAuditRead, PermAccessRevoke, PermUsersWrite,
	PermPolicyWrite, PermGatewaysWrite, PermAdminsRead, PermAdminsWrite,
	PermAuditArchive, PermReviewsRead, PermReviewsDecide, PermReviewsManage, PermBreakGlassReview,
}

var rolePerms = map[Role][]Permission{
	RoleOwner: Permissions,
	RoleNetworkAdmin: {PermRead, PermAuditRead, PermAccessRevoke, PermUsersWrite,
		PermPolicyWrite, PermGatewaysWrite, PermReviewsRead, PermReviewsDecide, PermReviewsManage, PermBreakGlassReview},
	RoleAuditor:  {PermRead, PermAuditRead, PermAdminsRead, PermReviewsRead, PermBreakGlassReview},
	RoleHelpdesk: {PermRead, PermAccessRevoke},
	// A reviewer sees the campaigns and decides their lines; it reads
	// nothing else of the configuration and changes nothing else.
	RoleReviewer: {PermReviewsRead, PermReviewsDecide},
}

// ParseRole returns the role named s, or an error listing the roles.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if _, ok := rolePerms[r]; !ok {
		return "", fmt.Errorf("unknown role %q: use one of %s", s, roleList())
	}
	return r, nil
}

// ParsePermission returns the permission named s, or an error listing them.
func ParsePermission(s string) (Permission, error) {
	p := Permission(s)
	if !slices.Contains(Permissions, p) {
		names := make([]string, len(Permissions))
		for i, p := range Permissions {
			names[i] = string(p)
		}
		return "", fmt.Errorf("unknown permission %q: use one of %s", s, strings.Join(names, ", "))
	}
	return p, nil
}

func roleList() string {
	names := make([]string, len(Roles))
	for i, r := range Roles {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

// Permissions returns the role's permissions (nil for an unknown role).
func (r Role) Permissions() []Permission { return slices.Clone(rolePerms[r]) }

// Grants reports whether holders of the role may do p without narrowing.
func (r Role) Grants(p Permission) bool { return slices.Contains(rolePerms[r], p) }

// RolesGranting returns the roles that grant p, most powerful first, for
// error messages ("needs owner or network-admin").
func RolesGranting(p Permission) []Role {
	var out []Role
	for _, r := range Roles {
		if r.Grants(p) {
			out = append(out, r)
		}
	}
	return out
}

// Scope is what a token may do: a role, optionally narrowed to a subset of
// the role's permissions. The zero Scope grants nothing.
type Scope struct {
	Role Role
	// Only, when non-empty, narrows the role to these permissions (each
	// must be one the role grants; others are ignored).
	Only []Permission
}

// Allows reports whether the scope grants p.
func (s Scope) Allows(p Permission) bool {
	if !s.Role.Grants(p) {
		return false
	}
	return len(s.Only) == 0 || slices.Contains(s.Only, p)
}

// Effective returns the permissions the scope grants, in [Permissions]
// order.
func (s Scope) Effective() []Permission {
	var out []Permission
	for _, p := range Permissions {
		if s.Allows(p) {
			out = append(out, p)
		}
	}
	return out
}

// Covers reports whether s grants every permission o grants: a token
// holder may only issue tokens its own scope covers.
func (s Scope) Covers(o Scope) bool {
	for _, p := range o.Effective() {
		if !s.Allows(p) {
			return false
		}
	}
	return true
}

// CheckNarrowing checks that every permission in only is granted by role.
func CheckNarrowing(role Role, only []Permission) error {
	for _, p := range only {
		if !role.Grants(p) {
			return fmt.Errorf("role %s does not grant %s: a scope can only narrow its role", role, p)
		}
	}
	return nil
}
