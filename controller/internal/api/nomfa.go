package api

import (
	"context"
	"strings"

	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// noMFA says, for a sign-in of user by method that proved no second
// factor, which apps of the active policy stay closed for want of one and
// how to get it; nil when none does (or no policy file is applied:
// directory rules have no conditions). A failure to work it out only
// loses the notice, never the sign-in.
func (a *API) noMFA(ctx context.Context, user, method string) *controlproto.NoMFA {
	_, pol, err := a.appliedPolicy(ctx)
	if err != nil || pol == nil {
		return nil
	}
	ids, err := a.identities(ctx, user)
	if err != nil {
		a.log.WarnContext(ctx, "read identities for the MFA notice", logErr, err)
		return nil
	}
	var refs []policyfile.IdPRef
	for _, id := range ids {
		if id.InvalidAt.IsZero() {
			for _, g := range id.Groups {
				refs = append(refs, policyfile.IdPRef{Claim: id.Claim, Value: g})
			}
		}
	}
	apps := pol.MFAOnlyApps(user, refs)
	if len(apps) == 0 {
		return nil
	}
	idp, display := "", ""
	if name, ok := strings.CutPrefix(method, MethodOIDCPrefix); ok && a.oidc != nil {
		idp, display = name, name
		for _, p := range a.oidc.Providers() {
			if p.Name == name {
				display = p.DisplayName
			}
		}
	}
	return &controlproto.NoMFA{Apps: apps, How: session.NoMFAHow(idp, display)}
}
