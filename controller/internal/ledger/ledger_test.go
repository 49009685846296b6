package ledger_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"golang.org/x/mod/sumdb/tlog"
)

var t0 = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

// controller is a controller's data dir with its store, state owner and
// ledger, reopened as often as a test needs.
type controller struct {
	dir   string
	st    *sqlite.Store
	state *state.State
	l     *ledger.Ledger
	clock time.Time

	mu        sync.Mutex
	published []ledger.Signed
}

func newController(t *testing.T) *controller {
	t.Helper()
	c := &controller{dir: t.TempDir(), clock: t0}
	c.open(t)
	return c
}

func (c *controller) open(t *testing.T) {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(c.dir, "cordon.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, err := ledger.LoadKey(c.dir)
	if err != nil {
		t.Fatal(err)
	}
	now := func() time.Time { c.clock = c.clock.Add(time.Second); return c.clock }
	c.st = st
	c.state = state.New(state.Config{Store: st, Now: now})
	c.l = ledger.New(ledger.Config{Store: st, State: c.state, Key: key, Now: now, Publish: func(s ledger.Signed) {
		c.mu.Lock()
		c.published = append(c.published, s)
		c.mu.Unlock()
	}})
}

func (c *controller) close(t *testing.T) {
	t.Helper()
	if err := c.st.Close(); err != nil {
		t.Fatal(err)
	}
}

// add appends n records, as flows and failed sign-ins are.
func (c *controller) add(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		err := c.state.Record(t.Context(), state.Origin{Actor: "gateway:gw1"}, store.AuditEvent{Type: audit.FlowAllow, Outcome: "allow",
			Subject: fmt.Sprintf("ehr-%d", i), Details: map[string]string{"proto": "tcp", "src": "100.64.0.7:40000", "dst": "10.20.0.10:443", "gateway": "gw1"}})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func (c *controller) sign(t *testing.T) *ledger.Signed {
	t.Helper()
	s, err := c.l.Sign(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sql runs statements on the database file behind the controller's back.
func (c *controller) sql(t *testing.T, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(c.dir, "cordon.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.ExecContext(t.Context(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func (c *controller) verify(t *testing.T) *ledger.Report {
	t.Helper()
	rep, err := c.l.Verify(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestSignOnlyWhenGrown(t *testing.T) {
	c := newController(t)
	if s := c.sign(t); s != nil {
		t.Fatalf("signed an empty log: %+v", s)
	}
	c.add(t, 5)
	s := c.sign(t)
	if s == nil || s.Size != 5 {
		t.Fatalf("checkpoint %+v, want size 5", s)
	}
	if again := c.sign(t); again != nil {
		t.Fatalf("signed again with nothing new: %+v", again)
	}
	c.add(t, 3)
	s2 := c.sign(t)
	if s2 == nil || s2.Size != 8 || !s2.Time.After(s.Time) {
		t.Fatalf("second checkpoint %+v", s2)
	}
	if len(c.published) != 2 || c.published[1].Size != 8 {
		t.Errorf("published %d checkpoints", len(c.published))
	}
	// What was stored opens with the public key, and a proof links them.
	latest, err := c.st.LatestCheckpoint(t.Context())
	if err != nil || !bytes.Equal(latest.Note, s2.Note) {
		t.Fatalf("stored %+v, %v", latest, err)
	}
	cp, err := auditlog.OpenCheckpoint(latest.Note, c.l.Key().VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.l.Prove(t.Context(), 8, 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := auditlog.Consistent(s.Checkpoint, cp, p); err != nil {
		t.Fatal(err)
	}
	// The key is kept 0600 and is the same after a restart.
	fi, err := os.Stat(filepath.Join(c.dir, ledger.KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	c.close(t)
	c.open(t)
	c.add(t, 1)
	if s3 := c.sign(t); s3 == nil || s3.Size != 9 {
		t.Fatalf("after restart: %+v", s3)
	}
	if rep := c.verify(t); !rep.OK() || rep.Records != 9 || rep.Checkpoints != 3 || rep.Latest.Size != 9 {
		t.Fatalf("verify: %+v", rep)
	}
}

// TestRunSignsAndStops: Run signs what is there when it starts, and once
// more when stopped, then returns.
func TestRunSignsAndStops(t *testing.T) {
	c := newController(t)
	c.add(t, 2)
	key, _ := ledger.LoadKey(c.dir)
	signed := make(chan ledger.Signed, 10)
	l := ledger.New(ledger.Config{Store: c.st, State: c.state, Key: key, Interval: time.Hour, Publish: func(s ledger.Signed) { signed <- s }})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	if s := <-signed; s.Size != 2 {
		t.Fatalf("first checkpoint of size %d", s.Size)
	}
	c.add(t, 3)
	cancel()
	<-done
	if s := <-signed; s.Size != 5 {
		t.Fatalf("final checkpoint of size %d", s.Size)
	}
}

// TestTamper: every way of changing the stored trail is found by Verify,
// which names the first bad record; a forgery that is consistent in itself
// is found by a checkpoint held elsewhere (a gateway's).
func TestTamper(t *testing.T) {
	// A log of 40 records with checkpoints at 20 and 40.
	setup := func(t *testing.T) (*controller, *ledger.Signed) {
		c := newController(t)
		c.add(t, 20)
		c.sign(t)
		c.add(t, 20)
		held := c.sign(t) // what a gateway holds
		if rep := c.verify(t); !rep.OK() {
			t.Fatalf("untouched log: %v", rep.Problems)
		}
		c.close(t)
		return c, held
	}
	for _, tc := range []struct {
		name    string
		stmts   []string
		seq     int64
		because string
	}{
		{"edit", []string{`UPDATE audit_events SET actor = 'admin:eve' WHERE seq = 17`}, 17, "does not match the hash logged"},
		{"edit details", []string{`UPDATE audit_events SET details = '{"proto":"udp"}' WHERE seq = 3`}, 3, "does not match the hash logged"},
		{"delete", []string{`DELETE FROM audit_events WHERE seq = 17`}, 17, "missing: the next record stored is seq 18"},
		{"reorder", []string{`UPDATE audit_events SET seq = -17 WHERE seq = 17`, `UPDATE audit_events SET seq = 17 WHERE seq = 18`, `UPDATE audit_events SET seq = 18 WHERE seq = -17`}, 17, "does not match the hash logged"},
		{"truncate", []string{`DELETE FROM audit_events WHERE seq > 30`}, 31, "the tail was truncated"},
		{"insert", []string{`INSERT INTO audit_events (seq, time, type, actor, outcome, subject) VALUES (41, 0, 'flow.allow', 'gateway:gw1', 'allow', 'ehr')`}, 41, "added outside the controller"},
		{"forged checkpoint", []string{`UPDATE audit_checkpoints SET note = CAST(replace(CAST(note AS TEXT), char(10) || '40' || char(10), char(10) || '41' || char(10)) AS BLOB) WHERE size = 40`}, 0, "not a checkpoint signed by this controller's key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := setup(t)
			c.sql(t, tc.stmts...)
			c.open(t)
			rep := c.verify(t)
			if rep.OK() {
				t.Fatalf("tampered log verified: %+v", rep)
			}
			if tc.seq != 0 && (rep.FirstBad == nil || rep.FirstBad.Seq != tc.seq) {
				t.Errorf("first bad record %+v, want seq %d", rep.FirstBad, tc.seq)
			}
			if !strings.Contains(strings.Join(rep.Problems, "\n"), tc.because) {
				t.Errorf("problems %q, want %q", rep.Problems, tc.because)
			}
		})
	}

	// An edit that also rewrites the record's logged leaf hash passes the
	// leaf check; the signed checkpoint it falls under names the range.
	t.Run("edit with its leaf hash", func(t *testing.T) {
		c, _ := setup(t)
		c.open(t)
		var ev store.AuditEvent
		var blob []byte
		c.st.ScanAuditLog(t.Context(), 25, 25, func(e store.AuditEvent, leaf tlog.Hash, _ bool) error { ev = e; return nil })
		ev.Subject = "billing"
		h := ev.Record().LeafHash()
		c.close(t)
		db, err := sql.Open("sqlite", filepath.Join(c.dir, "cordon.db"))
		if err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRow(`SELECT log_hashes FROM audit_events WHERE seq = 25`).Scan(&blob); err != nil {
			t.Fatal(err)
		}
		copy(blob, h[:])
		if _, err := db.Exec(`UPDATE audit_events SET subject = 'billing', log_hashes = ? WHERE seq = 25`, blob); err != nil {
			t.Fatal(err)
		}
		db.Close()
		c.open(t)
		rep := c.verify(t)
		if rep.OK() || rep.FirstBad == nil || rep.FirstBad.Seq != 21 || !strings.Contains(rep.FirstBad.Reason, "a record from seq 21 to 40 was changed") {
			t.Fatalf("report %+v", rep)
		}
	})

	// Truncating records and checkpoints alike leaves a log consistent
	// in itself: the checkpoint a gateway holds shows the truncation.
	t.Run("truncate everything", func(t *testing.T) {
		c, held := setup(t)
		c.sql(t, `DELETE FROM audit_events WHERE seq > 30`, `DELETE FROM audit_checkpoints WHERE size > 20`)
		c.open(t)
		c.sign(t) // the controller signs the truncated log: it extends what is left
		rep := c.verify(t)
		if !rep.OK() || rep.Latest.Size != 30 {
			t.Fatalf("self-consistent truncated log: %+v", rep)
		}
		err := auditlog.Consistent(held.Checkpoint, rep.Latest.Checkpoint, nil)
		if !errors.Is(err, auditlog.ErrInconsistent) || !strings.Contains(err.Error(), "truncated") {
			t.Fatalf("held checkpoint against the truncated log: %v", err)
		}
	})

	// The whole database replaced by a forgery signed with the real key
	// (the attacker had the key file too): the forged log verifies in
	// itself, and a gateway's checkpoint refuses it.
	t.Run("forgery", func(t *testing.T) {
		c, held := setup(t)
		os.Remove(filepath.Join(c.dir, "cordon.db"))
		os.Remove(filepath.Join(c.dir, "cordon.db-wal"))
		os.Remove(filepath.Join(c.dir, "cordon.db-shm"))
		c.open(t)
		c.add(t, 45)
		forged := c.sign(t)
		if rep := c.verify(t); !rep.OK() {
			t.Fatalf("forgery does not verify in itself: %v", rep.Problems)
		}
		p, err := c.l.Prove(t.Context(), forged.Size, held.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := auditlog.Consistent(held.Checkpoint, forged.Checkpoint, p); !errors.Is(err, auditlog.ErrInconsistent) {
			t.Fatalf("held checkpoint against the forgery: %v", err)
		}
	})

	// A forgery signed with another key fails on every checkpoint.
	t.Run("forgery with another key", func(t *testing.T) {
		c, _ := setup(t)
		os.Remove(filepath.Join(c.dir, ledger.KeyFile))
		c.open(t)
		rep := c.verify(t)
		if rep.OK() || !strings.Contains(strings.Join(rep.Problems, "\n"), "not a checkpoint signed by this controller's key") {
			t.Fatalf("log with checkpoints of another key: %+v", rep)
		}
	})
}

// TestRefuseToSignFork: a log that no longer extends its latest checkpoint
// gets no new checkpoint, and one alert.
func TestRefuseToSignFork(t *testing.T) {
	c := newController(t)
	c.add(t, 20)
	c.sign(t)
	c.close(t)
	c.sql(t, `DELETE FROM audit_events WHERE seq > 10`)
	c.open(t)
	if _, err := c.l.Sign(t.Context()); !errors.Is(err, ledger.ErrInconsistent) {
		t.Fatalf("sign a truncated log: %v", err)
	}
	c.add(t, 15) // grown past the checkpoint again: a fork
	for range 3 {
		if _, err := c.l.Sign(t.Context()); !errors.Is(err, ledger.ErrInconsistent) {
			t.Fatalf("sign a forked log: %v", err)
		}
	}
	evs, err := c.st.ListAudit(t.Context(), store.AuditFilter{Type: string(audit.AuditLogInconsistent)})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Actor != "controller" || evs[0].Outcome != "alert" || evs[0].Validate() != nil {
		t.Fatalf("alerts: %+v (want one for the truncation, one for the fork)", evs)
	}
	if latest, _ := c.st.LatestCheckpoint(t.Context()); latest.Size != 20 {
		t.Errorf("a checkpoint of size %d was stored", latest.Size)
	}
}

func TestExport(t *testing.T) {
	c := newController(t)
	c.add(t, 50)
	for _, r := range [][2]int64{{1, 0}, {1, 50}, {7, 33}, {50, 50}} {
		var b bytes.Buffer
		if err := c.l.Export(t.Context(), &b, r[0], r[1]); err != nil {
			t.Fatalf("export %v: %v", r, err)
		}
		res, err := auditlog.VerifyBundle(&b, auditlog.VerifyOptions{Key: c.l.Key().VerifierKey()})
		if err != nil {
			t.Fatalf("bundle %v: %v", r, err)
		}
		if to := max(r[1], 50*(1-min(r[1], 1))); res.FromSeq != r[0] || res.ToSeq != to || res.Checkpoint.Size != 50 {
			t.Errorf("bundle %v: %+v", r, res)
		}
	}
	if err := c.l.Export(t.Context(), new(bytes.Buffer), 10, 51); !errors.Is(err, ledger.ErrRange) {
		t.Errorf("export past the log: %v", err)
	}
	// An edited record exports a bundle that does not verify.
	c.close(t)
	c.sql(t, `UPDATE audit_events SET outcome = 'deny' WHERE seq = 9`)
	c.open(t)
	var b bytes.Buffer
	if err := c.l.Export(t.Context(), &b, 1, 20); err != nil {
		t.Fatal(err)
	}
	if _, err := auditlog.VerifyBundle(&b, auditlog.VerifyOptions{}); !errors.Is(err, auditlog.ErrNotSigned) {
		t.Errorf("bundle of an edited log: %v", err)
	}
}

var _ tlog.HashReader = tlog.HashReaderFunc(nil)
