package storetest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
)

func testPolicyVersions(t *testing.T, s store.Store) {
	c := ctx(t)
	if _, err := s.ActivePolicy(c); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ActivePolicy on a new store: err = %v, want ErrNotFound", err)
	}
	if vs, err := s.ListPolicyVersions(c); err != nil || len(vs) != 0 {
		t.Fatalf("ListPolicyVersions on a new store = %v, %v; want none", vs, err)
	}
	if _, err := s.GetPolicyVersion(c, 1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetPolicyVersion(1) on a new store: err = %v, want ErrNotFound", err)
	}

	at := time.Date(2026, 3, 2, 9, 0, 0, 123456000, time.UTC)
	v1, err := s.PutPolicyVersion(c, 0, store.PolicyVersion{File: "a.yaml", Source: []byte("version: 1\n"), Actor: "admin:ops", Reason: "first", CreatedAt: at})
	must(t, err)
	sum := sha256.Sum256([]byte("version: 1\n"))
	if v1.Version != 1 || v1.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("first version = %d sha %s; want 1 and the SHA-256 of its source", v1.Version, v1.SHA256)
	}
	// A writer that saw no policy loses against the one that stored v1.
	if _, err := s.PutPolicyVersion(c, 0, store.PolicyVersion{Source: []byte("x")}); !errors.Is(err, store.ErrStale) {
		t.Fatalf("PutPolicyVersion with a stale prev: err = %v, want ErrStale", err)
	}
	v2, err := s.PutPolicyVersion(c, 1, store.PolicyVersion{File: "b.yaml", Source: []byte("version: 1\n# b\n"), Actor: "admin:ops", Reason: "second"})
	must(t, err)
	v3, err := s.PutPolicyVersion(c, 2, store.PolicyVersion{File: "a.yaml", Source: v1.Source, Actor: "admin:sec", Reason: "roll back", RollbackOf: 1})
	must(t, err)
	if v2.Version != 2 || v3.Version != 3 || v3.SHA256 != v1.SHA256 {
		t.Fatalf("versions %d, %d (sha %s); want 2, 3 with v3 the same text as v1", v2.Version, v3.Version, v3.SHA256)
	}

	act, err := s.ActivePolicy(c)
	must(t, err)
	equal(t, "ActivePolicy", act, v3)
	got, err := s.GetPolicyVersion(c, 1)
	must(t, err)
	equal(t, "GetPolicyVersion(1)", got, v1)
	if !got.CreatedAt.Equal(at) {
		t.Fatalf("CreatedAt = %v, want %v", got.CreatedAt, at)
	}
	if _, err := s.GetPolicyVersion(c, 4); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetPolicyVersion(4): err = %v, want ErrNotFound", err)
	}

	vs, err := s.ListPolicyVersions(c)
	must(t, err)
	if len(vs) != 3 {
		t.Fatalf("ListPolicyVersions: %d versions, want 3", len(vs))
	}
	for i, v := range vs {
		want := []store.PolicyVersion{v1, v2, v3}[i]
		want.Source = nil
		if len(v.Source) == 0 {
			v.Source = nil
		}
		equal(t, "ListPolicyVersions", v, want)
	}

	snap, err := s.Snapshot(c)
	must(t, err)
	if snap.Policy == nil {
		t.Fatal("Snapshot.Policy is nil with a policy applied")
	}
	equal(t, "Snapshot.Policy", *snap.Policy, v3)
}

// Of many concurrent applies that saw the same active version, exactly one
// is stored.
func testPolicyVersionsConcurrent(t *testing.T, s store.Store) {
	c := ctx(t)
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.PutPolicyVersion(c, 0, store.PolicyVersion{Source: []byte{byte(i)}, Reason: "race"})
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrStale):
			t.Fatalf("concurrent PutPolicyVersion: %v", err)
		}
	}
	vs, err := s.ListPolicyVersions(c)
	must(t, err)
	if won != 1 || len(vs) != 1 {
		t.Fatalf("%d applies succeeded, %d versions stored; want 1 and 1", won, len(vs))
	}
}
