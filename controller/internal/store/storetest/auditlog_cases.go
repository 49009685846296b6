package storetest

// Cases for the audit log's Merkle tree and checkpoints.

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"golang.org/x/mod/sumdb/tlog"
)

// hashReader makes a store a tlog.HashReader.
type hashReader struct {
	ctx context.Context
	s   store.Store
}

func (r hashReader) ReadHashes(ix []int64) ([]tlog.Hash, error) {
	return r.s.ReadAuditHashes(r.ctx, ix)
}

// testAuditLog: every append extends the tree by its records' leaves, in
// seq order, and the stored hashes give the tree hash and proofs tlog
// computes from the records themselves.
func testAuditLog(t *testing.T, s store.Store) {
	c := ctx(t)
	n, err := s.AuditLogSize(c)
	must(t, err)
	if n != 0 {
		t.Fatalf("new store: log size %d", n)
	}
	// Batches of odd sizes, one larger than an INSERT statement's rows,
	// and one that rolls back (it must leave no leaf behind).
	for i, size := range []int{1, 2, 3, 130, 1, 7} {
		batch := make([]store.AuditEvent, size)
		for j := range batch {
			batch[j] = event("flow.allow", i*1000+j)
			batch[j].Details = map[string]string{"j": fmt.Sprint(j)}
		}
		must(t, s.AppendAudit(c, batch...))
		rollback := errors.New("roll back")
		err := s.Update(c, func(c context.Context, tx store.Store) error {
			must(t, tx.AppendAudit(c, event("flow.deny", 99)))
			return rollback
		})
		wantErr(t, "rolled back append", err, rollback)
	}
	// Invalid UTF-8 is stored as the log covers it.
	must(t, s.AppendAudit(c, store.AuditEvent{Type: "x", Actor: "a\xffb", Details: map[string]string{"k\xfe": "v"}}))
	n, err = s.AuditLogSize(c)
	must(t, err)
	if n != 145 {
		t.Fatalf("log size %d, want 145", n)
	}

	tree := &auditlog.Tree{}
	var stored []tlog.Hash
	var last store.AuditEvent
	must(t, s.ScanAuditLog(c, 1, n, func(e store.AuditEvent, leaf tlog.Hash, logged bool) error {
		if e.Seq != tree.Size()+1 {
			return fmt.Errorf("record seq %d at position %d", e.Seq, tree.Size())
		}
		h := e.Record().LeafHash()
		if !logged || leaf != h {
			return fmt.Errorf("record seq %d: stored leaf %v (logged %v), its hash %v", e.Seq, leaf, logged, h)
		}
		stored = tree.Append(h, stored[:0])
		got, err := s.ReadAuditHashes(c, []int64{tlog.StoredHashIndex(0, e.Seq-1)})
		if err != nil || got[0] != h {
			return fmt.Errorf("record seq %d: ReadAuditHashes %v, %v", e.Seq, got, err)
		}
		last = e
		return nil
	}))
	if tree.Size() != n {
		t.Fatalf("scanned %d records, log has %d", tree.Size(), n)
	}
	if last.Actor != "a\ufffdb" || last.Details["k\ufffd"] != "v" {
		t.Errorf("invalid UTF-8 stored as %+v", last)
	}
	r := hashReader{c, s}
	root, err := tlog.TreeHash(n, r)
	must(t, err)
	if root != tree.Root() {
		t.Fatalf("stored tree hash %v, records hash to %v", root, tree.Root())
	}
	// Proofs from the stored hashes check against the records' roots.
	for _, m := range []int64{1, 6, 64, 100, 144} {
		p, err := tlog.ProveTree(n, m, r)
		must(t, err)
		old, err := tlog.TreeHash(m, r)
		must(t, err)
		if err := tlog.CheckTree(p, n, root, m, old); err != nil {
			t.Errorf("consistency proof %d → %d: %v", m, n, err)
		}
	}
	// Part of a scan; fn's error stops it.
	var seqs []int64
	stop := errors.New("stop")
	err = s.ScanAuditLog(c, 10, 20, func(e store.AuditEvent, _ tlog.Hash, _ bool) error {
		seqs = append(seqs, e.Seq)
		if len(seqs) == 3 {
			return stop
		}
		return nil
	})
	wantErr(t, "scan stopped", err, stop)
	if fmt.Sprint(seqs) != "[10 11 12]" {
		t.Errorf("scan 10..20 gave %v", seqs)
	}
	if _, err := s.ReadAuditHashes(c, []int64{tlog.StoredHashIndex(0, n)}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("hash of a leaf not yet appended: %v", err)
	}
}

func testCheckpoints(t *testing.T, s store.Store) {
	c := ctx(t)
	_, err := s.LatestCheckpoint(c)
	wantErr(t, "no checkpoint", err, store.ErrNotFound)
	for _, n := range []int64{5, 20, 9} {
		must(t, s.PutCheckpoint(c, store.Checkpoint{Size: n, Time: at(0), Note: []byte(fmt.Sprint("note ", n))}))
	}
	wantErr(t, "same size twice", s.PutCheckpoint(c, store.Checkpoint{Size: 20, Note: []byte("x")}), store.ErrAlreadyExists)
	got, err := s.LatestCheckpoint(c)
	must(t, err)
	equal(t, "latest", got, store.Checkpoint{Size: 20, Time: at(0), Note: []byte("note 20")})
	var sizes []int64
	must(t, s.ScanCheckpoints(c, func(cp store.Checkpoint) error { sizes = append(sizes, cp.Size); return nil }))
	if fmt.Sprint(sizes) != "[5 9 20]" {
		t.Errorf("checkpoints %v, want smallest first", sizes)
	}
}
