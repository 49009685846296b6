package witness

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/auditlog"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"golang.org/x/mod/sumdb/tlog"
)

// log is a controller's audit log in memory.
type log struct {
	key    *auditlog.Key
	tree   *auditlog.Tree
	stored [][]tlog.Hash
}

func newLog(t *testing.T, seed byte, records int, tag string) *log {
	k, err := auditlog.NewKey(bytes.Repeat([]byte{seed}, auditlog.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	l := &log{key: k, tree: &auditlog.Tree{}}
	l.add(records, tag)
	return l
}

func (l *log) add(n int, tag string) {
	for range n {
		seq := l.tree.Size() + 1
		r := auditlog.Record{Seq: seq, Time: time.Unix(seq, 0), Type: "flow.allow", Subject: tag}
		l.stored = append(l.stored, l.tree.Append(r.LeafHash(), nil))
	}
}

func (l *log) ReadHashes(ix []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(ix))
	for i, x := range ix {
		leaf, off, _ := auditlog.StoredAt(x)
		out[i] = l.stored[leaf][off]
	}
	return out, nil
}

// checkpoint is what the controller sends a gateway holding size since.
func (l *log) checkpoint(t *testing.T, since int64) *controlproto.AuditCheckpoint {
	t.Helper()
	_, note, err := l.key.Sign(l.tree.Size(), l.tree.Root(), time.Unix(1e9, 0))
	if err != nil {
		t.Fatal(err)
	}
	ac := &controlproto.AuditCheckpoint{Key: l.key.VerifierKey(), Checkpoint: string(note)}
	if since > 0 && since < l.tree.Size() {
		if ac.Proof, err = tlog.ProveTree(l.tree.Size(), since, l); err != nil {
			t.Fatal(err)
		}
		ac.Since = since
	}
	return ac
}

func TestWitness(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(dir)
	if err != nil || w.Size() != 0 {
		t.Fatalf("open empty: %v, size %d", err, w.Size())
	}
	l := newLog(t, 1, 10, "real")
	if _, err := w.Offer(l.checkpoint(t, 0)); err != nil {
		t.Fatalf("first checkpoint: %v", err)
	}
	l.add(7, "real")
	if c, err := w.Offer(l.checkpoint(t, 10)); err != nil || c.Size != 17 || w.Size() != 17 {
		t.Fatalf("grown log: %v, %+v", err, c)
	}
	if _, err := w.Offer(l.checkpoint(t, 17)); err != nil {
		t.Fatalf("the same checkpoint again: %v", err)
	}

	// Every way a controller's log can go wrong is refused, and the held
	// checkpoint stays.
	forked := newLog(t, 1, 12, "real")
	forked.add(10, "forged")
	rolledBack := newLog(t, 1, 12, "real")
	otherKey := newLog(t, 2, 30, "real")
	badSig := l.checkpoint(t, 17)
	badSig.Checkpoint = strings.Replace(badSig.Checkpoint, "\n17\n", "\n18\n", 1)
	l.add(1, "real")
	wrongSince := l.checkpoint(t, 5)
	for name, c := range map[string]struct {
		ac           *controlproto.AuditCheckpoint
		inconsistent bool
	}{
		"forked":      {forked.checkpoint(t, 17), true},
		"rolled back": {rolledBack.checkpoint(t, 17), true},
		"other key":   {otherKey.checkpoint(t, 17), false},
		"bad sig":     {badSig, false},
		"wrong since": {wrongSince, false},
	} {
		_, err := w.Offer(c.ac)
		if !errors.Is(err, ErrRefused) || errors.Is(err, auditlog.ErrInconsistent) != c.inconsistent {
			t.Errorf("%s: %v (inconsistent %v)", name, err, c.inconsistent)
		}
		if w.Size() != 17 {
			t.Fatalf("%s: held size now %d", name, w.Size())
		}
	}

	// What is held survives a restart, and is checked when loaded.
	w2, err := Open(dir)
	if err != nil || w2.Size() != 17 || !bytes.Equal(w2.Held(), w.Held()) {
		t.Fatalf("reopen: %v, size %d", err, w2.Size())
	}
	for _, f := range []string{KeyFile, CheckpointFile} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", f, fi, err)
		}
	}
	os.WriteFile(filepath.Join(dir, CheckpointFile), []byte(badSig.Checkpoint), 0o600)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("open an edited checkpoint: %v", err)
	}
}

// After a restore from a backup the operator acknowledges the roll back:
// the held checkpoint and key are set aside (kept), and the restored log is
// pinned on the next start instead of refused.
func TestAcknowledge(t *testing.T) {
	dir := t.TempDir()
	if held, moved, err := Acknowledge(dir, time.Unix(0, 0)); err != nil || held != nil || len(moved) != 0 {
		t.Fatalf("acknowledge with nothing held: %v, %v, %v", held, moved, err)
	}
	w, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	l := newLog(t, 1, 20, "real")
	if _, err := w.Offer(l.checkpoint(t, 0)); err != nil {
		t.Fatal(err)
	}
	restored := newLog(t, 1, 12, "real")
	restored.add(3, "after the restore")
	if _, err := w.Offer(restored.checkpoint(t, 20)); !errors.Is(err, ErrRefused) {
		t.Fatalf("the restored log before the acknowledgement: %v, want refused", err)
	}
	held, moved, err := Acknowledge(dir, time.Date(2026, 12, 4, 16, 0, 0, 0, time.UTC))
	if err != nil || held == nil || held.Size != 20 || len(moved) != 2 {
		t.Fatalf("acknowledge: %+v, %v, %v", held, moved, err)
	}
	for _, m := range moved {
		if !strings.HasSuffix(m, AcknowledgedSuffix+"20261204T160000Z") {
			t.Errorf("set aside as %s", m)
		}
		if _, err := os.Stat(m); err != nil {
			t.Errorf("evidence gone: %v", err)
		}
	}
	w, err = Open(dir)
	if err != nil || w.Size() != 0 {
		t.Fatalf("reopen after the acknowledgement: %v, size %d", err, w.Size())
	}
	if c, err := w.Offer(restored.checkpoint(t, 0)); err != nil || c.Size != 15 {
		t.Fatalf("the restored log after the acknowledgement: %+v, %v", c, err)
	}
	// An edited held checkpoint is not acknowledged away.
	os.WriteFile(filepath.Join(dir, CheckpointFile), []byte("junk"), 0o600)
	if _, _, err := Acknowledge(dir, time.Unix(0, 0)); err == nil {
		t.Error("acknowledge over a checkpoint that does not verify: no error")
	}
}
