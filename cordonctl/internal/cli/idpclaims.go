package cli

// IdP-granted access in reviews: a user whose access comes from an IdP
// group ({claim: groups, value: Physicians} in the policy) reaches what
// that group reaches as long as the identity provider last said so. The
// controller keeps, per user, the claims the IdP last asserted (at the
// last sign-in or refresh); access reviews of the controller's policy use
// them, and say how old they are, instead of answering as if the user had
// no IdP groups.

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// fmtAge renders an age given in seconds by the controller's clock.
func fmtAge(seconds int64) string {
	return (time.Duration(seconds) * time.Second).String()
}

// claimsNote describes one identity's claims for a reviewer.
func claimsNote(id adminapi.UserIdentity) string {
	if !id.InvalidAt.IsZero() {
		return fmt.Sprintf("%s: refused by the IdP at %s, grants nothing until the next sign-in", id.IdP, fmtTime(id.InvalidAt))
	}
	refs := make([]string, len(id.Groups))
	for i, g := range id.Groups {
		refs[i] = id.Claim + "=" + g
	}
	list := strings.Join(refs, ", ")
	if list == "" {
		list = "no groups"
	}
	return fmt.Sprintf("%s: %s, as of %s (%s old)", id.IdP, list, fmtTime(id.ClaimsAsOf), fmtAge(id.ClaimsAge))
}

// idpRefs are the IdP group references the valid identities assert.
func idpRefs(ids []adminapi.UserIdentity) []policyfile.IdPRef {
	var out []policyfile.IdPRef
	for _, id := range ids {
		if !id.InvalidAt.IsZero() {
			continue
		}
		for _, g := range id.Groups {
			out = append(out, policyfile.IdPRef{Claim: id.Claim, Value: g})
		}
	}
	return out
}

// printIdentities writes a user's identities (user show).
func printIdentities(w io.Writer, u adminapi.User) error {
	if len(u.Identities) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\nIdentity providers of %s (the claims IdP-group rules use):\n", sanitize(u.Name))
	t := newTable(w, "IDP", "SUBJECT", "EMAIL", "GROUPS", "AS-OF", "AGE", "STATE")
	for _, id := range u.Identities {
		refs := make([]string, len(id.Groups))
		for i, g := range id.Groups {
			refs[i] = id.Claim + "=" + g
		}
		state := "valid"
		if !id.InvalidAt.IsZero() {
			state = "refused by the IdP " + fmtTime(id.InvalidAt)
		}
		t.row(id.IdP, id.Subject, orDash(id.Email), orDash(strings.Join(refs, ",")), fmtTime(id.ClaimsAsOf), fmtAge(id.ClaimsAge), state)
	}
	return t.flush()
}

// lastKnownClaims fetches a user's IdP claims from the controller and says
// on stderr which are used. A user the controller does not know has none.
func (a *app) lastKnownClaims(cmd *cobra.Command, user string) ([]policyfile.IdPRef, error) {
	c, err := a.getClient()
	if err != nil {
		return nil, err
	}
	u, err := c.GetUser(cmd.Context(), user)
	if adminapi.IsCode(err, adminapi.CodeNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the IdP claims of %s: %w", user, err)
	}
	for _, id := range u.Identities {
		fmt.Fprintf(a.io.Err, "(IdP claims of %s last reported by %s)\n", sanitize(user), sanitize(claimsNote(id)))
	}
	return idpRefs(u.Identities), nil
}

// whoCanByClaims adds to a who-can review of app the users whose
// last-known IdP claims grant it (beyond what they reach as local
// members), each naming the claims and their age.
func (a *app) whoCanByClaims(cmd *cobra.Command, pol *policyfile.Policy, app string, es []policyfile.Entitlement) ([]policyfile.Entitlement, error) {
	c, err := a.getClient()
	if err != nil {
		return nil, err
	}
	ids, err := c.ListIdentities(cmd.Context())
	if err != nil {
		return nil, fmt.Errorf("read the users' IdP claims: %w", err)
	}
	byUser := map[string][]adminapi.UserIdentity{}
	for _, id := range ids {
		byUser[id.User] = append(byUser[id.User], id)
	}
	for _, user := range slices.Sorted(func(yield func(string) bool) {
		for u := range byUser {
			if !yield(u) {
				return
			}
		}
	}) {
		refs := idpRefs(byUser[user])
		if len(refs) == 0 {
			continue
		}
		local := map[string]bool{}
		for _, e := range pol.Access(user, nil, nil) {
			local[e.App+"\x00"+e.Rule] = true
		}
		var notes []string
		for _, id := range byUser[user] {
			if id.InvalidAt.IsZero() {
				notes = append(notes, fmt.Sprintf("IdP %s claims %s old", id.IdP, fmtAge(id.ClaimsAge)))
			}
		}
		for _, e := range pol.Access(user, refs, nil) {
			if e.App != app || local[e.App+"\x00"+e.Rule] {
				continue
			}
			e.Via += " (" + strings.Join(notes, "; ") + ")"
			es = append(es, e)
		}
	}
	return es, nil
}
