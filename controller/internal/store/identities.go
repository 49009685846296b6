package store

import (
	"context"
	"time"
)

// Identity links a user to an account at an external identity provider
// (OIDC): the provider's name in the controller's configuration and the
// subject ("sub") it asserts, which together never change for one person,
// unlike the user name, e-mail or groups, which are refreshed from the
// provider.
//
// RefreshToken is the provider's refresh token, kept so the controller can
// ask the provider, periodically, whether the user is still valid; it never
// leaves the controller. The controller passes it sealed (encrypted); the
// store keeps the bytes it is given.
type Identity struct {
	IdP     string `json:"idp"`
	Subject string `json:"subject"`
	User    string `json:"user"`
	Email   string `json:"email,omitempty"`
	// Claim is the claim name the policy's IdP references use for this
	// provider's groups ({claim: groups, value: Radiology}); Groups are the
	// values the provider last asserted, sorted.
	Claim        string    `json:"claim"`
	Groups       []string  `json:"groups"`
	RefreshToken string    `json:"-"`
	LastRefresh  time.Time `json:"last_refresh,omitzero"` // last sign-in or successful refresh
	// InvalidAt is when the provider refused a refresh (the user's sessions
	// were ended); zero while valid. The next sign-in clears it.
	InvalidAt time.Time `json:"invalid_at,omitzero"`
	CreatedAt time.Time `json:"created_at"`
}

// IdentityStore keeps users' links to external identity providers (OIDC
// issuer and subject, groups claim, refresh state) (issue 5). Part of
// [Store].
//
// A user created by LinkIdentity has no password hash and no TOTP secret,
// so no local login can succeed for it. Deleting a user deletes its links.
type IdentityStore interface {
	// LinkIdentity records a verified sign-in of id.Subject at id.IdP, in
	// one transaction. If the pair is already linked, it updates Email,
	// Claim, Groups, RefreshToken (when not empty) and LastRefresh, clears
	// InvalidAt, and returns the link: its User is the linked user, which
	// may differ from id.User (names are fixed at the first sign-in).
	// Otherwise it creates the user id.User (enabled, no password, no TOTP)
	// and the link; it never links an account that already exists, so it
	// returns ErrAlreadyExists when a user of that name does.
	LinkIdentity(ctx context.Context, id Identity) (Identity, error)
	// GetIdentity returns one link (ErrNotFound).
	GetIdentity(ctx context.Context, idp, subject string) (Identity, error)
	// ListIdentities returns every link, RefreshToken included, sorted by
	// IdP and subject.
	ListIdentities(ctx context.Context) ([]Identity, error)
	// UpdateIdentity stores the outcome of a refresh for an existing link
	// (ErrNotFound): Email, Claim, Groups, RefreshToken, LastRefresh and
	// InvalidAt are set as given (an empty RefreshToken forgets it).
	UpdateIdentity(ctx context.Context, id Identity) error
}
