package storetest

import (
	"testing"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// testIdentities: the first sign-in creates the user (no password, no
// TOTP) and the link; later ones update the link and keep the user; an
// existing account is never linked; updates and deletion cascade.
func testIdentities(t *testing.T, s store.Store) {
	c := ctx(t)
	must(t, s.CreateUser(c, user("alice"))) // a local account

	in := store.Identity{IdP: "okta", Subject: "00u1", User: "bob", Email: "bob@h.example", Claim: "groups",
		Groups: []string{"Radiology", "Physicians", "Radiology"}, RefreshToken: "sealed-1", LastRefresh: at(0), CreatedAt: at(0)}
	got, err := s.LinkIdentity(c, in)
	must(t, err)
	want := in
	want.Groups = []string{"Physicians", "Radiology"}
	equal(t, "first link", got, want)
	u, err := s.GetUser(c, "bob")
	must(t, err)
	if u.PasswordHash != "" || u.TOTPSecret != "" || u.Disabled {
		t.Fatalf("created user %+v: want no password, no TOTP, enabled", u)
	}

	// A local account of the same name is never taken over.
	_, err = s.LinkIdentity(c, store.Identity{IdP: "okta", Subject: "00u2", User: "alice"})
	wantErr(t, "link to existing account", err, store.ErrAlreadyExists)
	_, err = s.GetIdentity(c, "okta", "00u2")
	wantErr(t, "GetIdentity after refused link", err, store.ErrNotFound)

	// Refused refresh, then a new sign-in: the name stays, the token is
	// kept when none is given, InvalidAt is cleared.
	got.InvalidAt, got.RefreshToken = at(60e9), ""
	must(t, s.UpdateIdentity(c, got))
	got, err = s.LinkIdentity(c, store.Identity{IdP: "okta", Subject: "00u1", User: "robert", Claim: "groups", Groups: []string{"Nurses"}, LastRefresh: at(120e9)})
	must(t, err)
	if got.User != "bob" || !got.InvalidAt.IsZero() || got.RefreshToken != "" || len(got.Groups) != 1 || got.Groups[0] != "Nurses" {
		t.Fatalf("relink: %+v", got)
	}
	got, err = s.LinkIdentity(c, store.Identity{IdP: "okta", Subject: "00u1", User: "bob", Claim: "groups", RefreshToken: "sealed-2", LastRefresh: at(180e9)})
	must(t, err)
	if got.RefreshToken != "sealed-2" || len(got.Groups) != 0 {
		t.Fatalf("relink with token: %+v", got)
	}
	if _, err := s.GetUser(c, "robert"); err == nil {
		t.Fatal("relink under another name created a user")
	}

	wantErr(t, "UpdateIdentity missing", s.UpdateIdentity(c, store.Identity{IdP: "okta", Subject: "nope"}), store.ErrNotFound)

	// Same subject at another IdP is another person.
	_, err = s.LinkIdentity(c, store.Identity{IdP: "entra", Subject: "00u1", User: "carol", Claim: "roles"})
	must(t, err)
	list, err := s.ListIdentities(c)
	must(t, err)
	if len(list) != 2 || list[0].IdP != "entra" || list[1].RefreshToken != "sealed-2" {
		t.Fatalf("ListIdentities: %+v", list)
	}

	snap, err := s.Snapshot(c)
	must(t, err)
	if len(snap.Identities) != 2 || snap.Identities[1].User != "bob" || snap.Identities[1].RefreshToken != "" {
		t.Fatalf("Snapshot identities (refresh tokens must be blank): %+v", snap.Identities)
	}

	must(t, s.DeleteUser(c, "bob"))
	_, err = s.GetIdentity(c, "okta", "00u1")
	wantErr(t, "identity of deleted user", err, store.ErrNotFound)
}

// testIdentitiesConcurrent: many first sign-ins of one subject at once
// create one user and one link.
func testIdentitiesConcurrent(t *testing.T, s store.Store) {
	c := ctx(t)
	errs := together(20, func(int) error {
		id, err := s.LinkIdentity(c, store.Identity{IdP: "kc", Subject: "s-1", User: "dana", Claim: "groups"})
		if err == nil && id.User != "dana" {
			t.Errorf("linked to %q", id.User)
		}
		return err
	})
	for _, err := range errs {
		must(t, err)
	}
	users, err := s.ListUsers(c)
	must(t, err)
	if len(users) != 1 {
		t.Fatalf("users = %+v, want one", users)
	}
}
