package store

import (
	"context"
	"time"
)

// Admin is an administrator account that yields short-lived admin tokens
// of the account's role. It signs in either locally (argon2id password and
// TOTP) or, when IdP is set, only through that identity provider, as the
// provider's user Subject (empty until the first sign-in binds it).
// PasswordHash and TOTPSecret never leave the controller; both are empty
// for an IdP account.
type Admin struct {
	Name         string    `json:"name"`
	Role         string    `json:"role"` // auth.Role
	PasswordHash string    `json:"-"`
	TOTPSecret   string    `json:"-"`
	IdP          string    `json:"idp,omitempty"`
	Subject      string    `json:"subject,omitempty"` // the IdP's "sub"
	Disabled     bool      `json:"disabled"`
	CreatedAt    time.Time `json:"created_at"`
}

// AdminToken is an admin API credential. Only the SHA-256 of the secret is
// stored. A token either belongs to an Admin account (a sign-in token; it
// dies with the account and is refused while the account is disabled) or
// stands alone (an automation token, or the first-start owner token).
// Either way it acts for Account: a token is refused while that account is
// disabled or once it is deleted.
type AdminToken struct {
	ID    string `json:"id"`
	Name  string `json:"name"`  // audit actor is "admin:<Name>"; the account name for sign-in tokens
	Admin string `json:"admin"` // owning account, "" for standalone tokens
	// Account is the admin account the token acts for: Admin for a
	// sign-in token; for a standalone token the account that issued it,
	// directly or through a token acting for it. "" only for the
	// first-start token, migrated legacy tokens and tokens issued by
	// tokens with no account.
	Account string   `json:"account,omitempty"`
	Role    string   `json:"role"` // auth.Role
	Scopes  []string `json:"scopes,omitempty"`
	Hash    []byte   `json:"-"`
	// CreatedBy is the actor that issued it ("admin:alice",
	// "controller:bootstrap", "login").
	CreatedBy  string    `json:"created_by"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"` // zero: never (only migrated legacy tokens)
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
}

// Usable reports whether the token may authenticate at now: not revoked
// and not expired (ExpiresAt is the first instant it is invalid).
func (t AdminToken) Usable(now time.Time) bool {
	return t.RevokedAt.IsZero() && (t.ExpiresAt.IsZero() || now.Before(t.ExpiresAt))
}

// RecoveryCode is one of a local user's one-time recovery codes; only its
// hash is stored.
type RecoveryCode struct {
	Hash      []byte    `json:"-"`
	CreatedAt time.Time `json:"created_at"`
	UsedAt    time.Time `json:"used_at,omitzero"` // zero while unused
}

// AdminStore keeps admin accounts, scoped admin tokens and local users'
// recovery codes (issue 5). Part of [Store].
type AdminStore interface {
	// CreateAdmin stores a new account (ErrAlreadyExists).
	CreateAdmin(ctx context.Context, a Admin) error
	GetAdmin(ctx context.Context, name string) (Admin, error)
	ListAdmins(ctx context.Context) ([]Admin, error)
	// SetAdminDisabled disables or re-enables an account (ErrNotFound).
	// The tokens acting for a disabled account (its sign-in tokens and
	// the standalone tokens it issued) are refused but kept.
	SetAdminDisabled(ctx context.Context, name string, disabled bool) error
	// BindAdminSubject binds an IdP account with no subject yet to
	// subject, with one conditional update: of concurrent first sign-ins
	// exactly one binds. ErrNotFound if no account name signs in through
	// idp; ErrTokenInvalid if it is already bound (to any subject);
	// ErrAlreadyExists if another account of idp is bound to subject.
	BindAdminSubject(ctx context.Context, name, idp, subject string) error
	// DeleteAdmin removes an account and every token it owns, and revokes
	// every standalone token acting for it, in one transaction
	// (ErrNotFound).
	DeleteAdmin(ctx context.Context, name string) error

	// CreateAdminToken stores t (ID, Name, Role, Hash required; a zero
	// CreatedAt becomes now; Account defaults to Admin and must equal it
	// when Admin is set). ErrNotFound if t.Admin or t.Account names no
	// account, ErrAlreadyExists if the ID or hash is taken.
	CreateAdminToken(ctx context.Context, t AdminToken) error
	// AdminTokenByHash returns the token whose hash is given, usable or
	// not, with the account it acts for (t.Account; zero Admin when
	// Account is "" or names an account that no longer exists);
	// ErrNotFound if none. Hashes are SHA-256 of 256-bit secrets, so the
	// index lookup reveals nothing useful about a secret.
	AdminTokenByHash(ctx context.Context, hash []byte) (AdminToken, Admin, error)
	// ListAdminTokens returns every token, oldest first.
	ListAdminTokens(ctx context.Context) ([]AdminToken, error)
	// RevokeAdminToken marks a token revoked at `at` (ErrNotFound if
	// unknown or already revoked).
	RevokeAdminToken(ctx context.Context, id string, at time.Time) error
	// TouchAdminToken records a use; it never moves LastUsedAt back.
	TouchAdminToken(ctx context.Context, id string, at time.Time) error
	// PruneAdminTokens deletes tokens that expired or were revoked before
	// `before` and returns how many.
	PruneAdminTokens(ctx context.Context, before time.Time) (int, error)

	// ReplaceRecoveryCodes replaces every recovery code of user with new
	// unused ones (hashes), in one transaction (ErrNotFound if no user).
	// Deleting a user deletes its codes.
	ReplaceRecoveryCodes(ctx context.Context, user string, hashes [][]byte, at time.Time) error
	// ListRecoveryCodes returns user's codes, used ones included, in the
	// order they were stored (empty for an unknown user).
	ListRecoveryCodes(ctx context.Context, user string) ([]RecoveryCode, error)
	// UseRecoveryCode marks user's unused code with this hash used at `at`
	// with one conditional update: of concurrent uses of one code exactly
	// one succeeds; the others, and an unknown or used code, get
	// ErrTokenInvalid. It returns how many unused codes remain.
	UseRecoveryCode(ctx context.Context, user string, hash []byte, at time.Time) (remaining int, err error)
}
