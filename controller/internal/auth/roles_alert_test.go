package auth

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRoles(t *testing.T) {
	for _, tc := range []struct {
		role  Role
		allow []Permission
	}{
		{RoleOwner, Permissions},
		{RoleNetworkAdmin, []Permission{PermRead, PermAuditRead, PermAccessRevoke, PermUsersWrite, PermPolicyWrite, PermGatewaysWrite,
			PermReviewsRead, PermReviewsDecide, PermReviewsManage, PermBreakGlassReview}},
		{RoleAuditor, []Permission{PermRead, PermAuditRead, PermAdminsRead, PermReviewsRead, PermBreakGlassReview}},
		{RoleHelpdesk, []Permission{PermRead, PermAccessRevoke}},
		// The reviewer reads and decides reviews and nothing else: not even
		// the directory or the audit trail.
		{RoleReviewer, []Permission{PermReviewsRead, PermReviewsDecide}},
	} {
		for _, p := range Permissions {
			if got, want := (Scope{Role: tc.role}).Allows(p), slices.Contains(tc.allow, p); got != want {
				t.Errorf("%s %s: allowed %v, want %v", tc.role, p, got, want)
			}
		}
	}
	// Nothing but the owner may touch admins or their tokens.
	for _, p := range []Permission{PermAdminsWrite, PermAuditArchive} {
		if r := RolesGranting(p); !slices.Equal(r, []Role{RoleOwner}) {
			t.Errorf("%s granted to %v", p, r)
		}
	}
	if (Scope{}).Allows(PermRead) {
		t.Error("zero scope allows read")
	}
	if _, err := ParseRole("root"); err == nil || !strings.Contains(err.Error(), "network-admin") {
		t.Errorf("ParseRole(root) = %v", err)
	}
	if _, err := ParsePermission("everything"); err == nil {
		t.Error("ParsePermission accepted junk")
	}

	// Narrowing.
	narrow := Scope{Role: RoleNetworkAdmin, Only: []Permission{PermPolicyWrite}}
	if !narrow.Allows(PermPolicyWrite) || narrow.Allows(PermRead) || narrow.Allows(PermUsersWrite) {
		t.Errorf("narrow scope: %v", narrow.Effective())
	}
	if err := CheckNarrowing(RoleHelpdesk, []Permission{PermPolicyWrite}); err == nil {
		t.Error("helpdesk narrowed to policy.write")
	}
	// Covers: no escalation through token issuance.
	if !(Scope{Role: RoleOwner}).Covers(Scope{Role: RoleNetworkAdmin}) ||
		(Scope{Role: RoleNetworkAdmin}).Covers(Scope{Role: RoleOwner}) ||
		(Scope{Role: RoleHelpdesk}).Covers(Scope{Role: RoleAuditor}) ||
		!narrow.Covers(Scope{Role: RoleOwner, Only: []Permission{PermPolicyWrite}}) {
		t.Error("Covers wrong")
	}
}

func TestFailureAlert(t *testing.T) {
	f := NewFailureAlert(AlertConfig{Threshold: 3, Window: time.Minute})
	now := time.Unix(1_800_000_000, 0)
	var got []Alert
	for i := range 10 {
		// One user from rotating /64s: only the user key reaches 3.
		got = append(got, f.Failed("Nurse", "2001:db8:"+string(rune('a'+i))+"::1", now.Add(time.Duration(i)*time.Second))...)
	}
	if len(got) != 1 || got[0].Kind != AlertUser || got[0].Key != "nurse" || got[0].Failures != 3 || !got[0].First.Equal(now) {
		t.Fatalf("alerts = %+v, want one user alert at the 3rd failure", got)
	}
	// After a window, a continuing attack raises one more.
	later := now.Add(2 * time.Minute)
	got = nil
	for i := range 5 {
		got = append(got, f.Failed("nurse", "192.0.2.1", later.Add(time.Duration(i)*time.Second))...)
	}
	if len(got) != 2 { // user again, and the source's first
		t.Fatalf("second window alerts = %+v", got)
	}
	// Failures spread wider than the window never alert.
	f = NewFailureAlert(AlertConfig{Threshold: 3, Window: time.Minute})
	for i := range 10 {
		if a := f.Failed("slow", "192.0.2.9", now.Add(time.Duration(i)*31*time.Second)); len(a) != 0 {
			t.Fatalf("spread failures alerted at %d: %+v", i, a)
		}
	}
	// Bounded memory.
	f = NewFailureAlert(AlertConfig{MaxEntries: 10})
	for i := range 100 {
		f.Failed(strings.Repeat("u", i+1), "192.0.2.1", now)
	}
	if len(f.users) > 10 {
		t.Fatalf("%d entries, cap 10", len(f.users))
	}
}

func TestRecoveryCodes(t *testing.T) {
	codes, hashes := NewRecoveryCodes("Nurse", RecoveryCodeCount)
	if len(codes) != 10 || len(hashes) != 10 {
		t.Fatalf("%d codes", len(codes))
	}
	seen := map[string]bool{}
	for i, c := range codes {
		if len(c) != 19 || !LooksLikeRecoveryCode(c) || seen[c] {
			t.Fatalf("code %q", c)
		}
		seen[c] = true
		if MatchRecoveryCode("nurse", strings.ToUpper(strings.ReplaceAll(c, "-", " ")), hashes) != i {
			t.Errorf("code %d does not match itself typed differently", i)
		}
	}
	if MatchRecoveryCode("doctor", codes[0], hashes) != -1 {
		t.Error("another user's code matched")
	}
	if MatchRecoveryCode("nurse", "", hashes) != -1 || MatchRecoveryCode("nurse", codes[0], nil) != -1 {
		t.Error("empty matched")
	}
	if LooksLikeRecoveryCode("123456") {
		t.Error("a TOTP code looks like a recovery code")
	}
}

// FuzzRecoveryCode: whatever a client sends as a recovery code, checking
// it never panics, normalization is idempotent, and only the real code
// matches.
func FuzzRecoveryCode(f *testing.F) {
	codes, hashes := NewRecoveryCodes("nurse", 2)
	f.Add(codes[0])
	f.Add(strings.ToUpper(codes[1]))
	f.Add("")
	f.Add("----")
	f.Add("ÄBCD-éfgh-\x00\xff-1234")
	f.Fuzz(func(t *testing.T, code string) {
		n := NormalizeRecoveryCode(code)
		if NormalizeRecoveryCode(n) != n {
			t.Fatalf("normalize not idempotent on %q", code)
		}
		i := MatchRecoveryCode("nurse", code, hashes)
		if i >= 0 && n != NormalizeRecoveryCode(codes[i]) {
			t.Fatalf("%q matched code %d", code, i)
		}
		if i >= 0 && !LooksLikeRecoveryCode(code) {
			t.Fatalf("%q matched but does not look like a code", code)
		}
	})
}
