// Package store is the controller's persistent state: the directory
// (segments, apps, users, groups, rules), enrolled gateways and devices,
// single-use enrollment tokens and the audit trail.
//
// [Store] is the boundary; the embedded SQLite implementation is the default
// (no other server needed). Every method is one transaction: a call either
// changes everything it names or nothing.
package store

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/wgkey"
	"golang.org/x/mod/sumdb/tlog"
)

// Sentinel errors callers branch on (the API maps them to HTTP statuses and
// cordonctl to exit codes).
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrInUse         = errors.New("still in use")             // delete blocked by a reference
	ErrTokenInvalid  = errors.New("token invalid or expired") // unknown, used or expired
	ErrAddrExhausted = errors.New("overlay address pool exhausted")
	ErrStale         = errors.New("changed since it was read") // a compare-and-set lost the race
	ErrDisabled      = errors.New("disabled")                  // the user (or account) is disabled
	// ErrRequestSeen: a request ID was claimed before (the change it names
	// has committed).
	ErrRequestSeen = errors.New("request already applied")
)

// OverlayPrefix is the pool overlay addresses come from (RFC 6598 shared
// address space, as most overlays use).
var OverlayPrefix = netip.MustParsePrefix("100.64.0.0/10")

// Segment is a set of real prefixes behind one or more gateways.
type Segment struct {
	Name      string         `json:"name"`
	CIDRs     []netip.Prefix `json:"cidrs"`
	CreatedAt time.Time      `json:"created_at"`
}

// Classification is an app's data classification.
type Classification string

// Classifications.
const (
	ClassPHI      Classification = "phi"
	ClassInternal Classification = "internal"
	ClassPublic   Classification = "public"
)

// App is an application inside a segment.
type App struct {
	Name           string             `json:"name"`
	Segment        string             `json:"segment"`
	DNSName        string             `json:"dns_name"`
	Addr           netip.Prefix       `json:"addr"` // a host (/32, /128) or a prefix
	Proto          policy.Proto       `json:"proto"`
	Ports          []policy.PortRange `json:"ports"`
	Classification Classification     `json:"classification"`
	// Emergency marks the app for emergency access: a break-glass
	// session reaches emergency apps (those its policy grants) and
	// nothing else.
	Emergency bool      `json:"emergency,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// User is a local user. PasswordHash is an encoded argon2id hash;
// TOTPSecret is the base32 TOTP seed. Neither ever leaves the controller.
type User struct {
	Name         string `json:"name"`
	PasswordHash string `json:"-"`
	TOTPSecret   string `json:"-"`
	Disabled     bool   `json:"disabled"`
	// BreakGlass marks a pre-provisioned emergency account (cordonctl
	// breakglass create): it signs in only with its password and one of
	// its sealed one-time codes plus a justification, and such a session
	// is time-bound and reaches only emergency apps.
	BreakGlass bool      `json:"break_glass,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// Group is a named set of users.
type Group struct {
	Name      string    `json:"name"`
	Members   []string  `json:"members"` // user names, sorted
	CreatedAt time.Time `json:"created_at"`
}

// Rule lets a group reach an app (the skeleton's single rule type).
type Rule struct {
	Name      string    `json:"name"`
	Group     string    `json:"group"`
	App       string    `json:"app"`
	CreatedAt time.Time `json:"created_at"`
}

// Gateway is an enrolled gateway.
type Gateway struct {
	ID          string       `json:"id"`
	Name        string       `json:"name"`
	Segment     string       `json:"segment"`
	PublicKey   wgkey.Public `json:"public_key"`
	OverlayAddr netip.Addr   `json:"overlay_addr"`
	Endpoint    string       `json:"endpoint"`
	CreatedAt   time.Time    `json:"created_at"`
	// DrainedAt is when an admin drained the gateway (cordonctl gateway
	// drain): clients move off it before maintenance. Zero: not drained.
	DrainedAt time.Time `json:"drained_at,omitzero"`
}

// Device is an enrolled client device, owned by one user.
type Device struct {
	ID          string       `json:"id"`
	User        string       `json:"user"`
	Hostname    string       `json:"hostname"`
	PublicKey   wgkey.Public `json:"public_key"`
	OverlayAddr netip.Addr   `json:"overlay_addr"`
	CreatedAt   time.Time    `json:"created_at"`
	// MFAAt is when the device's user last completed a login with both
	// factors (password and TOTP) on this device; zero: never recorded.
	MFAAt time.Time `json:"mfa_at,omitzero"`
	// RevokedAt is when an admin revoked the device; zero while it is not.
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	// Quarantine is set while an admin holds the device in quarantine: it
	// is no gateway's peer and reaches no app, but keeps its control
	// channel. Zero while it is not.
	Quarantine Quarantine `json:"quarantine,omitzero"`
}

// Quarantine is an admin's isolation of a device (cordonctl device
// quarantine). Signing in again or re-enrolling does not end it; only a
// release does.
type Quarantine struct {
	At     time.Time `json:"at"`
	By     string    `json:"by"`     // the admin's actor, "admin:alice"
	Reason string    `json:"reason"` // shown to the device's user
}

// Active reports whether the device is quarantined.
func (q Quarantine) Active() bool { return !q.At.IsZero() }

// EnrollToken is a single-use, expiring gateway enrollment token. Only the
// SHA-256 of the secret is stored.
type EnrollToken struct {
	ID        string     `json:"id"`
	Hash      []byte     `json:"-"`
	Segment   string     `json:"segment"`
	Name      string     `json:"name"` // gateway name to give on redemption
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	UsedAt    *time.Time `json:"used_at,omitempty"`
	UsedBy    string     `json:"used_by,omitempty"` // gateway ID
}

// AuditEvent is one record of the audit trail. Seq is assigned by the store
// and strictly increasing.
type AuditEvent struct {
	Seq     int64             `json:"seq"`
	Time    time.Time         `json:"time"`
	Type    audit.Type        `json:"type"`    // one of the pkg/audit constants
	Actor   string            `json:"actor"`   // who did it: "admin", "user:nurse", "gateway:gw-1"
	Outcome string            `json:"outcome"` // "success", "failure", "allow", "deny"
	Subject string            `json:"subject"` // what it was done to
	Details map[string]string `json:"details,omitempty"`
	// RequestID is the client's idempotency key of the request that made
	// the change this event records, if it sent one: it ties the records
	// of one call together and lets a retried call learn what it did.
	RequestID string `json:"request_id,omitempty"`
}

// Validate checks the event against its type's schema (audit.Validate).
func (e AuditEvent) Validate() error { return audit.Validate(e.Type, e.Outcome, e.Details) }

// Record is the event as the audit log (pkg/auditlog) covers it.
func (e AuditEvent) Record() auditlog.Record {
	return auditlog.Record{Seq: e.Seq, Time: e.Time, Type: e.Type, Actor: e.Actor, Outcome: e.Outcome,
		Subject: e.Subject, Details: e.Details, RequestID: e.RequestID}
}

// Checkpoint is a signed checkpoint of the audit log as the controller
// stored it.
type Checkpoint struct {
	Size int64
	Time time.Time
	Note []byte // the signed note; auditlog.OpenCheckpoint reads it
}

// AuditLogStore keeps the audit trail as a Merkle tree (pkg/auditlog):
// the record with Seq s is leaf s-1, so seqs run 1, 2, 3 ... without gaps.
// AppendAudit appends each record's leaf and the tree hashes it completes
// (auditlog.Tree.Append, the same as tlog.StoredHashes) in the transaction
// that stores the record, so the log never disagrees with what committed.
// It fails, and so does the change it records, if the stored hashes the
// next leaf needs are missing: a trail changed outside the controller.
type AuditLogStore interface {
	// AuditLogSize is the number of records in the log (the highest Seq).
	AuditLogSize(ctx context.Context) (int64, error)
	// ReadAuditHashes returns the stored tree hashes at tlog storage
	// indexes (it makes the store a tlog.HashReader); ErrNotFound if one
	// is missing.
	ReadAuditHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error)
	// ScanAuditLog calls fn with every record whose Seq is in [from, to],
	// in Seq order, and the leaf hash stored when it was appended (logged
	// is false for a record that has none: one added outside the
	// controller). It reads in pages, each its own read transaction, so
	// a long scan does not hold the database; fn's error stops it.
	ScanAuditLog(ctx context.Context, from, to int64, fn func(e AuditEvent, leaf tlog.Hash, logged bool) error) error
	// PutCheckpoint stores a signed checkpoint (ErrAlreadyExists for a
	// size already stored).
	PutCheckpoint(ctx context.Context, c Checkpoint) error
	// LatestCheckpoint returns the stored checkpoint of the largest size
	// (ErrNotFound if none).
	LatestCheckpoint(ctx context.Context) (Checkpoint, error)
	// ScanCheckpoints calls fn with every stored checkpoint, smallest size
	// first.
	ScanCheckpoints(ctx context.Context, fn func(Checkpoint) error) error
}

// AuditFilter selects audit events; zero fields match everything. Events
// come newest first.
type AuditFilter struct {
	Type     string // exact type, or a prefix ending in "." ("flow.")
	AfterSeq int64
	// RequestID keeps the events of one request (exact match).
	RequestID string
	Limit     int // 0 means 100
}

// RequestRetention is how long a request ID is remembered: a client retries
// an interrupted call within seconds; a day covers a controller that was
// down for a night.
const RequestRetention = 24 * time.Hour

// PolicyVersion is one applied policy file. Versions are numbered 1, 2, ...
// by the store; the newest is the active policy (a rollback stores the old
// text again as a new version, so history only grows).
type PolicyVersion struct {
	Version    int64     `json:"version"`
	File       string    `json:"file"`   // the name it was applied under, for error positions
	Source     []byte    `json:"-"`      // the policy text as applied; empty in ListPolicyVersions
	SHA256     string    `json:"sha256"` // hex SHA-256 of Source
	Actor      string    `json:"actor"`
	Reason     string    `json:"reason"`
	RollbackOf int64     `json:"rollback_of,omitempty"` // the version this one re-applies, 0 if none
	CreatedAt  time.Time `json:"created_at"`
}

// Snapshot is a consistent read of everything the network map depends on.
type Snapshot struct {
	Segments []Segment
	Apps     []App
	Users    []User
	Groups   []Group
	Rules    []Rule
	Gateways []Gateway
	Devices  []Device
	// Policy is the active policy version, Source included; nil while no
	// policy was ever applied (the maps then come from Rules).
	Policy *PolicyVersion
	// Posture is each device's latest posture report, by device ID
	// (devices that never reported are missing).
	Posture map[string]PostureRecord
	// Sessions holds each device's newest session, active or ended (an
	// ended one tells the device why it must sign in again).
	Sessions []Session
	// Identities are users' links to OIDC providers (their IdP groups),
	// without refresh tokens.
	Identities []Identity
}

// Store is the controller's persistent state. Implementations are safe for
// concurrent use. List methods return results sorted by name (or ID).
type Store interface {
	CreateSegment(ctx context.Context, s Segment) error
	GetSegment(ctx context.Context, name string) (Segment, error)
	ListSegments(ctx context.Context) ([]Segment, error)
	DeleteSegment(ctx context.Context, name string) error // ErrInUse while apps or gateways reference it

	CreateApp(ctx context.Context, a App) error // ErrNotFound if the segment does not exist
	GetApp(ctx context.Context, name string) (App, error)
	ListApps(ctx context.Context) ([]App, error)
	DeleteApp(ctx context.Context, name string) error // ErrInUse while rules reference it

	CreateUser(ctx context.Context, u User) error
	GetUser(ctx context.Context, name string) (User, error)
	ListUsers(ctx context.Context) ([]User, error)
	DeleteUser(ctx context.Context, name string) error // also removes memberships and devices
	// SetUserDisabled disables (or re-enables) a user. A disabled user
	// cannot sign in and gets no network access; devices and memberships
	// are kept for re-enabling and for the access review (ErrNotFound).
	// Disabling ends the user's active sessions at `at` with
	// EndUserDisabled in the same transaction and returns them, so no
	// session survives it; enabling ends none and brings none back.
	SetUserDisabled(ctx context.Context, name string, disabled bool, at time.Time) (ended []Session, err error)

	CreateGroup(ctx context.Context, g Group) error
	GetGroup(ctx context.Context, name string) (Group, error)
	ListGroups(ctx context.Context) ([]Group, error)
	DeleteGroup(ctx context.Context, name string) error // ErrInUse while rules reference it
	AddMember(ctx context.Context, group, user string) error
	RemoveMember(ctx context.Context, group, user string) error // ErrNotFound if not a member

	CreateRule(ctx context.Context, r Rule) error // ErrNotFound if group or app is missing
	GetRule(ctx context.Context, name string) (Rule, error)
	ListRules(ctx context.Context) ([]Rule, error)
	DeleteRule(ctx context.Context, name string) error

	CreateEnrollToken(ctx context.Context, t EnrollToken) error
	ListEnrollTokens(ctx context.Context) ([]EnrollToken, error)
	// RedeemEnrollToken consumes the token whose hash is given and creates
	// the gateway, with an allocated overlay address, in one transaction:
	// of many concurrent redemptions exactly one succeeds. Returns
	// ErrTokenInvalid for an unknown, used or expired token.
	RedeemEnrollToken(ctx context.Context, hash []byte, now time.Time, g Gateway) (Gateway, error)

	GetGateway(ctx context.Context, id string) (Gateway, error)
	ListGateways(ctx context.Context) ([]Gateway, error)
	UpdateGatewayEndpoint(ctx context.Context, id, endpoint string) error
	// SetGatewayDrained sets gateway id's DrainedAt (zero: undrained).
	SetGatewayDrained(ctx context.Context, id string, at time.Time) error
	DeleteGateway(ctx context.Context, id string) error

	// CreateDevice stores a new device with an allocated overlay address.
	CreateDevice(ctx context.Context, d Device) (Device, error)
	// UpdateDevice changes a device's key, hostname and MFAAt (re-login).
	UpdateDevice(ctx context.Context, d Device) error
	// SetDeviceQuarantine stores device id's quarantine (the zero
	// Quarantine releases it). ErrNotFound if the device does not exist.
	SetDeviceQuarantine(ctx context.Context, id string, q Quarantine) error
	GetDevice(ctx context.Context, id string) (Device, error)
	ListDevices(ctx context.Context) ([]Device, error)
	// ListDevicesByKey returns the devices enrolled with key (none, one,
	// or several: a key is not unique), sorted by ID.
	ListDevicesByKey(ctx context.Context, key wgkey.Public) ([]Device, error)
	DeleteDevice(ctx context.Context, id string) error

	// Update runs fn in one write transaction: everything fn does through
	// tx commits when fn returns nil, or nothing does. This is how a change
	// and its audit record commit together. tx is valid only until fn
	// returns; a write through the outer Store from inside fn fails
	// instead of deadlocking. Each method called on tx is atomic on its
	// own (fn may handle its error and go on).
	Update(ctx context.Context, fn func(ctx context.Context, tx Store) error) error
	// ClaimRequest records that the request with this client-chosen ID is
	// being applied, so a retry of it can learn that it was: ErrRequestSeen
	// if the ID was claimed before. Call it inside the Update that makes
	// the change; IDs are kept for RequestRetention.
	ClaimRequest(ctx context.Context, id string, at time.Time) error

	// AppendAudit assigns Seq and stores the events in one transaction,
	// with their leaves of the audit log (AuditLogStore). Strings that are
	// not valid UTF-8 are stored with U+FFFD in place of each bad byte, so
	// the record reads back as the log covers it.
	AppendAudit(ctx context.Context, events ...AuditEvent) error
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, error)

	// PutPolicyVersion stores v as the next version and makes it the active
	// policy, in one transaction. It assigns Version and, if zero,
	// CreatedAt; SHA256 is computed from Source. prev is the version the
	// caller saw active (0: none); if another version became active since,
	// nothing is stored and ErrStale is returned.
	PutPolicyVersion(ctx context.Context, prev int64, v PolicyVersion) (PolicyVersion, error)
	// GetPolicyVersion returns one version, Source included (ErrNotFound).
	GetPolicyVersion(ctx context.Context, version int64) (PolicyVersion, error)
	// ListPolicyVersions returns every version, oldest first, without Source.
	ListPolicyVersions(ctx context.Context) ([]PolicyVersion, error)
	// ActivePolicy returns the active version, Source included, or
	// ErrNotFound if no policy was ever applied.
	ActivePolicy(ctx context.Context) (PolicyVersion, error)

	Snapshot(ctx context.Context) (*Snapshot, error)
	// SnapshotPart reads, in one read transaction, what a change that
	// names entities can have changed (see Snapshot.Patch): the named
	// apps, segments, gateways, users, groups and devices that exist,
	// the named devices' newest sessions and posture reports, the named
	// users' identities, and every rule. Other fields stay empty.
	SnapshotPart(ctx context.Context, c Change) (*Snapshot, error)
	Close() error

	AuditLogStore
	AuditArchiveStore
	SessionStore
	AdminStore
	PostureStore
	IdentityStore
	FlowAckStore
	ReviewStore
	BreakGlassStore
}

// FlowAck is the highest flow event sequence number the controller
// committed from one gateway's spool (issue 12). Records up to Seq of
// SpoolID are in the audit trail; a resend of them is not recorded again.
type FlowAck struct {
	GatewayID string
	SpoolID   string
	Seq       uint64
	UpdatedAt time.Time
}

// FlowAckStore keeps each gateway's FlowAck. Part of [Store].
type FlowAckStore interface {
	// GetFlowAck returns a gateway's (ErrNotFound if it never sent
	// numbered events).
	GetFlowAck(ctx context.Context, gatewayID string) (FlowAck, error)
	// PutFlowAck stores a gateway's, replacing the one before (ErrNotFound
	// if the gateway does not exist). Deleting the gateway deletes it.
	PutFlowAck(ctx context.Context, a FlowAck) error
}
