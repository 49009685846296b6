package sqlite

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"golang.org/x/mod/sumdb/tlog"
)

// TestMigrateAuditLog: schema 11 logs the records an older controller
// stored, and the log goes on from them.
func TestMigrateAuditLog(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "cordon.db")
	db := openAtSchema(t, path, 10)
	for i := range 5 {
		if _, err := db.ExecContext(ctx, `INSERT INTO audit_events (time, type, actor, outcome, subject, details, request_id)
			VALUES (?, 'admin.user.create', 'admin', 'success', ?, '{"k":"v"}', '')`, 1_000_000*i, "u"+string(rune('a'+i))); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.AppendAudit(ctx, store.AuditEvent{Type: "x"}); err != nil {
		t.Fatal(err)
	}
	tree := &auditlog.Tree{}
	err = s.ScanAuditLog(ctx, 1, 100, func(e store.AuditEvent, leaf tlog.Hash, logged bool) error {
		if h := e.Record().LeafHash(); !logged || h != leaf {
			t.Errorf("record %d: logged %v, leaf %v, its hash %v", e.Seq, logged, leaf, h)
		}
		tree.Append(e.Record().LeafHash(), nil)
		return nil
	})
	if err != nil || tree.Size() != 6 {
		t.Fatalf("scan: %v, %d records", err, tree.Size())
	}
	root, err := tlog.TreeHash(6, tlog.HashReaderFunc(func(ix []int64) ([]tlog.Hash, error) { return s.ReadAuditHashes(ctx, ix) }))
	if err != nil || root != tree.Root() {
		t.Fatalf("stored root %v (%v), records' %v", root, err, tree.Root())
	}
}

// TestMigrateAuditLogGap: records deleted by hand before the upgrade stop
// it, with what to do, instead of a log that hides the deletion.
func TestMigrateAuditLogGap(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "cordon.db")
	db := openAtSchema(t, path, 10)
	for _, seq := range []int{1, 2, 4} {
		if _, err := db.ExecContext(ctx, `INSERT INTO audit_events (seq, time, type, actor, outcome, subject) VALUES (?, 0, 'x', '', '', '')`, seq); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	s, err := Open(ctx, path)
	if err == nil {
		s.Close()
		t.Fatal("opened a trail with a gap")
	}
	if !strings.Contains(err.Error(), "seq 3 is missing") || !strings.Contains(err.Error(), "restore cordon.db") {
		t.Errorf("error: %v", err)
	}
}

// FuzzDecodeDetails: the hand parser of details columns agrees with
// encoding/json on every input.
func FuzzDecodeDetails(f *testing.F) {
	for _, m := range []map[string]string{nil, {}, {"a": "b"}, {"src": "100.64.0.7:4000", "q": "\"<&>\u2028\\\n\x01é\ufffd"}} {
		b, _ := json.Marshal(m)
		f.Add(string(b))
	}
	f.Add(`{"a":"\ud83d\ude00"}`)
	f.Add(`{"a":"b","a":"c"}`)
	f.Add(`{"a" :"b"}`)
	f.Fuzz(func(t *testing.T, s string) {
		got, gerr := decodeDetails(s)
		var want map[string]string
		werr := json.Unmarshal([]byte(s), &want)
		if (gerr == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: decodeDetails %v, %v; encoding/json %v, %v", s, got, gerr, want, werr)
		}
	})
}
