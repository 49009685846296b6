package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
)

// Conformance cases for admin accounts, admin tokens and recovery codes.

func admin(name, role string) store.Admin {
	return store.Admin{
		Name: name, Role: role,
		PasswordHash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
		TOTPSecret:   "JBSWY3DPEHPK3PXP",
		CreatedAt:    at(4 * time.Minute),
	}
}

func testAdminAccounts(t *testing.T, s store.Store) {
	c := ctx(t)
	xs, err := s.ListAdmins(c)
	must(t, err)
	if len(xs) != 0 {
		t.Fatalf("new store has admins: %+v", xs)
	}
	alice, bob := admin("alice", "owner"), admin("bob", "helpdesk")
	must(t, s.CreateAdmin(c, bob))
	must(t, s.CreateAdmin(c, alice))
	wantErr(t, "duplicate", s.CreateAdmin(c, alice), store.ErrAlreadyExists)
	got, err := s.GetAdmin(c, "alice")
	must(t, err)
	equal(t, "GetAdmin", got, alice)
	_, err = s.GetAdmin(c, "carol")
	wantErr(t, "GetAdmin missing", err, store.ErrNotFound)
	xs, err = s.ListAdmins(c)
	must(t, err)
	wantNames(t, "ListAdmins", names(xs, func(a store.Admin) string { return a.Name }), []string{"alice", "bob"})

	must(t, s.SetAdminDisabled(c, "bob", true))
	got, err = s.GetAdmin(c, "bob")
	must(t, err)
	if !got.Disabled {
		t.Fatal("bob not disabled")
	}
	wantErr(t, "disable missing", s.SetAdminDisabled(c, "carol", true), store.ErrNotFound)

	// Deleting an account deletes its tokens, not others'.
	must(t, s.CreateAdminToken(c, store.AdminToken{ID: "t1", Name: "bob", Admin: "bob", Role: "helpdesk", Hash: []byte("h1"), ExpiresAt: at(time.Hour)}))
	must(t, s.CreateAdminToken(c, store.AdminToken{ID: "t2", Name: "ci", Role: "auditor", Hash: []byte("h2"), ExpiresAt: at(time.Hour)}))
	must(t, s.DeleteAdmin(c, "bob"))
	wantErr(t, "delete again", s.DeleteAdmin(c, "bob"), store.ErrNotFound)
	_, _, err = s.AdminTokenByHash(c, []byte("h1"))
	wantErr(t, "token of deleted admin", err, store.ErrNotFound)
	if _, _, err := s.AdminTokenByHash(c, []byte("h2")); err != nil {
		t.Fatalf("standalone token gone: %v", err)
	}
	// A re-created account does not get the old tokens back.
	must(t, s.CreateAdmin(c, admin("bob", "auditor")))
	toks, err := s.ListAdminTokens(c)
	must(t, err)
	wantNames(t, "tokens", names(toks, func(t store.AdminToken) string { return t.ID }), []string{"t2"})
}

// testAdminIdPBinding: an IdP admin account is bound to one subject by
// the first sign-in, exactly once even under concurrency; one IdP user
// is at most one admin account.
func testAdminIdPBinding(t *testing.T, s store.Store) {
	c := ctx(t)
	idpAdmin := func(name, subject string) store.Admin {
		return store.Admin{Name: name, Role: "auditor", IdP: "okta", Subject: subject, CreatedAt: at(time.Minute)}
	}
	pinned := idpAdmin("pia", "sub-pia")
	must(t, s.CreateAdmin(c, pinned))
	got, err := s.GetAdmin(c, "pia")
	must(t, err)
	equal(t, "GetAdmin pinned", got, pinned)
	must(t, s.CreateAdmin(c, idpAdmin("ann", "")))
	must(t, s.CreateAdmin(c, admin("loc", "owner")))

	wantErr(t, "bind pinned", s.BindAdminSubject(c, "pia", "okta", "sub-x"), store.ErrTokenInvalid)
	wantErr(t, "bind local", s.BindAdminSubject(c, "loc", "okta", "sub-x"), store.ErrNotFound)
	wantErr(t, "bind other idp", s.BindAdminSubject(c, "ann", "entra", "sub-x"), store.ErrNotFound)
	wantErr(t, "bind missing", s.BindAdminSubject(c, "nobody", "okta", "sub-x"), store.ErrNotFound)
	wantErr(t, "bind taken subject", s.BindAdminSubject(c, "ann", "okta", "sub-pia"), store.ErrAlreadyExists)

	errs := together(20, func(i int) error { return s.BindAdminSubject(c, "ann", "okta", "sub-ann-"+string(rune('a'+i))) })
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrTokenInvalid):
			t.Fatalf("concurrent bind: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d concurrent binds won, want 1", won)
	}
	got, err = s.GetAdmin(c, "ann")
	must(t, err)
	if got.IdP != "okta" || len(got.Subject) != len("sub-ann-a") {
		t.Fatalf("bound admin: %+v", got)
	}
	wantErr(t, "create with taken subject", s.CreateAdmin(c, idpAdmin("dup", got.Subject)), store.ErrAlreadyExists)
}

func testAdminTokens(t *testing.T, s store.Store) {
	c := ctx(t)
	toks, err := s.ListAdminTokens(c)
	must(t, err)
	if len(toks) != 0 {
		t.Fatalf("new store has admin tokens: %+v", toks)
	}
	must(t, s.CreateAdmin(c, admin("alice", "network-admin")))
	signIn := store.AdminToken{
		ID: "adt-1", Name: "alice", Admin: "alice", Role: "network-admin", Hash: []byte("hash-1"),
		CreatedBy: "login", CreatedAt: at(0), ExpiresAt: at(8 * time.Hour),
	}
	auto := store.AdminToken{
		ID: "adt-2", Name: "ci-policy", Role: "network-admin", Scopes: []string{"policy.write", "read"}, Hash: []byte("hash-2"),
		CreatedBy: "admin:alice", CreatedAt: at(time.Minute), ExpiresAt: at(30 * 24 * time.Hour),
	}
	must(t, s.CreateAdminToken(c, signIn))
	must(t, s.CreateAdminToken(c, auto))
	signIn.Account = "alice" // a sign-in token acts for its owner
	dup := auto
	dup.ID = "adt-3"
	wantErr(t, "duplicate hash", s.CreateAdminToken(c, dup), store.ErrAlreadyExists)
	dup = auto
	dup.Hash = []byte("other")
	wantErr(t, "duplicate ID", s.CreateAdminToken(c, dup), store.ErrAlreadyExists)
	orphan := auto
	orphan.ID, orphan.Hash, orphan.Admin = "adt-4", []byte("hash-4"), "nobody"
	wantErr(t, "unknown account", s.CreateAdminToken(c, orphan), store.ErrNotFound)

	got, acct, err := s.AdminTokenByHash(c, []byte("hash-1"))
	must(t, err)
	equal(t, "sign-in token", got, signIn)
	if acct.Name != "alice" || acct.Role != "network-admin" {
		t.Fatalf("account = %+v", acct)
	}
	got, acct, err = s.AdminTokenByHash(c, []byte("hash-2"))
	must(t, err)
	equal(t, "automation token", got, auto)
	if acct.Name != "" {
		t.Fatalf("standalone token has account %+v", acct)
	}
	_, _, err = s.AdminTokenByHash(c, []byte("nope"))
	wantErr(t, "unknown hash", err, store.ErrNotFound)

	// Touch only moves forward.
	must(t, s.TouchAdminToken(c, "adt-1", at(2*time.Hour)))
	must(t, s.TouchAdminToken(c, "adt-1", at(time.Hour)))
	got, _, err = s.AdminTokenByHash(c, []byte("hash-1"))
	must(t, err)
	if !got.LastUsedAt.Equal(at(2 * time.Hour)) {
		t.Fatalf("LastUsedAt = %v", got.LastUsedAt)
	}
	if !got.Usable(at(8*time.Hour-time.Microsecond)) || got.Usable(at(8*time.Hour)) {
		t.Fatal("expiry boundary: a token is invalid from ExpiresAt on")
	}

	// Revocation: once.
	must(t, s.RevokeAdminToken(c, "adt-2", at(3*time.Hour)))
	wantErr(t, "revoke again", s.RevokeAdminToken(c, "adt-2", at(4*time.Hour)), store.ErrNotFound)
	wantErr(t, "revoke unknown", s.RevokeAdminToken(c, "adt-9", at(4*time.Hour)), store.ErrNotFound)
	got, _, err = s.AdminTokenByHash(c, []byte("hash-2"))
	must(t, err)
	if !got.RevokedAt.Equal(at(3*time.Hour)) || got.Usable(at(3*time.Hour)) {
		t.Fatalf("revoked token = %+v", got)
	}

	toks, err = s.ListAdminTokens(c)
	must(t, err)
	wantNames(t, "ListAdminTokens", names(toks, func(t store.AdminToken) string { return t.ID }), []string{"adt-1", "adt-2"})

	// Prune: expired or revoked before the cut-off; never-expiring kept.
	must(t, s.CreateAdminToken(c, store.AdminToken{ID: "adt-5", Name: "owner", Role: "owner", Hash: []byte("hash-5"), CreatedAt: at(0)}))
	n, err := s.PruneAdminTokens(c, at(5*time.Hour))
	must(t, err)
	if n != 1 {
		t.Fatalf("pruned %d, want 1 (the revoked one)", n)
	}
	n, err = s.PruneAdminTokens(c, at(9*time.Hour))
	must(t, err)
	if n != 1 {
		t.Fatalf("pruned %d, want 1 (the expired one)", n)
	}
	toks, err = s.ListAdminTokens(c)
	must(t, err)
	wantNames(t, "after prune", names(toks, func(t store.AdminToken) string { return t.ID }), []string{"adt-5"})
}

// testAdminTokenAccount: a standalone token acting for an account is
// returned with that account, disabled or not, and is revoked (not
// deleted) with it.
func testAdminTokenAccount(t *testing.T, s store.Store) {
	c := ctx(t)
	must(t, s.CreateAdmin(c, admin("bob", "owner")))
	must(t, s.CreateAdmin(c, admin("carol", "owner")))
	tok := func(id, account string) store.AdminToken {
		return store.AdminToken{
			ID: id, Name: "ci-" + id, Account: account, Role: "owner", Hash: []byte("hash-" + id),
			CreatedBy: "admin:" + account, CreatedAt: at(0), ExpiresAt: at(90 * 24 * time.Hour),
		}
	}
	bobs, carols := tok("b1", "bob"), tok("c1", "carol")
	must(t, s.CreateAdminToken(c, bobs))
	must(t, s.CreateAdminToken(c, carols))
	must(t, s.CreateAdminToken(c, store.AdminToken{ID: "b2", Name: "bob", Admin: "bob", Role: "owner", Hash: []byte("hash-b2"), CreatedBy: "login", CreatedAt: at(0), ExpiresAt: at(time.Hour)}))
	wantErr(t, "token for an unknown account", s.CreateAdminToken(c, tok("x1", "nobody")), store.ErrNotFound)
	mismatch := tok("x2", "carol")
	mismatch.Admin = "bob"
	if err := s.CreateAdminToken(c, mismatch); err == nil {
		t.Fatal("a sign-in token of bob was stored acting for carol")
	}

	got, acct, err := s.AdminTokenByHash(c, bobs.Hash)
	must(t, err)
	equal(t, "standalone token with an account", got, bobs)
	if acct.Name != "bob" || acct.Disabled {
		t.Fatalf("account of bob's token = %+v", acct)
	}

	// Disabled: returned with the disabled account, not revoked.
	must(t, s.SetAdminDisabled(c, "bob", true))
	got, acct, err = s.AdminTokenByHash(c, bobs.Hash)
	must(t, err)
	if acct.Name != "bob" || !acct.Disabled || !got.RevokedAt.IsZero() {
		t.Fatalf("after disabling bob: token %+v, account %+v", got, acct)
	}
	must(t, s.SetAdminDisabled(c, "bob", false))

	// Deleted: the sign-in token goes, the standalone one is revoked and
	// stays listed, with no account; carol's is untouched.
	must(t, s.DeleteAdmin(c, "bob"))
	got, acct, err = s.AdminTokenByHash(c, bobs.Hash)
	must(t, err)
	if acct.Name != "" || got.RevokedAt.IsZero() || got.Account != "bob" {
		t.Fatalf("after deleting bob: token %+v, account %+v", got, acct)
	}
	_, _, err = s.AdminTokenByHash(c, []byte("hash-b2"))
	wantErr(t, "sign-in token of a deleted account", err, store.ErrNotFound)
	got, acct, err = s.AdminTokenByHash(c, carols.Hash)
	must(t, err)
	if acct.Name != "carol" || !got.RevokedAt.IsZero() {
		t.Fatalf("carol's token after deleting bob: %+v, account %+v", got, acct)
	}
	toks, err := s.ListAdminTokens(c)
	must(t, err)
	wantNames(t, "tokens after deleting bob", names(toks, func(t store.AdminToken) string { return t.ID }), []string{"b1", "c1"})

	// An account re-created under the name does not revive the token.
	must(t, s.CreateAdmin(c, admin("bob", "owner")))
	got, _, err = s.AdminTokenByHash(c, bobs.Hash)
	must(t, err)
	if got.RevokedAt.IsZero() {
		t.Fatal("re-creating bob revived his revoked token")
	}
}

func testRecoveryCodes(t *testing.T, s store.Store) {
	c := ctx(t)
	wantErr(t, "unknown user", s.ReplaceRecoveryCodes(c, "ghost", [][]byte{[]byte("a")}, at(0)), store.ErrNotFound)
	must(t, s.CreateUser(c, user("nurse")))
	must(t, s.CreateUser(c, user("doctor")))
	must(t, s.ReplaceRecoveryCodes(c, "nurse", [][]byte{[]byte("a"), []byte("b"), []byte("c")}, at(time.Minute)))
	must(t, s.ReplaceRecoveryCodes(c, "doctor", [][]byte{[]byte("a")}, at(time.Minute)))

	left, err := s.UseRecoveryCode(c, "nurse", []byte("b"), at(time.Hour))
	must(t, err)
	if left != 2 {
		t.Fatalf("remaining = %d, want 2", left)
	}
	_, err = s.UseRecoveryCode(c, "nurse", []byte("b"), at(2*time.Hour))
	wantErr(t, "second use", err, store.ErrTokenInvalid)
	_, err = s.UseRecoveryCode(c, "nurse", []byte("zz"), at(2*time.Hour))
	wantErr(t, "unknown code", err, store.ErrTokenInvalid)
	_, err = s.UseRecoveryCode(c, "ghost", []byte("a"), at(2*time.Hour))
	wantErr(t, "unknown user", err, store.ErrTokenInvalid)

	codes, err := s.ListRecoveryCodes(c, "nurse")
	must(t, err)
	equal(t, "codes", codes, []store.RecoveryCode{
		{Hash: []byte("a"), CreatedAt: at(time.Minute)},
		{Hash: []byte("b"), CreatedAt: at(time.Minute), UsedAt: at(time.Hour)},
		{Hash: []byte("c"), CreatedAt: at(time.Minute)},
	})
	// The other user's identical hash was untouched.
	left, err = s.UseRecoveryCode(c, "doctor", []byte("a"), at(time.Hour))
	must(t, err)
	if left != 0 {
		t.Fatalf("doctor remaining = %d", left)
	}

	// Regenerating voids every old code, used or not.
	must(t, s.ReplaceRecoveryCodes(c, "nurse", [][]byte{[]byte("d")}, at(3*time.Hour)))
	_, err = s.UseRecoveryCode(c, "nurse", []byte("a"), at(4*time.Hour))
	wantErr(t, "old code after regenerate", err, store.ErrTokenInvalid)
	codes, err = s.ListRecoveryCodes(c, "nurse")
	must(t, err)
	if len(codes) != 1 || string(codes[0].Hash) != "d" {
		t.Fatalf("after regenerate: %+v", codes)
	}

	// Deleting the user deletes its codes; a re-created user has none.
	must(t, s.DeleteUser(c, "nurse"))
	must(t, s.CreateUser(c, user("nurse")))
	codes, err = s.ListRecoveryCodes(c, "nurse")
	must(t, err)
	if len(codes) != 0 {
		t.Fatalf("re-created user inherited codes: %+v", codes)
	}
	_, err = s.UseRecoveryCode(c, "nurse", []byte("d"), at(5*time.Hour))
	wantErr(t, "code of deleted user", err, store.ErrTokenInvalid)
}

// testRecoveryCodeConcurrent: 50 simultaneous uses of one code, exactly one
// succeeds.
func testRecoveryCodeConcurrent(t *testing.T, s store.Store) {
	c := ctx(t)
	must(t, s.CreateUser(c, user("nurse")))
	must(t, s.ReplaceRecoveryCodes(c, "nurse", [][]byte{[]byte("x"), []byte("y")}, at(0)))
	const n = 50
	errs := together(n, func(int) error {
		_, err := s.UseRecoveryCode(c, "nurse", []byte("x"), at(time.Minute))
		return err
	})
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrTokenInvalid):
			t.Errorf("use %d: unexpected error %v", i, err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent uses succeeded, want exactly 1", ok, n)
	}
	codes, err := s.ListRecoveryCodes(c, "nurse")
	must(t, err)
	if codes[0].UsedAt.IsZero() || !codes[1].UsedAt.IsZero() {
		t.Fatalf("codes after the race: %+v", codes)
	}
}
