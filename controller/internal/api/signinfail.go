package api

import (
	"sync/atomic"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
)

// SignInFailureKinds are the kinds SignInFailures counts: user sign-ins
// (auth.login), admin sign-ins (admin.login), admin API calls with a bad
// or insufficient token (admin.auth) and enrollments with a bad token
// (enroll.gateway, enroll.device).
var SignInFailureKinds = []string{"user", "admin", "admin_token", "enrollment"}

// signInFailures counts failed sign-ins since start, by kind, in the
// order of SignInFailureKinds.
type signInFailures [4]atomic.Uint64

func signInFailureKind(t audit.Type) int {
	switch t {
	case audit.AuthLogin:
		return 0
	case audit.AdminLogin:
		return 1
	case audit.AdminAuth:
		return 2
	case audit.EnrollGateway, audit.EnrollDevice:
		return 3
	}
	return -1
}

// count notes the failures among evs.
func (f *signInFailures) count(evs []store.AuditEvent) {
	for _, ev := range evs {
		if ev.Outcome != "failure" {
			continue
		}
		if k := signInFailureKind(ev.Type); k >= 0 {
			f[k].Add(1)
		}
	}
}

// SignInFailures returns the failed sign-ins since start by kind (keys:
// SignInFailureKinds), for metrics.
func (a *API) SignInFailures() map[string]uint64 {
	out := make(map[string]uint64, len(SignInFailureKinds))
	for i, k := range SignInFailureKinds {
		out[k] = a.signInFails[i].Load()
	}
	return out
}
