package audit

// Event types. The spelling of each is fixed for good (see the package
// doc); what each carries is in specs below.
const (
	// Authentication.
	AuthLogin          Type = "auth.login"
	AuthAlert          Type = "auth.alert"
	AuthRecoveryCode   Type = "auth.recovery_code"
	AuthBreakGlass     Type = "auth.break_glass"
	AuthIdPLink        Type = "auth.idp.link"
	AuthIdPGroups      Type = "auth.idp.groups"
	AuthIdPRefresh     Type = "auth.idp.refresh"
	AuthIdPUnreachable Type = "auth.idp.unreachable"
	AdminLogin         Type = "admin.login"
	AdminIdPBind       Type = "admin.idp.bind"

	// Access.
	AdminAuth Type = "admin.auth"

	// Administration: admin.<resource>.<verb>.
	AdminSegmentCreate      Type = "admin.segment.create"
	AdminSegmentDelete      Type = "admin.segment.delete"
	AdminAppCreate          Type = "admin.app.create"
	AdminAppDelete          Type = "admin.app.delete"
	AdminUserCreate         Type = "admin.user.create"
	AdminUserEnable         Type = "admin.user.enable"
	AdminUserDisable        Type = "admin.user.disable"
	AdminUserDelete         Type = "admin.user.delete"
	AdminUserRecoveryCodes  Type = "admin.user.recovery_codes"
	AdminBreakGlassCreate   Type = "admin.breakglass.create"
	AdminBreakGlassReview   Type = "admin.breakglass.review"
	AdminGroupCreate        Type = "admin.group.create"
	AdminGroupDelete        Type = "admin.group.delete"
	AdminGroupAddMember     Type = "admin.group.add_member"
	AdminGroupRemoveMember  Type = "admin.group.remove_member"
	AdminRuleCreate         Type = "admin.rule.create"
	AdminRuleDelete         Type = "admin.rule.delete"
	AdminGatewayTokenCreate Type = "admin.gateway_token.create"
	AdminGatewayDelete      Type = "admin.gateway.delete"
	AdminGatewayDrain       Type = "admin.gateway.drain"
	AdminGatewayUndrain     Type = "admin.gateway.undrain"
	AdminDeviceDelete       Type = "admin.device.delete"
	AdminDeviceRevoke       Type = "admin.device.revoke"
	AdminDeviceQuarantine   Type = "admin.device.quarantine"
	AdminDeviceRelease      Type = "admin.device.release"
	AdminAdminCreate        Type = "admin.admin.create"
	AdminAdminEnable        Type = "admin.admin.enable"
	AdminAdminDisable       Type = "admin.admin.disable"
	AdminAdminDelete        Type = "admin.admin.delete"
	AdminTokenCreate        Type = "admin.admin_token.create"
	AdminTokenRevoke        Type = "admin.admin_token.revoke"
	AdminPolicyApply        Type = "admin.policy.apply"
	AdminPolicyRollback     Type = "admin.policy.rollback"
	AdminReviewStart        Type = "admin.review.start"
	AdminReviewDecide       Type = "admin.review.decide"
	AdminReviewClose        Type = "admin.review.close"

	// Session.
	SessionStart Type = "session.start"
	SessionEnd   Type = "session.end"

	// Device.
	EnrollGateway Type = "enroll.gateway"
	EnrollDevice  Type = "enroll.device"
	CertRenew     Type = "cert.renew"
	PostureReport Type = "posture.report"

	// Flow.
	FlowAllow Type = "flow.allow"
	FlowDeny  Type = "flow.deny"
	FlowCut   Type = "flow.cut"
	FlowEnd   Type = "flow.end"
	DNSDeny   Type = "dns.deny"

	// Integrity.
	AuditLogInconsistent Type = "audit.log.inconsistent"
	AuditExportLag       Type = "audit.export.lag"
	AuditSpoolFull       Type = "audit.spool.full"
	AuditClockSkew       Type = "audit.clock.skew"
	AuditFlowGap         Type = "audit.flow.gap"

	// Retention: archiving records out of the database.
	AuditArchiveRequest       Type = "audit.archive.request"
	AuditArchiveApprove       Type = "audit.archive.approve"
	AuditArchivePastRetention Type = "audit.archive.past_retention"
)

// Helpers that keep the table below readable.

func outcomes(xs ...OutcomeSpec) []OutcomeSpec { return xs }

// field is a detail present on the listed outcomes (none: optional).
func field(name, doc string, required ...Outcome) Field {
	return Field{Name: name, Doc: doc, Required: required}
}

var (
	successInfo   = OutcomeSpec{Success, Info}
	successNotice = OutcomeSpec{Success, Notice}
	failureNotice = OutcomeSpec{Failure, Notice}
	failureWarn   = OutcomeSpec{Failure, Warning}
)

// Field texts used by several types.
const (
	docSource    = "IP address the request came from"
	docReason    = "why it was refused or failed, in words"
	docMethod    = `how the person signed in: "password+totp", "recovery-code", "oidc:PROVIDER" (or "oidc" when no provider was chosen yet)`
	docIdPSub    = "the user's subject (sub claim) at the identity provider"
	docExpiresAt = "when the credential stops working (RFC 3339)"
	docComment   = "a note for the reader of the trail"
)

// admin is the spec of an admin.<resource>.<verb> change that an admin
// (Actor "admin:NAME") made through the admin API; doc says what
// Subject is.
func admin(t Type, sev Severity, doc string, fields ...Field) Spec {
	return Spec{Type: t, Category: Administration, Doc: doc,
		Outcomes: outcomes(OutcomeSpec{Success, sev}), Fields: fields}
}

func policy(t Type, doc string, extra ...Field) Spec {
	fs := []Field{
		field("reason", "the admin's reason for the change", Success, Failure),
		field("file", "the policy file's name", Success, Failure),
		field("old_version", "the version active before (0: none)", Success, Failure),
		field("old_sha256", "SHA-256 of the source active before", Success, Failure),
		field("new_sha256", "SHA-256 of the source applied", Success, Failure),
		field("version", "the version stored", Success),
		field("problems", "how many problems made the policy invalid", Failure),
	}
	return Spec{Type: t, Category: Administration, Doc: doc,
		Outcomes: outcomes(successNotice, failureNotice), Fields: append(fs, extra...)}
}

func flow(t Type, o OutcomeSpec, doc string, extra ...Field) Spec {
	return Spec{Type: t, Category: Flow, Doc: doc + ` Actor "gateway:ID". Time is the gateway's clock; received_at the controller's.`,
		Outcomes: outcomes(o),
		Fields: append([]Field{
			field("proto", "IP protocol (tcp, udp, icmp)", o.Outcome),
			field("src", "source address:port (the device's overlay address)", o.Outcome),
			field("dst", "destination address:port", o.Outcome),
			field("gateway", "ID of the gateway that decided", o.Outcome),
			field("user", "user of the session the flow belongs to"),
			field("device", "device ID"),
			field("rule", "the policy rule that allowed it"),
			field("reason", "why it was denied or cut"),
			field("name", "DNS name involved"),
			field("session", "ID of the device's session"),
			field("policy_version", "the policy version the gateway enforced"),
			field("seq", "the gateway's sequence number of the record (per spool; a resend is recorded once)"),
			field("received_at", "when the controller received it (RFC 3339, the controller's clock)"),
		}, extra...)}
}

// specs is the registry. All sorts it; keep it grouped like the constants.
var specs = []Spec{
	// Authentication.
	{Type: AuthLogin, Category: Authentication,
		Doc:      `A user signed in from a device (Actor "user:NAME"; Subject the user name, quoted if the attempted name was not valid, or "unknown").`,
		Outcomes: outcomes(successInfo, failureWarn),
		Fields: []Field{
			field("source", docSource, Success, Failure),
			field("device", "device ID (on a failure, the one the request named: empty for a new device)", Success),
			field("method", docMethod, Success),
			field("reason", docReason, Failure),
			field("idp", "identity provider asked for"),
			field("idp_subject", docIdPSub),
			field("error", "the identity provider's or token check's error"),
			field("comment", docComment),
		}},
	{Type: AuthAlert, Category: Authentication,
		Doc:      `Repeated failed sign-ins of one account, or from one source, within the alert window (Actor "controller"; Subject the account or the source address or /64). At most one per key and window.`,
		Outcomes: outcomes(OutcomeSpec{Raised, Alert}),
		Fields: []Field{
			field("kind", `"user" (one account) or "source" (one address or IPv6 /64)`, Raised),
			field("failures", "failed sign-ins counted in the window", Raised),
			field("window", "the sliding window (Go duration)", Raised),
			field("first", "time of the first counted failure (RFC 3339)", Raised),
			field("account", `"user" or "admin": which kind of account was signing in`, Raised),
			field("source", "latest source address (for kind user)"),
		}},
	{Type: AuthRecoveryCode, Category: Authentication,
		Doc:      `A user used up a recovery code in place of the one-time code (Actor "user:NAME"; Subject the user).`,
		Outcomes: outcomes(successNotice),
		Fields: []Field{
			field("source", docSource, Success),
			field("device", "device ID (empty for a new device)", Success),
			field("remaining", "unused recovery codes left", Success),
		}},
	{Type: AuthBreakGlass, Category: Authentication,
		Doc: `An emergency account signed in with break-glass access (HIPAA 164.312(a)(2)(ii)): its session reaches only emergency apps and ends at expires_at, ` +
			`and the use stays open until two admins other than its user review it (cordonctl breakglass review). Actor "user:NAME"; Subject the use ID. ` +
			`Raised at once, with the sign-in's auth.login and session.start in the same transaction.`,
		Outcomes: outcomes(OutcomeSpec{Raised, Alert}),
		Fields: []Field{
			field("user", "the emergency account", Raised),
			field("source", docSource, Raised),
			field("device", "device ID", Raised),
			field("session", "the session it started", Raised),
			field("justification", "the user's written reason", Raised),
			field("expires_at", "when the session ends, however active (RFC 3339)", Raised),
			field("remaining", "unused one-time codes left", Raised),
		}},
	{Type: AuthIdPLink, Category: Authentication,
		Doc:      `A user was created and linked at their first sign-in through an identity provider (Actor "idp:PROVIDER"; Subject the user).`,
		Outcomes: outcomes(successInfo),
		Fields: []Field{
			field("source", docSource, Success),
			field("idp_subject", docIdPSub, Success),
			field("email", "the user's email claim (may be empty)", Success),
			field("comment", docComment, Success),
		}},
	{Type: AuthIdPGroups, Category: Authentication,
		Doc:      `The identity provider changed a user's groups or policy claim at a refresh (Actor "idp:PROVIDER"; Subject the user).`,
		Outcomes: outcomes(successNotice),
		Fields: []Field{
			field("subject", docIdPSub, Success),
			field("groups", "the groups now, as [a b c]", Success),
		}},
	{Type: AuthIdPRefresh, Category: Authentication,
		Doc:      `The identity provider refused a user's refresh (an OAuth error response, RFC 6749 §5.2), or the provider is gone; every session of the user ends (Actor "idp:PROVIDER"; Subject the user).`,
		Outcomes: outcomes(failureWarn),
		Fields: []Field{
			field("subject", docIdPSub, Failure),
			field("reason", docReason, Failure),
			field("error", "the OAuth error code"),
			field("http_status", "HTTP status of the OAuth error answer"),
		}},
	{Type: AuthIdPUnreachable, Category: Authentication,
		Doc:      `The identity provider could not be reached for longer than unreachable_limit since it last confirmed the user; every session of the user ends (Actor "idp:PROVIDER"; Subject the user).`,
		Outcomes: outcomes(failureWarn),
		Fields: []Field{
			field("subject", docIdPSub, Failure),
			field("last_verified", "when the provider last confirmed the user (RFC 3339)", Failure),
			field("unreachable_limit", "the configured limit (Go duration)", Failure),
			field("error", "the last error reaching the provider", Failure),
			field("reason", docReason, Failure),
		}},
	{Type: AdminLogin, Category: Authentication,
		Doc:      `An admin signed in to the admin API (Actor "admin:NAME"; Subject the account name, quoted if not a valid name, or "unknown").`,
		Outcomes: outcomes(successNotice, failureWarn),
		Fields: []Field{
			field("source", docSource, Success, Failure),
			field("token", "ID of the sign-in token issued", Success),
			field("role", "the account's role", Success),
			field("expires_at", docExpiresAt, Success),
			field("method", docMethod, Success),
			field("reason", docReason, Failure),
			field("idp", "identity provider asked for"),
			field("idp_subject", docIdPSub),
			field("idp_user", "the user name the identity provider sent"),
			field("error", "the identity provider's or token check's error"),
			field("comment", docComment),
		}},
	{Type: AdminIdPBind, Category: Authentication,
		Doc:      `An admin account was bound to its identity-provider subject at its first sign-in through the provider (Actor "idp:PROVIDER"; Subject the account).`,
		Outcomes: outcomes(successNotice),
		Fields: []Field{
			field("source", docSource, Success),
			field("idp_subject", docIdPSub, Success),
			field("idp_user", "the user name the identity provider sent", Success),
			field("email", "the email claim (may be empty)", Success),
			field("comment", docComment, Success),
		}},

	// Access.
	{Type: AdminAuth, Category: Access,
		Doc:      `An admin API request was refused: no valid token, or the token lacks the permission (Actor "admin:TOKEN" or "admin:unknown"; Subject "METHOD /path").`,
		Outcomes: outcomes(failureWarn),
		Fields: []Field{
			field("source", docSource, Failure),
			field("reason", docReason, Failure),
			field("token", "ID of the token presented"),
			field("role", "the token's role"),
			field("permission", "the permission the request needed"),
		}},

	// Administration.
	admin(AdminSegmentCreate, Info, "A segment was created (Subject the segment)."),
	admin(AdminSegmentDelete, Info, "A segment was deleted (Subject the segment)."),
	admin(AdminAppCreate, Info, "An app was created (Subject the app).",
		field("segment", "the app's segment", Success),
		field("classification", "data classification: phi, internal or public", Success),
		field("emergency", `"true" if the app is marked for emergency (break-glass) access`)),
	admin(AdminAppDelete, Info, "An app was deleted (Subject the app)."),
	admin(AdminUserCreate, Notice, "A local user was created (Subject the user).",
		field("recovery_codes", "recovery codes issued", Success)),
	admin(AdminUserEnable, Notice, "A user was enabled (Subject the user)."),
	admin(AdminUserDisable, Notice, "A user was disabled; their sessions end, each with a session.end (Subject the user)."),
	admin(AdminUserDelete, Notice, "A user was deleted (Subject the user)."),
	admin(AdminUserRecoveryCodes, Notice, "A user's recovery codes were replaced by new ones (Subject the user).",
		field("count", "recovery codes issued", Success)),
	admin(AdminBreakGlassCreate, Notice, "An emergency (break-glass) account was created with its password and sealed one-time codes (Subject the account).",
		field("codes", "one-time codes issued", Success)),
	{Type: AdminBreakGlassReview, Category: Administration,
		Doc: `An admin signed off a break-glass use after the fact (Subject the use ID); the use closes at the second sign-off of a different admin. ` +
			`A refused sign-off (the same admin twice, the account's own user, a closed use) is a failure.`,
		Outcomes: outcomes(successNotice, failureWarn),
		Fields: []Field{
			field("user", "the emergency account that was used", Success),
			field("comment", "the reviewer's finding", Success),
			field("reviews", "sign-offs so far, this one included", Success),
			field("state", `"open" or "closed"`, Success),
			field("reason", docReason, Failure),
		}},
	admin(AdminGroupCreate, Info, "A group was created (Subject the group)."),
	admin(AdminGroupDelete, Info, "A group was deleted (Subject the group)."),
	admin(AdminGroupAddMember, Notice, "A user was added to a group (Subject the group).",
		field("user", "the user added", Success)),
	admin(AdminGroupRemoveMember, Notice, "A user was removed from a group (Subject the group).",
		field("user", "the user removed", Success),
		field("review", "the access review campaign whose revocation removed it")),
	admin(AdminRuleCreate, Notice, "An access rule was created (Subject the rule).",
		field("group", "the group the rule lets in", Success),
		field("app", "the app it lets them reach", Success)),
	admin(AdminRuleDelete, Notice, "An access rule was deleted (Subject the rule)."),
	admin(AdminGatewayTokenCreate, Notice, "A gateway enrollment token was issued (Subject the token ID).",
		field("segment", "segment the gateway will serve", Success),
		field("expires_at", docExpiresAt, Success),
		field("name", "the gateway name the token is for")),
	admin(AdminGatewayDelete, Notice, "A gateway was deleted (Subject the gateway ID)."),
	admin(AdminGatewayDrain, Notice, "A gateway was drained: clients move off it before maintenance (Subject the gateway ID).",
		field("segment", "the segment it serves", Success),
		field("forced", `"true" when it was the segment's last live gateway and the admin forced the drain`)),
	admin(AdminGatewayUndrain, Notice, "A drained gateway takes clients again (Subject the gateway ID).",
		field("segment", "the segment it serves", Success)),
	admin(AdminDeviceDelete, Notice, "A device was deleted (Subject the device ID)."),
	admin(AdminDeviceRevoke, Notice, "A device was revoked; its sessions end, each with a session.end (Subject the device ID)."),
	admin(AdminDeviceQuarantine, Warning, "A device was quarantined: it is no gateway's peer and reaches no app until released, but keeps its control channel and session, so its user sees why and its posture keeps reporting (Subject the device ID).",
		field("user", "the device's user", Success),
		field("reason", "why, as the device's user is told", Success)),
	admin(AdminDeviceRelease, Notice, "A device's quarantine was ended: it reaches its apps again (Subject the device ID).",
		field("user", "the device's user", Success),
		field("comment", docComment),
		field("quarantined_at", "when the quarantine began (RFC 3339)", Success),
		field("quarantined_by", "who began it", Success),
		field("reason", "the quarantine's reason", Success)),
	admin(AdminReviewStart, Notice, "An access review campaign was opened (Subject the campaign ID); its lines are the entitlements in scope with their evidence, as of this moment.",
		field("name", "the campaign's name", Success),
		field("scope", `what it reviews: "phi", "app:NAME", "group:NAME" or "segment:NAME"`, Success),
		field("reviewers", "the admins who decide its lines, comma-separated", Success),
		field("due", "when it is due (RFC 3339)", Success),
		field("lines", "how many entitlements it reviews", Success),
		field("flagged", "how many of them carry a flag (stale, orphaned, waiver, new)", Success),
		field("policy_version", "the policy version the lines were computed from (0: the one-by-one directory)", Success)),
	admin(AdminReviewDecide, Notice, "A reviewer decided one line of an access review (Subject the campaign ID). A revocation applies when the campaign closes, or at once with apply_now, through a policy version or a group membership removal recorded beside this record.",
		field("line", "the line's number", Success),
		field("user", "the user (or IdP group or device tag) the line is about", Success),
		field("app", "the app", Success),
		field("decision", "keep, revoke or narrow", Success),
		field("keep_ports", "for narrow: the ports kept"),
		field("comment", "the reviewer's comment", Success),
		field("apply_now", `"true" when the revocation was applied at once`)),
	admin(AdminReviewClose, Notice, "An access review campaign was closed (Subject the campaign ID): the campaign record. It holds every decision (who decided what, when, why) and what the close applied; the revocations are the admin.policy.apply or admin.group.remove_member records of the same transaction.",
		field("name", "the campaign's name", Success),
		field("scope", "what it reviewed", Success),
		field("due", "when it was due (RFC 3339)", Success),
		field("overdue", `"true" when it closed after its due date`, Success),
		field("lines", "how many entitlements it reviewed", Success),
		field("kept", "lines kept", Success),
		field("revoked", "lines revoked", Success),
		field("narrowed", "lines narrowed", Success),
		field("undecided", "lines nobody decided (nothing changes for them)", Success),
		field("decisions", `every decided line as a JSON array of {"line","who","app","via","decision","keep_ports","comment","by","at","applied_at"}`, Success),
		field("policy_version", "the policy version the close stored (empty: none)"),
		field("removed_members", "group memberships the close removed, GROUP:USER comma-separated (the one-by-one directory)")),
	admin(AdminAdminCreate, Notice, "An admin account was created (Subject the account).",
		field("role", "the account's role", Success),
		field("idp", "identity provider it signs in through"),
		field("idp_subject", "its subject there, if bound already")),
	admin(AdminAdminEnable, Notice, "An admin account was enabled (Subject the account)."),
	admin(AdminAdminDisable, Notice, "An admin account was disabled (Subject the account)."),
	admin(AdminAdminDelete, Notice, "An admin account was deleted (Subject the account)."),
	admin(AdminTokenCreate, Notice, `An admin API token was issued, by an admin or by the controller itself at first start (Actor "controller"; Subject the token ID).`,
		field("name", "the token's name", Success),
		field("role", "the token's role", Success),
		field("expires_at", docExpiresAt, Success),
		field("scopes", "permissions the token is limited to, comma-separated"),
		field("reason", "why the controller issued it (bootstrap)")),
	admin(AdminTokenRevoke, Notice, "An admin API token was revoked (Subject the token ID).",
		field("reason", `"logout" when its holder signed out`)),
	policy(AdminPolicyApply, `A policy version was applied, or refused as invalid (Subject "version N", or the file name when refused). An access review's revocations are applied as one too, with review set.`,
		field("review", "the access review campaign whose revocations this version applies (its deny rules are named review-CAMPAIGN-LINE)")),
	policy(AdminPolicyRollback, `An old policy version was re-applied as a new version, or refused (Subject as for admin.policy.apply).`,
		field("rollback_of", "the old version re-applied", Success, Failure)),

	// Session.
	{Type: SessionStart, Category: Session,
		Doc:      `A user's session on a device started (Actor "user:NAME"; Subject the session ID).`,
		Outcomes: outcomes(successInfo),
		Fields: []Field{
			field("source", docSource, Success),
			field("device", "device ID", Success),
			field("method", docMethod, Success),
			field("mfa", "whether a second factor was proven at this sign-in (true/false)", Success),
		}},
	{Type: SessionEnd, Category: Session,
		Doc:      `A session ended (Actor who ended it: "admin:NAME", "user:NAME", "idp:PROVIDER" or "controller"; Subject the session ID).`,
		Outcomes: outcomes(successInfo),
		Fields: []Field{
			field("device", "device ID", Success),
			field("user", "the session's user", Success),
			field("reason", "idle, absolute, admin, device-revoked, user-disabled, replaced, logout, idp-refused or idp-unreachable", Success),
			field("comment", docComment),
			field("last_activity", "the session's last traffic (RFC 3339), when the controller ended it for idleness or age"),
		}},

	// Device.
	{Type: EnrollGateway, Category: Device,
		Doc:      `A gateway enrolled with a gateway token (Actor "gateway:ID", or "gateway:unknown"; Subject the gateway name).`,
		Outcomes: outcomes(successNotice, failureWarn),
		Fields: []Field{
			field("source", docSource, Success, Failure),
			field("segment", "the segment it serves", Success),
			field("overlay_addr", "its overlay address", Success),
			field("reason", docReason, Failure),
		}},
	{Type: EnrollDevice, Category: Device,
		Doc:      `A device was enrolled, or enrolled again, at a user's sign-in (Actor "user:NAME"; Subject the device ID).`,
		Outcomes: outcomes(successInfo),
		Fields: []Field{
			field("source", docSource, Success),
			field("hostname", "the device's host name as it reports it", Success),
			field("overlay_addr", "its overlay address", Success),
		}},
	{Type: CertRenew, Category: Device,
		Doc:      `An agent renewed its certificate over the control channel (Actor "device:ID" or "gateway:ID"; Subject the agent ID). The new certificate is handed out only once this is recorded.`,
		Outcomes: outcomes(successInfo, failureWarn),
		Fields: []Field{
			field("kind", "client or gateway", Success, Failure),
			field("old_not_after", "expiry of the certificate presented (RFC 3339)"),
			field("old_serial", "its serial number (hex)"),
			field("new_not_after", "expiry of the new certificate (RFC 3339)", Success),
			field("new_serial", "its serial number (hex)", Success),
			field("reason", docReason, Failure),
		}},
	{Type: PostureReport, Category: Device,
		Doc:      `A device reported its posture (Actor "device:ID"; Subject the device ID). Everything in it is the device's own claim (self_reported).`,
		Outcomes: outcomes(successInfo, OutcomeSpec{Invalid, Warning}),
		Fields: []Field{
			field("self_reported", `always "true": the controller cannot verify the report`, Success, Invalid),
			field("changed", "whether it differs from the previous report", Success),
			field("collected_at", "when the device collected it (RFC 3339)", Success),
			field("error", "why the report could not be read", Invalid),
			field("os", "operating system"),
			field("os_version", "its version"),
			field("os_name", "its name"),
			field("kernel", "kernel version"),
			field("client_version", "Cordon client version"),
			field("disk_encryption", "state of disk encryption"),
			field("disk_encryption.detail", "what the device found"),
			field("firewall", "state of the host firewall"),
			field("firewall.detail", "what the device found"),
			field("screen_lock", "state of the screen lock"),
			field("screen_lock.detail", "what the device found"),
			field("integrity", "the OS's verdict that the device is not rooted or jailbroken (mobile devices)"),
			field("integrity.detail", "what the device found"),
			field("passing", "posture checks the report passes, comma-separated"),
		}},

	// Flow.
	flow(FlowAllow, OutcomeSpec{Allow, Info}, "A gateway allowed a new flow: its start record; its flow.end follows when it leaves the connection table (Subject the app, or the destination)."),
	flow(FlowDeny, OutcomeSpec{Deny, Notice}, "A gateway denied a new flow (Subject the app, or the destination)."),
	flow(FlowCut, OutcomeSpec{Cut, Notice}, "A gateway closed an open flow because policy changed or a condition stopped holding (Subject the app, or the destination)."),
	flow(FlowEnd, OutcomeSpec{Ended, Info}, "A flow a gateway allowed left its connection table (Subject the app, or the destination). Its flow.allow is the start record.",
		field("end_reason", `"closed" (TCP FIN both ways or a reset), "idle" (idle past its timeout), "cut" (the policy or a rule condition no longer allows it; reason says which) or "session-end" (the device left the gateway's map: its session ended or it was revoked)`, Ended),
		field("packets_to_app", "packets client → app", Ended),
		field("bytes_to_app", "bytes client → app (IP packets, headers included)", Ended),
		field("packets_to_client", "packets app → client", Ended),
		field("bytes_to_client", "bytes app → client", Ended),
		field("duration", "how long the flow was open (Go duration)", Ended)),
	flow(DNSDeny, OutcomeSpec{Deny, Notice}, "A gateway answered NXDOMAIN for an internal name the device is not entitled to (Subject the name)."),

	// Integrity.
	{Type: AuditLogInconsistent, Category: Integrity,
		Doc:      `The audit log is not an extension of a checkpoint signed before: records were deleted, changed or reordered, the log was truncated or rolled back, or the database was replaced (docs/audit.md). Raised by the controller when its log no longer matches its own latest checkpoint (Actor "controller"), and by a gateway that was sent a checkpoint inconsistent with the one it holds (Actor "gateway:ID"; it keeps its own). Subject the log's origin. Act now: run cordonctl audit verify.`,
		Outcomes: outcomes(OutcomeSpec{Raised, Alert}),
		Fields: []Field{
			field("reason", "what was found, in words", Raised),
			field("held", "the checkpoint held before: tree size and root hash", Raised),
			field("got", "the log or checkpoint that does not extend it: tree size and root hash", Raised),
		}},
	{Type: AuditExportLag, Category: Integrity,
		Doc:      `A SIEM sink (--siem-config) fell behind the audit log by more than its alert_lag records, or stayed behind for longer than its alert_after: the records are kept and will be sent, but the SIEM does not have them yet (outcome alert); or it caught up again after such an alert (outcome success). Actor "controller"; Subject the sink's name. Act: check the receiver and the path to it (cordonctl audit sinks).`,
		Outcomes: outcomes(OutcomeSpec{Raised, Alert}, successNotice),
		Fields: []Field{
			field("target", "the sink's address or file", Raised, Success),
			field("lag", "records not yet sent", Raised, Success),
			field("cursor", "seq of the last record the sink accepted", Raised, Success),
			field("behind_since", "since when the sink has been behind (RFC 3339)", Raised, Success),
			field("error", "the last error sending to it"),
		}},
	{Type: AuditSpoolFull, Category: Integrity,
		Doc:      `A gateway's flow record spool is full (alert) or has room again (cleared): while full, the gateway cannot record new flow decisions and refuses new flows as its --spool-full policy says (docs/audit.md). One alert per onset, one cleared when it is over (Actor "gateway:ID"; Subject the gateway ID). Act now: bring the controller back or make room.`,
		Outcomes: outcomes(OutcomeSpec{Raised, Alert}, OutcomeSpec{Cleared, Notice}),
		Fields: []Field{
			field("policy", `what the gateway does with new flows while full: "fail-closed-phi", "fail-closed" or "fail-open"`, Raised, Cleared),
			field("bytes", "bytes spooled", Raised, Cleared),
			field("max_bytes", "the spool's bound", Raised, Cleared),
			field("lost", "flow records the gateway could not spool since it started", Raised, Cleared),
			field("refused", "new flows refused because the spool was full, since the gateway started", Raised, Cleared),
		}},
	{Type: AuditFlowGap, Category: Integrity,
		Doc:      `The flow records a gateway sent skip sequence numbers of its spool: those records are not in the trail (the gateway found them unreadable in its spool and logged it, or a defect sent later ones first). Recorded in the transaction that commits the records after the hole (Actor "gateway:ID"; Subject the gateway ID). Check the gateway's log and disk.`,
		Outcomes: outcomes(OutcomeSpec{Raised, Alert}),
		Fields: []Field{
			field("spool", "the gateway's spool ID", Raised),
			field("from", "the first missing sequence number", Raised),
			field("to", "the last missing sequence number", Raised),
			field("missing", "how many records are missing", Raised),
		}},
	{Type: AuditClockSkew, Category: Integrity,
		Doc:      `A gateway's clock differs from the controller's by more than the threshold (alert), or is back within half of it (cleared): the times in its flow records are off by about skew. One alert per onset, one cleared when it is over (Actor "controller"; Subject "gateway:ID"). Fix the gateway's time sync (NTP).`,
		Outcomes: outcomes(OutcomeSpec{Raised, Alert}, OutcomeSpec{Cleared, Notice}),
		Fields: []Field{
			field("skew", "gateway clock minus controller clock (Go duration; transit time not subtracted)", Raised, Cleared),
			field("threshold", "the controller's --clock-skew-threshold (Go duration)", Raised, Cleared),
			field("gateway_time", "the gateway's clock when it sent the report (RFC 3339)", Raised, Cleared),
			field("controller_time", "the controller's clock when it received it (RFC 3339)", Raised, Cleared),
		}},

	// Retention.
	{Type: AuditArchiveRequest, Category: Integrity,
		Doc:      `An admin asked to archive the oldest audit records (take their bodies out of the database, keeping their tree hashes) before their retention ends; another admin must approve it before it expires (Actor "admin:NAME"; Subject the request ID).`,
		Outcomes: outcomes(successNotice, failureWarn),
		Fields: append(archiveFields(Success)[:4],
			field("request", "the archive request's ID", Success),
			field("expires_at", "when the request stops being approvable (RFC 3339)", Success)),
	},
	{Type: AuditArchiveApprove, Category: Integrity,
		Doc:      `A second admin approved an archive request and the records were archived, in the same transaction as this record; or the approval was refused (the requester approving their own request, an expired, unknown or already used request) (Actor "admin:NAME"; Subject the request ID).`,
		Outcomes: outcomes(successNotice, failureWarn),
		Fields: append(archiveFields(Success),
			field("requested_by", "the admin who requested it", Success),
			field("root", "the audit log's root hash at to_seq (base64): the archived range's bundle must reach it", Success)),
	},
	{Type: AuditArchivePastRetention, Category: Integrity,
		Doc:      `An admin archived audit records that are all past their retention end (one admin suffices), in the same transaction as this record; or the archive was refused (Actor "admin:NAME"; Subject "to seq N").`,
		Outcomes: outcomes(successNotice, failureWarn),
		Fields: append(archiveFields(Success),
			field("root", "the audit log's root hash at to_seq (base64): the archived range's bundle must reach it", Success),
			field("retention_end", "the retention end of the newest archived record (RFC 3339)", Success)),
	},
}

// archiveFields are the details of the audit.archive types.
func archiveFields(on ...Outcome) []Field {
	return []Field{
		field("from_seq", "first record of the range", on...),
		field("to_seq", "last record of the range", on...),
		field("reason", "the admin's reason, or why it was refused", Success, Failure),
		field("bundle_sha256", "SHA-256 (hex) of the export bundle of the range the requester wrote first", on...),
		field("request", "the archive request's ID"),
	}
}
