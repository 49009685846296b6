package store

// IdentityStore keeps users' links to external identity providers (OIDC
// issuer and subject, groups claim, refresh state) (issue 5). Part of
// [Store].
type IdentityStore interface{}
