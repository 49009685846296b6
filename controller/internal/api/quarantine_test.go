package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
)

// Quarantine through the API: helpdesk may quarantine but not release;
// bad reasons, unknown devices and repeats are refused with clear errors
// and record nothing; show and list carry the quarantine; a release by a
// network admin ends it; both are audited.
func TestQuarantineAPI(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	must[*adminapi.CreateUserResponse](t)(e.admin.CreateUser(ctx, &adminapi.CreateUserRequest{Name: "nurse", Password: "a long enough password"}))
	d, err := e.Store.CreateDevice(ctx, store.Device{ID: "dev-0000000001", User: "nurse", PublicKey: wgPub(t)})
	if err != nil {
		t.Fatal(err)
	}
	client := func(role auth.Role) *adminapi.Client {
		tok, _ := tokenFor(t, e.Store, role, time.Hour, e.Now())
		c, err := adminapi.New(e.URL, tok, e.CAPEM)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	helpdesk, auditor, netadmin := client(auth.RoleHelpdesk), client(auth.RoleAuditor), client(auth.RoleNetworkAdmin)

	for _, tc := range []struct {
		name, reason string
		msg          string
	}{
		{"empty", "", "required"},
		{"blank", "   ", "required"},
		{"escape sequence", "malware \x1b[2J", "control characters"},
		{"two lines", "a\nb", "control characters"},
		{"too long", strings.Repeat("x", adminapi.MaxQuarantineReason+1), "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := helpdesk.QuarantineDevice(ctx, d.ID, tc.reason)
			wantCode(t, err, 400, adminapi.CodeInvalid, tc.msg)
		})
	}
	_, err = helpdesk.QuarantineDevice(ctx, "dev-nope", "x")
	wantCode(t, err, 404, adminapi.CodeNotFound, "dev-nope")
	_, err = auditor.QuarantineDevice(ctx, d.ID, "x")
	wantCode(t, err, 403, adminapi.CodeForbidden, "access.revoke")
	if n := len(e.audit("admin.device.quarantine")); n != 0 {
		t.Fatalf("%d quarantine records after refusals only", n)
	}

	got, err := helpdesk.QuarantineDevice(ctx, d.ID, "  EDR alert, ticket 4411 ")
	if err != nil {
		t.Fatal(err)
	}
	if q := got.Quarantine; q == nil || q.Reason != "EDR alert, ticket 4411" || !strings.HasPrefix(q.By, "admin:") || !q.At.Equal(e.Now()) {
		t.Fatalf("quarantine answered %+v, want the trimmed reason, the admin and now", got.Quarantine)
	}
	_, err = helpdesk.QuarantineDevice(ctx, d.ID, "again")
	wantCode(t, err, 409, adminapi.CodeConflict, "quarantined already", "release it first")
	if shown, err := auditor.GetDevice(ctx, d.ID); err != nil || shown.Quarantine == nil || shown.Quarantine.Reason != "EDR alert, ticket 4411" {
		t.Fatalf("device show = %+v, %v: want the quarantine", shown, err)
	}
	list, err := auditor.ListDevices(ctx)
	if err != nil || len(list) != 1 || list[0].Quarantine == nil {
		t.Fatalf("device list = %+v, %v: want the device with its quarantine", list, err)
	}

	_, err = helpdesk.ReleaseDevice(ctx, d.ID, "")
	wantCode(t, err, 403, adminapi.CodeForbidden, "users.write")
	_, err = netadmin.ReleaseDevice(ctx, d.ID, "bad\x1bcomment")
	wantCode(t, err, 400, adminapi.CodeInvalid, "control characters")
	rel, err := netadmin.ReleaseDevice(ctx, d.ID, "reimaged")
	if err != nil || rel.Quarantine != nil {
		t.Fatalf("release = %+v, %v: want the device without a quarantine", rel, err)
	}
	_, err = netadmin.ReleaseDevice(ctx, d.ID, "")
	wantCode(t, err, 409, adminapi.CodeConflict, "not quarantined")

	q, r := e.audit("admin.device.quarantine"), e.audit("admin.device.release")
	if len(q) != 1 || q[0].Subject != d.ID || q[0].Details["reason"] != "EDR alert, ticket 4411" ||
		len(r) != 1 || r[0].Details["comment"] != "reimaged" || r[0].Details["quarantined_by"] != q[0].Actor {
		t.Fatalf("records: quarantine %+v, release %+v", q, r)
	}
}
