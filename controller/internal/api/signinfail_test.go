package api

import (
	"testing"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
)

// Only failed sign-in events count, each under its kind.
func TestSignInFailuresCount(t *testing.T) {
	a := &API{}
	a.signInFails.count([]store.AuditEvent{
		{Type: audit.AuthLogin, Outcome: "failure"}, {Type: audit.AuthLogin, Outcome: "success"},
		{Type: audit.AuthLogin, Outcome: "failure"}, {Type: audit.AdminLogin, Outcome: "failure"},
		{Type: audit.AdminAuth, Outcome: "failure"}, {Type: audit.EnrollDevice, Outcome: "failure"},
		{Type: audit.EnrollGateway, Outcome: "failure"}, {Type: audit.AdminLogin, Outcome: "success"},
	})
	want := map[string]uint64{"user": 2, "admin": 1, "admin_token": 1, "enrollment": 2}
	got := a.SignInFailures()
	if len(got) != len(want) {
		t.Fatalf("SignInFailures = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("SignInFailures[%s] = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
}
