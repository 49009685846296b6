package report

import "github.com/cordonhq/cordon/pkg/adminapi"

// Sections of 45 CFR 164.312 and 164.308.
const (
	secAccessControl = "164.312(a)(1)"
	secUniqueID      = "164.312(a)(2)(i)"
	secEmergency     = "164.312(a)(2)(ii)"
	secAutoLogoff    = "164.312(a)(2)(iii)"
	secEncryption    = "164.312(a)(2)(iv)"
	secAudit         = "164.312(b)"
	secIntegrity     = "164.312(c)(1)"
	secAuthenticate  = "164.312(c)(2)"
	secPersonAuth    = "164.312(d)"
	secTransmission  = "164.312(e)(1)"
	secTxIntegrity   = "164.312(e)(2)(i)"
	secTxEncryption  = "164.312(e)(2)(ii)"

	sec308ActivityReview  = "164.308(a)(1)(ii)(D)"
	sec308Termination     = "164.308(a)(3)(ii)(C)"
	sec308AccessAuthz     = "164.308(a)(4)(ii)(B)"
	sec308AccessModify    = "164.308(a)(4)(ii)(C)"
	sec308LoginMonitoring = "164.308(a)(5)(ii)(C)"
	sec308Passwords       = "164.308(a)(5)(ii)(D)"
	sec308Response        = "164.308(a)(6)(ii)"
	sec308Backup          = "164.308(a)(7)(ii)(A)"
	sec308Evaluation      = "164.308(a)(8)"
)

// row is a safeguard as the rule states it and the mechanism that meets
// it; Build adds the live settings, figures, status and gaps.
type row struct {
	Section     string
	Title       string
	Standard    bool
	Requirement string
	Mechanism   string
}

// technical is every standard and implementation specification of 45
// CFR 164.312, in its order, with its requirement level.
var technical = []row{
	{secAccessControl, "Access control", true, adminapi.Required,
		"Default deny at four layers: the device's network map, WireGuard AllowedIPs, the gateway's per-flow authorizer and split-horizon DNS that hides unentitled apps. Policy as code with deny rules and conditions (MFA freshness, device posture, time windows, source networks, CEL), tests that must pass before apply, every version audited. Access only within a live session; a suspect device is quarantined in one call."},
	{secUniqueID, "Unique user identification", false, adminapi.Required,
		"Local users by unique name, or IdP users bound to their issuer and subject; each device its own ID, WireGuard key and certificate; every session and flow record names the user and the device."},
	{secEmergency, "Emergency access procedure", false, adminapi.Required,
		"Break-glass: pre-provisioned emergency identities that work with every IdP down, time-bound, justified, reaching only apps marked for emergency access, alerting at once, with an after-the-fact review two admins close."},
	{secAutoLogoff, "Automatic logoff", false, adminapi.Addressable,
		"Every sign-in starts a session with an idle limit (per data classification) measured from the device's own app traffic at the gateways, and an absolute limit; at the end every gateway drops the device and cuts its flows, and the end is audited (session.end with the reason)."},
	{secEncryption, "Encryption and decryption", false, adminapi.Addressable,
		"All data traffic in WireGuard (ChaCha20-Poly1305); control traffic in TLS 1.3. Private keys are generated on the device and never leave it."},
	{secAudit, "Audit controls", true, adminapi.Required,
		"Sign-ins, enrollments, every admin change, session start and end, every flow's start and end and the first packet of each denied flow, denied DNS lookups: each an audit record committed with its change, searchable (cordonctl audit search), streamed to SIEMs, kept for the retention period."},
	{secIntegrity, "Integrity", true, adminapi.Required,
		"Controller state in one transactional store changed through one owner that checks invariants; the audit trail is a signed Merkle log (RFC 6962) that cordonctl audit verify checks and gateways witness."},
	{secAuthenticate, "Mechanism to authenticate electronic protected health information", false, adminapi.Addressable,
		"WireGuard authenticates every packet (Poly1305); audit records are leaves of a Merkle tree under Ed25519-signed checkpoints, so an edit, deletion or reordering is detected."},
	{secPersonAuth, "Person or entity authentication", true, adminapi.Required,
		"OIDC with the hospital IdP (MFA read from amr/acr) or password (argon2id) + TOTP; MFA freshness (step-up) per rule; device posture evaluated on the controller; devices and gateways by CA-issued certificates over mutual TLS; administrators by scoped, expiring tokens of a role."},
	{secTransmission, "Transmission security", true, adminapi.Required,
		"WireGuard on the data path (also when carried in TLS on TCP 443), TLS 1.3 over QUIC on the control path with a pinned CA, TLS 1.3 on the admin API."},
	{secTxIntegrity, "Integrity controls", false, adminapi.Addressable,
		"WireGuard's AEAD rejects any modified packet; TLS 1.3 and QUIC authenticate every record of the control channel."},
	{secTxEncryption, "Encryption", false, adminapi.Addressable,
		"WireGuard (ChaCha20-Poly1305) on every data flow; TLS 1.3 (AES-GCM or ChaCha20-Poly1305) on control and admin."},
}

// administrative are the 164.308 items the product supports (the others
// are the hospital's own procedures).
var administrative = []row{
	{sec308ActivityReview, "Information system activity review", false, adminapi.Required,
		"cordonctl audit search by user, device, app, type, outcome and time; SIEM export (syslog, OCSF); this report; access-review campaigns."},
	{sec308Termination, "Termination procedures", false, adminapi.Addressable,
		"cordonctl user disable and device revoke end sessions and cut flows within 1 s; users the IdP refuses at refresh lose every session."},
	{sec308AccessAuthz, "Access authorization", false, adminapi.Addressable,
		"Access only through policy rules; cordonctl policy who-can and policy access list every entitlement with its rule; access-review campaigns record each decision."},
	{sec308AccessModify, "Access establishment and modification", false, adminapi.Addressable,
		"Policy as code: plan, tests, apply with a reason, each version audited with actor and SHA-256, rollback as a new version."},
	{sec308LoginMonitoring, "Log-in monitoring", false, adminapi.Addressable,
		"Every sign-in and failure is recorded; repeated failures raise auth.alert; sign-ins are throttled."},
	{sec308Passwords, "Password management", false, adminapi.Addressable,
		"Local passwords hashed with argon2id, TOTP second factor with replay protection, one-time recovery codes; or the IdP's own password policy."},
	{sec308Response, "Response and reporting", false, adminapi.Required,
		"A suspect device is quarantined or revoked, a session ended, in one call, effective within 1 s; every step audited and streamed to the SIEM."},
	{sec308Backup, "Data backup plan", false, adminapi.Required,
		"cordon-controller backup and restore: a consistent, age-encrypted copy of the controller's data that restores with the audit log still verifying (docs/operations.md)."},
	{sec308Evaluation, "Evaluation", true, adminapi.Required,
		"This report, computed from live configuration and the verified audit log, for the periodic technical evaluation."},
}
