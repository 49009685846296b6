package store

// Audit event types (AuditEvent.Type). DESIGN.md wants every type in one
// typed schema; until the controller-core work moves them all here, the
// types below are the ones spelled in one place (the identity-provider
// events and session ends), and the rest still at their call sites. Add a
// type here, with what its Details carry, rather than as a literal.
const (
	// AuditIdPLink: a user was created and linked at their first sign-in
	// through an IdP. Details: source, idp_subject, email.
	AuditIdPLink = "auth.idp.link"
	// AuditIdPGroups: the IdP changed a user's groups at a refresh.
	// Details: subject, groups.
	AuditIdPGroups = "auth.idp.groups"
	// AuditIdPRefused: the IdP refused a user's refresh (any OAuth error
	// response, RFC 6749 §5.2), or the provider is gone; every session of
	// the user ends. Details: subject, reason, and for an OAuth answer
	// error (its code) and http_status.
	AuditIdPRefused = "auth.idp.refresh"
	// AuditIdPUnreachable: the IdP could not be reached for longer than
	// unreachable_limit since it last confirmed the user; every session
	// of the user ends. Details: subject, last_verified,
	// unreachable_limit, error, reason.
	AuditIdPUnreachable = "auth.idp.unreachable"
	// AuditSessionEnd: one session ended. Details: device, user, reason
	// (an End* value), comment.
	AuditSessionEnd = "session.end"
)
