// Package report computes the HIPAA and CISA ZTMM evidence report
// (cordonctl report hipaa, docs/hipaa.md) from the controller's live
// configuration and its audit log alone: every 45 CFR 164.312 standard and
// implementation specification with the mechanism that meets it, the live
// settings it rests on, the period's figures counted from the audit
// records a signed checkpoint covers, the 164.308 items the product
// supports, a ZTMM v2 self-assessment per pillar, and every gap.
//
// The package reads; it changes nothing. The caller (the admin API)
// gathers the inputs: the policy in force, the session limits, the audit
// log's verification. Rendering is cordonctl's job.
package report

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// MaxPeriod bounds a report's period: a year and a bit covers an annual
// evaluation.
const MaxPeriod = 400 * 24 * time.Hour

// Input is the live configuration the report reads.
type Input struct {
	From, To time.Time // the period, [From, To)
	Now      time.Time
	// Version is the active policy version; nil when none was applied
	// (the directory's rules are in force).
	Version *store.PolicyVersion
	// Policy is the policy in force, parsed (the directory rendered as a
	// policy when no version was applied); nil: none.
	Policy         *policyfile.Policy
	Limits         session.Limits
	RetentionYears int
	SIEMSinks      []string
	IdPs           []string
	Inventory      adminapi.ReportInventory
	// LogKey and Log are the audit log's verifier key and its
	// verification (ledger.Verify); Log nil: the controller keeps no
	// verifiable log.
	LogKey string
	Log    *ledger.Report
}

// Ciphers are the channels' protocols, fixed by the build.
var Ciphers = []adminapi.ReportCipher{
	{Channel: "data (client to gateway)", Protocol: "WireGuard (Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s)", Ciphers: "X25519, ChaCha20-Poly1305, BLAKE2s"},
	{Channel: "data over TCP 443 (UDP blocked)", Protocol: "WireGuard inside TLS 1.3", Ciphers: "as above, inside TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256"},
	{Channel: "control (agents to controller)", Protocol: "QUIC with TLS 1.3, mutual certificates, pinned CA", Ciphers: "TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256"},
	{Channel: "admin API (cordonctl)", Protocol: "HTTPS, TLS 1.3 only, pinned CA", Ciphers: "TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256"},
	{Channel: "audit log", Protocol: "RFC 6962 Merkle tree, signed checkpoints (C2SP tlog-checkpoint)", Ciphers: "SHA-256, Ed25519"},
}

// gap is a report gap and whether it fails its rows (a gap) or only
// weakens them (partial).
type gap struct {
	adminapi.ReportGap
	fails bool
}

// builder collects what Build finds.
type builder struct {
	in   Input
	rep  adminapi.HIPAAReport
	gaps []gap
	rule ruleStats
}

// ruleStats describes the allow rules that reach PHI apps.
type ruleStats struct {
	phiApps, rules, mfa, stepUp, posture, waivers int
	unwaivedNoMFA                                 int // rules with neither MFA nor a waiver
}

// Build computes the report.
func Build(ctx context.Context, s Searcher, in Input) (adminapi.HIPAAReport, error) {
	if !in.From.Before(in.To) {
		return adminapi.HIPAAReport{}, fmt.Errorf("the period's start %s is not before its end %s", in.From.Format(time.RFC3339), in.To.Format(time.RFC3339))
	}
	b := &builder{in: in}
	b.rep = adminapi.HIPAAReport{Generated: in.Now.UTC(), From: in.From.UTC(), To: in.To.UTC()}
	b.settings()
	if err := b.evidence(ctx, s); err != nil {
		return adminapi.HIPAAReport{}, err
	}
	b.configGaps()
	b.rep.Technical = b.rows(technical)
	b.rep.Administrative = b.rows(administrative)
	b.rep.ZTMM = b.ztmm()
	b.rep.Gaps = []adminapi.ReportGap{}
	for _, g := range b.gaps {
		b.rep.Gaps = append(b.rep.Gaps, g.ReportGap)
	}
	return b.rep, nil
}

func (b *builder) addGap(fails bool, id, title, detail string, sections ...string) {
	b.gaps = append(b.gaps, gap{ReportGap: adminapi.ReportGap{ID: id, Sections: sections, Title: title, Detail: detail}, fails: fails})
}

func (b *builder) settings() {
	in := b.in
	st := &b.rep.Settings
	if v := in.Version; v != nil {
		st.PolicyVersion, st.PolicyFile, st.PolicySHA256 = v.Version, v.File, v.SHA256
	}
	st.IdleLimits = []adminapi.ReportIdleLimit{{Classification: "default", Seconds: int64(in.Limits.DefaultIdle / time.Second)}}
	for _, c := range slices.Sorted(maps.Keys(in.Limits.Idle)) {
		st.IdleLimits = append(st.IdleLimits, adminapi.ReportIdleLimit{Classification: string(c), Seconds: int64(in.Limits.Idle[c] / time.Second)})
	}
	st.AbsoluteSeconds = int64(in.Limits.Absolute / time.Second)
	st.Ciphers = Ciphers
	st.AuditRetentionYears = in.RetentionYears
	st.SIEMSinks = nonNil(in.SIEMSinks)
	st.IdentityProviders = nonNil(in.IdPs)
	st.Inventory = in.Inventory
	st.AccessRules = []adminapi.ReportAccessRule{}
	if in.Policy == nil {
		return
	}
	for _, name := range in.Policy.AppNames {
		if in.Policy.Apps[name].Classification == policyfile.ClassPHI {
			b.rule.phiApps++
		}
	}
	for _, r := range in.Policy.Rules {
		var phi []string
		for _, app := range r.Apps() {
			if a := in.Policy.Apps[app]; a != nil && a.Classification == policyfile.ClassPHI {
				phi = append(phi, app)
			}
		}
		if len(phi) == 0 {
			continue
		}
		ar := adminapi.ReportAccessRule{Rule: r.Name, Apps: phi, MFA: r.When.MFA || r.When.MFAMaxAge > 0,
			MFAMaxAgeSec: int64(r.When.MFAMaxAge / time.Second), Posture: nonNil(r.When.Posture), Waiver: r.Waiver}
		st.AccessRules = append(st.AccessRules, ar)
		b.rule.rules++
		if ar.MFA {
			b.rule.mfa++
		}
		if ar.MFAMaxAgeSec > 0 {
			b.rule.stepUp++
		}
		if len(ar.Posture) > 0 {
			b.rule.posture++
		}
		if ar.Waiver != "" {
			b.rule.waivers++
		} else if !ar.MFA {
			b.rule.unwaivedNoMFA++
		}
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// evidence verifies nothing itself: it takes the log's verification,
// counts the figures under its checkpoint, and notes what is missing.
func (b *builder) evidence(ctx context.Context, s Searcher) error {
	al := &b.rep.AuditLog
	var maxSeq int64
	switch lg := b.in.Log; {
	case lg == nil:
		b.addGap(true, "no-verifiable-log", "This controller keeps no verifiable audit log",
			"The figures are counted from the audit records, but no signed checkpoint vouches for them.", secAudit, secIntegrity)
	default:
		al.Verified, al.Records, al.Key = lg.OK(), lg.Records, b.in.LogKey
		al.Problems = lg.Problems
		if lg.Latest != nil {
			al.Checkpoint, al.CheckpointSize, al.CheckpointTime = string(lg.Latest.Note), lg.Latest.Size, lg.Latest.Time
			maxSeq = lg.Latest.Size
		}
		if !lg.OK() {
			b.addGap(true, "log-not-verified", "The audit log does not verify",
				"cordonctl audit verify names the first bad record; the figures of this report cannot be relied on: "+strings.Join(lg.Problems, "; "), secAudit, secIntegrity, secAuthenticate)
		}
		if lg.Latest == nil {
			b.addGap(true, "no-checkpoint", "The audit log has no signed checkpoint yet",
				"The controller signs one within seconds of the first record; build the report again.", secAudit, secIntegrity)
		}
	}
	figs, last, err := count(ctx, s, b.in.From, b.in.To, maxSeq)
	if err != nil {
		return err
	}
	b.rep.Figures = figs
	al.PeriodLastSeq = last
	al.Covered = maxSeq > 0 && maxSeq >= last
	if maxSeq > 0 && !al.Covered {
		b.addGap(false, "period-not-covered", "The checkpoint does not cover the whole period",
			fmt.Sprintf("Records up to seq %d are in the period; the checkpoint covers %d. The figures count only covered records; build the report again in a few seconds, or end the period earlier.", last, maxSeq), secAudit)
	}
	if err := b.archivedGap(ctx, s); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, f := range figures {
		if f.built() || seen[f.Feature] {
			continue
		}
		seen[f.Feature] = true
		var types []string
		var secs []string
		for _, g := range figures {
			if g.Feature == f.Feature {
				types = append(types, string(g.Type))
				for _, s := range g.Sections {
					if !slices.Contains(secs, s) {
						secs = append(secs, s)
					}
				}
			}
		}
		b.addGap(true, "not-built-"+slug(f.Feature), "Not yet built: "+f.Feature,
			"This build records no "+strings.Join(types, ", ")+" events, so there is no evidence for it; the report counts them once they exist.", secs...)
	}
	return nil
}

// archivedGap notes a period that reaches back into archived records:
// their bodies live in export bundles, so the search counts none of them.
func (b *builder) archivedGap(ctx context.Context, s Searcher) error {
	lg := b.in.Log
	if lg == nil || len(lg.Archived) == 0 {
		return nil
	}
	last := lg.Archived[len(lg.Archived)-1].ToSeq
	kept, err := s.ReadNewestAuditTime(ctx, last+1, last+1)
	switch {
	case errors.Is(err, store.ErrNotFound):
		kept = b.in.To // every record is archived
	case err != nil:
		return fmt.Errorf("read the first record after the archive: %w", err)
	}
	if b.in.From.Before(kept) {
		b.addGap(false, "period-archived", "Part of the period is archived",
			fmt.Sprintf("Records up to seq %d are archived: their bodies are in export bundles and these figures do not count them; the first record kept is of %s. Count the archived part from its bundle (cordonctl audit verify --bundle FILE checks it).", last, kept.UTC().Format(time.RFC3339)),
			secAudit, sec308ActivityReview)
	}
	return nil
}

func slug(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, strings.ToLower(s))
}

// configGaps are the gaps the live configuration shows.
func (b *builder) configGaps() {
	in, r := b.in, b.rule
	if in.Version == nil {
		b.addGap(false, "no-policy-file", "No policy file is applied",
			"The directory's rules are in force: they carry no MFA, posture or time conditions and no tests. Apply a policy file (cordonctl policy apply).", secAccessControl, secPersonAuth, sec308AccessModify)
	}
	if r.phiApps > 0 && r.rules-r.mfa > 0 {
		b.addGap(r.unwaivedNoMFA > 0, "phi-without-mfa", "Rules reach PHI apps without MFA",
			fmt.Sprintf("%d of %d allow rules reaching PHI apps do not require MFA (%d of them without a written waiver); see the access rules.", r.rules-r.mfa, r.rules, r.unwaivedNoMFA), secPersonAuth, secAccessControl)
	}
	if r.phiApps > 0 && r.rules-r.posture > 0 {
		b.addGap(false, "phi-without-posture", "Rules reach PHI apps without a device posture check",
			fmt.Sprintf("%d of %d allow rules reaching PHI apps check no device posture.", r.rules-r.posture, r.rules), secAccessControl, secPersonAuth)
	}
	if len(in.SIEMSinks) == 0 {
		b.addGap(false, "no-siem", "Audit records go to no SIEM",
			"The audit log is kept and verifiable on the controller, but nobody outside it holds a copy or reviews it continuously; configure --siem-config.", secAudit, sec308ActivityReview)
	}
	b.addGap(false, "at-rest-outside", "Encryption of ePHI at rest is outside Cordon",
		"Cordon encrypts ePHI in transit to and from the apps; at rest it is stored by the apps and their hosts, whose encryption the hospital documents separately.", secEncryption)
}

// rows adds to each row its live settings, figures, gaps and status.
func (b *builder) rows(rs []row) []adminapi.Safeguard {
	out := make([]adminapi.Safeguard, 0, len(rs))
	for _, r := range rs {
		sg := adminapi.Safeguard{Section: r.Section, Title: r.Title, Standard: r.Standard, Requirement: r.Requirement,
			Mechanism: r.Mechanism, Settings: nonNil(b.settingsFor(r.Section)), Figures: []string{}, Gaps: []string{}, Status: adminapi.StatusMet}
		for _, f := range figures {
			if f.built() && slices.Contains(f.Sections, r.Section) {
				sg.Figures = append(sg.Figures, f.ID)
			}
		}
		for _, g := range b.gaps {
			if !slices.Contains(g.Sections, r.Section) {
				continue
			}
			sg.Gaps = append(sg.Gaps, g.ID)
			if g.fails {
				sg.Status = adminapi.StatusGap
			} else if sg.Status == adminapi.StatusMet {
				sg.Status = adminapi.StatusPartial
			}
		}
		out = append(out, sg)
	}
	return out
}

// settingsFor says, for a section, the live settings it rests on.
func (b *builder) settingsFor(section string) []string {
	in, st, r := b.in, b.rep.Settings, b.rule
	policyLine := "no policy file applied: the directory's rules are in force"
	if in.Version != nil {
		policyLine = fmt.Sprintf("policy version %d (%s, SHA-256 %s)", in.Version.Version, in.Version.File, in.Version.SHA256)
	}
	rulesLine := fmt.Sprintf("%d PHI apps; %d allow rules reach them: %d require MFA (%d with step-up freshness), %d a posture check, %d under a written waiver",
		r.phiApps, r.rules, r.mfa, r.stepUp, r.posture, r.waivers)
	switch section {
	case secAccessControl:
		return []string{policyLine, rulesLine, fmt.Sprintf("%d users, %d devices, %d apps, %d gateways",
			st.Inventory.Users, st.Inventory.Devices, st.Inventory.Apps, st.Inventory.Gateways)}
	case secAutoLogoff:
		var ls []string
		for _, l := range st.IdleLimits {
			ls = append(ls, l.Classification+" "+adminapi.FormatLimit(time.Duration(l.Seconds)*time.Second))
		}
		return []string{"idle limit: " + strings.Join(ls, ", "), "absolute limit: " + adminapi.FormatLimit(time.Duration(st.AbsoluteSeconds)*time.Second)}
	case secEncryption, secTxEncryption:
		var out []string
		for _, c := range st.Ciphers {
			out = append(out, c.Channel+": "+c.Protocol)
		}
		return out
	case secTransmission, secTxIntegrity:
		return []string{fmt.Sprintf("all %d channels authenticated and encrypted (see the encryption settings); no plaintext or TLS 1.2 fallback", len(st.Ciphers))}
	case secAuthenticate:
		return []string{st.Ciphers[0].Channel + ": " + st.Ciphers[0].Protocol, st.Ciphers[len(st.Ciphers)-1].Channel + ": " + st.Ciphers[len(st.Ciphers)-1].Protocol}
	case secAudit, sec308ActivityReview:
		sinks := "SIEM sinks: none"
		if len(st.SIEMSinks) > 0 {
			sinks = "SIEM sinks: " + strings.Join(st.SIEMSinks, ", ")
		}
		return []string{fmt.Sprintf("audit retention: %d years", st.AuditRetentionYears), sinks}
	case secIntegrity:
		al := b.rep.AuditLog
		if al.CheckpointSize == 0 {
			return []string{"no signed checkpoint"}
		}
		return []string{fmt.Sprintf("audit log of %d records verified: %t; checkpoint of %d records signed %s", al.Records, al.Verified, al.CheckpointSize, al.CheckpointTime.Format(time.RFC3339))}
	case secPersonAuth:
		idps := "identity providers: none (local users with password and TOTP)"
		if len(st.IdentityProviders) > 0 {
			idps = "identity providers: " + strings.Join(st.IdentityProviders, ", ")
		}
		return []string{idps, rulesLine}
	case sec308AccessModify:
		return []string{policyLine}
	}
	return nil
}

// ztmm is the self-assessment: each pillar's stage follows from the live
// configuration where the product leaves a choice, and from what is built
// where it does not.
func (b *builder) ztmm() []adminapi.ZTMMPillar {
	in, r := b.in, b.rule
	phiAll := func(n int) bool { return r.rules > 0 && n == r.rules }
	var out []adminapi.ZTMMPillar
	add := func(p, stage, next string, why ...string) {
		out = append(out, adminapi.ZTMMPillar{Pillar: p, Stage: stage, Why: why, Next: next})
	}

	switch {
	case phiAll(r.stepUp) && r.waivers == 0 && len(in.IdPs) > 0:
		add("Identity", adminapi.StageOptimal, "",
			"every rule reaching PHI apps requires MFA no older than its limit (step-up)",
			"users come from the hospital IdP, re-checked at every refresh; a refused user loses every session",
			"sessions end on idle and absolute limits")
	case phiAll(r.mfa) && r.waivers == 0:
		add("Identity", adminapi.StageAdvanced, "MFA freshness (step-up) on every PHI rule and an OIDC identity provider",
			"every rule reaching PHI apps requires MFA", "sessions end on idle and absolute limits")
	case r.mfa > 0:
		add("Identity", adminapi.StageInitial, "MFA on every rule reaching PHI apps, with no waivers",
			fmt.Sprintf("%d of %d rules reaching PHI apps require MFA", r.mfa, r.rules), "unique identities, sessions with idle and absolute limits")
	default:
		add("Identity", adminapi.StageTraditional, "require MFA in the rules that reach PHI apps",
			"no rule reaching a PHI app requires MFA")
	}

	_, quarantine := audit.Lookup(audit.AdminDeviceQuarantine)
	switch {
	case phiAll(r.posture) && quarantine:
		add("Devices", adminapi.StageOptimal, "",
			"every rule reaching PHI apps requires a device posture check, evaluated continuously on the controller",
			"a device is quarantined in one call: within 1 s it reaches no app", "each device has its own key and certificate")
	case phiAll(r.posture):
		add("Devices", adminapi.StageAdvanced, "device quarantine", "every rule reaching PHI apps requires a device posture check")
	default:
		add("Devices", adminapi.StageInitial, "a posture check on every rule reaching PHI apps",
			"each device has its own key and certificate and is revoked in one call",
			fmt.Sprintf("%d of %d rules reaching PHI apps check posture", r.posture, r.rules))
	}

	add("Networks", adminapi.StageAdvanced, "just-in-time grants beyond sessions and break-glass",
		"every new flow is authorized at the gateway against the policy (default deny)",
		"apps are micro-perimeters: a device's AllowedIPs hold only its entitled apps, and unentitled names do not resolve",
		"all traffic is encrypted (WireGuard, TLS 1.3)")

	add("Applications", adminapi.StageAdvanced, "authorization inside the application protocol (per request), which Cordon does not do",
		"each app is reached only through identity-aware rules, re-checked when policy or context changes",
		"apps are invisible to users not entitled to them")

	phiIdle := in.Limits.Idle[session.Classification(policyfile.ClassPHI)]
	switch {
	case r.phiApps == 0:
		add("Data", adminapi.StageTraditional, "classify the apps that hold ePHI as phi", "no app is classified phi")
	case phiIdle > 0 && phiIdle < in.Limits.DefaultIdle || phiAll(r.mfa) && phiAll(r.posture):
		add("Data", adminapi.StageAdvanced, "data-level controls (labelling, loss prevention, encryption at rest), outside Cordon",
			fmt.Sprintf("%d apps are classified phi and the classification drives stricter access (MFA, posture, idle limit)", r.phiApps))
	default:
		add("Data", adminapi.StageInitial, "let the phi classification drive stricter access: a shorter idle limit, or MFA and posture on every rule",
			fmt.Sprintf("%d apps are classified phi", r.phiApps))
	}

	switch {
	case b.rep.AuditLog.Verified && len(in.SIEMSinks) > 0:
		add("Visibility and Analytics", adminapi.StageAdvanced, "automated analytics of flows beyond the sign-in failure alert",
			"every flow, session and change is recorded in a verified, signed log", "records stream to the SIEM: "+strings.Join(in.SIEMSinks, ", "))
	default:
		add("Visibility and Analytics", adminapi.StageInitial, "a verified log streamed to a SIEM",
			"every flow, session and change is recorded in the audit log")
	}

	if in.Version != nil {
		add("Automation and Orchestration", adminapi.StageAdvanced, "automated response (quarantine on a failed posture or an alert)",
			"policy as code with tests, planned and applied as versions", "changes reach every gateway and client within 1 s, without polling")
	} else {
		add("Automation and Orchestration", adminapi.StageInitial, "apply the policy as a tested policy file",
			"changes reach every gateway and client within 1 s, without polling")
	}

	var missing []string
	for _, g := range b.gaps {
		if strings.HasPrefix(g.ID, "not-built-") {
			missing = append(missing, strings.TrimPrefix(g.Title, "Not yet built: "))
		}
	}
	if len(missing) == 0 {
		add("Governance", adminapi.StageAdvanced, "scheduled, automated governance across every pillar",
			"access reviews and break-glass are recorded and reviewed", fmt.Sprintf("audit records kept %d years", in.RetentionYears))
	} else {
		add("Governance", adminapi.StageInitial, "not yet built: "+strings.Join(missing, ", "),
			"policy versions, admin changes and archiving are audited; admins hold roles", fmt.Sprintf("audit records kept %d years", in.RetentionYears))
	}
	return out
}
