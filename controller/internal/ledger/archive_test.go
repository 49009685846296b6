package ledger_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/auditlog"
)

// bundle exports records from..to (0, 0: what Export picks) and returns
// the bundle and its SHA-256, as cordonctl audit archive does first.
func (c *controller) bundle(t *testing.T, from, to int64) ([]byte, string) {
	t.Helper()
	var b bytes.Buffer
	if err := c.l.Export(t.Context(), &b, from, to); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b.Bytes())
	return b.Bytes(), hex.EncodeToString(sum[:])
}

func (c *controller) request(t *testing.T, admin string, to int64) state.ArchiveResult {
	t.Helper()
	_, sum := c.bundle(t, 0, to)
	res, err := c.state.RequestArchive(t.Context(), state.Origin{Actor: "admin:" + admin}, admin,
		state.ArchiveAsk{ToSeq: to, Reason: "storage: moved to the records archive", BundleSHA256: sum})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// lastEvent is the newest record of type typ.
func (c *controller) lastEvent(t *testing.T, typ audit.Type) store.AuditEvent {
	t.Helper()
	evs, err := c.st.ListAudit(t.Context(), store.AuditFilter{Type: string(typ), Limit: 1})
	if err != nil || len(evs) == 0 {
		t.Fatalf("no %s record: %v", typ, err)
	}
	return evs[0]
}

// TestArchiveTwoAdmins: before the retention end an archive takes a
// request and another admin's approval; the same admin, an expired or a
// used request is refused, each refusal recorded; what remains verifies,
// and the archived range's bundle verifies offline and reaches the root
// the archive recorded.
func TestArchiveTwoAdmins(t *testing.T) {
	ctx := t.Context()
	c := newController(t)
	c.add(t, 30)
	c.sign(t)
	bundle, sum := c.bundle(t, 1, 20)
	res, err := c.state.RequestArchive(ctx, state.Origin{Actor: "admin:alice"}, "alice",
		state.ArchiveAsk{ToSeq: 20, Reason: "storage", BundleSHA256: sum})
	if err != nil || res.Request == nil || res.Archive != nil {
		t.Fatalf("request: %+v %v", res, err)
	}
	id := res.Request.ID
	if ev := c.lastEvent(t, audit.AuditArchiveRequest); ev.Subject != id || ev.Outcome != "success" || ev.Details["to_seq"] != "20" || ev.Details["bundle_sha256"] != sum {
		t.Errorf("request record: %+v", ev)
	}

	// Refused: the requester, an unknown request, bad asks.
	for _, tc := range []struct {
		admin, id, because string
	}{
		{"alice", id, "another admin must approve it"},
		{"bob", "ar-nope", "no archive request"},
	} {
		_, err := c.state.ApproveArchive(ctx, state.Origin{Actor: "admin:" + tc.admin}, tc.admin, tc.id)
		if !errors.Is(err, state.ErrArchiveRefused) || !strings.Contains(err.Error(), tc.because) {
			t.Errorf("approve %s as %s: %v, want %q", tc.id, tc.admin, err, tc.because)
		}
		if ev := c.lastEvent(t, audit.AuditArchiveApprove); ev.Outcome != "failure" || !strings.Contains(ev.Details["reason"], tc.because) {
			t.Errorf("refusal record: %+v", ev)
		}
	}
	for _, ask := range []state.ArchiveAsk{
		{ToSeq: 20, BundleSHA256: sum},                // no reason
		{ToSeq: 20, Reason: "r", BundleSHA256: "abc"}, // not a SHA-256
		{ToSeq: 1000, Reason: "r", BundleSHA256: sum}, // past the log
		{ToSeq: 0, Reason: "r", BundleSHA256: sum},    // before it
	} {
		if _, err := c.state.RequestArchive(ctx, state.Origin{Actor: "admin:alice"}, "alice", ask); !errors.Is(err, state.ErrArchiveRefused) {
			t.Errorf("request %+v: %v, want refused", ask, err)
		}
	}
	if rep := c.verify(t); !rep.OK() || len(rep.Archived) != 0 {
		t.Fatalf("before approval: %+v", rep)
	}

	a, err := c.state.ApproveArchive(ctx, state.Origin{Actor: "admin:bob"}, "bob", id)
	if err != nil {
		t.Fatal(err)
	}
	if a.FromSeq != 1 || a.ToSeq != 20 || a.ApprovedBy != "bob" || a.RequestedBy != "alice" {
		t.Errorf("archive: %+v", a)
	}
	ev := c.lastEvent(t, audit.AuditArchiveApprove)
	if ev.Outcome != "success" || ev.Details["root"] != a.Root || ev.Details["requested_by"] != "alice" || ev.Actor != "admin:bob" {
		t.Errorf("approval record: %+v", ev)
	}
	// Single use.
	if _, err := c.state.ApproveArchive(ctx, state.Origin{Actor: "admin:carol"}, "carol", id); !errors.Is(err, state.ErrArchiveRefused) || !strings.Contains(err.Error(), "approved already") {
		t.Errorf("second approval: %v", err)
	}

	c.sign(t)
	rep := c.verify(t)
	if !rep.OK() || len(rep.Archived) != 1 || rep.Archived[0].Root != a.Root {
		t.Fatalf("after archive: %+v", rep)
	}
	// The bundle written first verifies with no controller, and reaches
	// the root the archive recorded.
	br, err := auditlog.VerifyBundle(bytes.NewReader(bundle), auditlog.VerifyOptions{Key: c.l.Key().VerifierKey()})
	if err != nil || br.Root.String() != a.Root || a.BundleSHA256 != sum {
		t.Fatalf("archived bundle: %+v %v (archive root %s)", br, err, a.Root)
	}
	// What is archived cannot be exported again; the rest can.
	if err := c.l.Export(ctx, new(bytes.Buffer), 5, 25); !errors.Is(err, ledger.ErrRange) {
		t.Errorf("export of archived records: %v", err)
	}
	rest, _ := c.bundle(t, 0, 0)
	if br, err := auditlog.VerifyBundle(bytes.NewReader(rest), auditlog.VerifyOptions{}); err != nil || br.FromSeq != 21 {
		t.Errorf("bundle of the rest: %+v %v", br, err)
	}
	// The records are gone from searches.
	p, err := c.st.SearchAudit(ctx, store.AuditQuery{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range p.Events {
		if e.Seq <= 20 {
			t.Errorf("search returned archived record %d", e.Seq)
		}
	}

	// A request expires.
	c.add(t, 5)
	res = c.request(t, "alice", 30)
	c.clock = c.clock.Add(state.DefaultArchiveRequestTTL)
	if _, err := c.state.ApproveArchive(ctx, state.Origin{Actor: "admin:bob"}, "bob", res.Request.ID); !errors.Is(err, state.ErrArchiveRefused) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("approval of an expired request: %v", err)
	}
	if rep := c.verify(t); !rep.OK() || len(rep.Archived) != 1 {
		t.Fatalf("after refusals: %+v", rep)
	}
	// Every record of the steps and refusals fits its type's schema.
	evs, err := c.st.ListAudit(ctx, store.AuditFilter{Type: "audit.archive.", Limit: 1000})
	if err != nil || len(evs) < 8 {
		t.Fatalf("archive records: %d, %v", len(evs), err)
	}
	for _, e := range evs {
		if err := e.Validate(); err != nil {
			t.Errorf("record %d (%s %s): %v", e.Seq, e.Type, e.Outcome, err)
		}
	}
}

// TestArchivePastRetention: records past their retention end are
// archived by one admin, at once.
func TestArchivePastRetention(t *testing.T) {
	c := newController(t)
	c.add(t, 10)
	c.clock = c.clock.AddDate(state.DefaultRetentionYears, 0, 0).Add(-time.Hour) // an hour before the newest record's end
	c.sign(t)
	res := c.request(t, "alice", 10)
	if res.Request == nil {
		t.Fatalf("records younger than the retention were archived by one admin: %+v", res)
	}
	c.clock = c.clock.Add(2 * time.Hour)
	res = c.request(t, "alice", 10)
	if res.Archive == nil || res.Archive.ApprovedBy != "" || res.Archive.ToSeq != 10 {
		t.Fatalf("past retention: %+v", res)
	}
	if ev := c.lastEvent(t, audit.AuditArchivePastRetention); ev.Outcome != "success" || ev.Details["root"] != res.Archive.Root || ev.Details["retention_end"] == "" {
		t.Errorf("archive record: %+v", ev)
	}
	c.sign(t)
	if rep := c.verify(t); !rep.OK() || len(rep.Archived) != 1 {
		t.Fatalf("after archive: %+v", rep)
	}
	// The request made before is stale now.
	var old string
	reqs, _ := c.st.ListArchiveRequests(t.Context())
	for _, r := range reqs {
		old = r.ID
	}
	if _, err := c.state.ApproveArchive(t.Context(), state.Origin{Actor: "admin:bob"}, "bob", old); !errors.Is(err, state.ErrArchiveRefused) || !strings.Contains(err.Error(), "archived since") {
		t.Errorf("approval of a stale request: %v", err)
	}
}

// TestTamperAfterArchive: with the oldest records archived, every tamper
// TestTamper finds is still found, and so are tampers with the archive.
func TestTamperAfterArchive(t *testing.T) {
	setup := func(t *testing.T) *controller {
		c := newController(t)
		c.add(t, 20)
		c.sign(t)
		c.add(t, 20)
		c.sign(t)
		id := c.request(t, "alice", 10).Request.ID                                                                  // record 41
		if _, err := c.state.ApproveArchive(t.Context(), state.Origin{Actor: "admin:bob"}, "bob", id); err != nil { // 42
			t.Fatal(err)
		}
		c.add(t, 3) // 43..45
		c.sign(t)
		if rep := c.verify(t); !rep.OK() {
			t.Fatalf("untouched log: %v", rep.Problems)
		}
		c.close(t)
		return c
	}
	for _, tc := range []struct {
		name    string
		stmts   []string
		seq     int64
		because string
	}{
		{"edit", []string{`UPDATE audit_events SET actor = 'admin:eve' WHERE seq = 17`}, 17, "does not match the hash logged"},
		{"delete", []string{`DELETE FROM audit_events WHERE seq = 17`}, 17, "missing: the next record stored is seq 18"},
		{"reorder", []string{`UPDATE audit_events SET seq = -17 WHERE seq = 17`, `UPDATE audit_events SET seq = 17 WHERE seq = 18`, `UPDATE audit_events SET seq = 18 WHERE seq = -17`}, 17, "does not match the hash logged"},
		{"truncate", []string{`DELETE FROM audit_events WHERE seq > 30`}, 31, "the tail was truncated"},
		{"insert", []string{`INSERT INTO audit_events (seq, time, type, actor, outcome, subject) VALUES (46, 0, 'flow.allow', 'gateway:gw1', 'allow', 'ehr')`}, 46, "added outside the controller"},
		{"delete archived", []string{`DELETE FROM audit_events WHERE seq = 5`}, 5, "missing"},
		{"edit archived leaf", []string{`UPDATE audit_events SET log_hashes = CAST(zeroblob(32) || substr(log_hashes, 33) AS BLOB) WHERE seq = 5`}, 1, "do not hash to the root recorded"},
		{"drop archived hashes", []string{`UPDATE audit_events SET log_hashes = NULL WHERE seq = 5`}, 1, "logged hash is gone"},
		{"unlist archive", []string{`DELETE FROM audit_archives`}, 1, "does not match the hash logged"},
		{"widen archive", []string{`UPDATE audit_events SET type = '', actor = '', outcome = '', subject = '', details = NULL WHERE seq BETWEEN 11 AND 15`,
			`UPDATE audit_archives SET to_seq = 15`}, 1, "no audit record of the controller archived them"},
		{"move archive root", []string{`UPDATE audit_archives SET root = 'AAAA'`}, 1, "is not the one its audit record"},
		{"add archive", []string{`UPDATE audit_events SET type = '', actor = '', outcome = '', subject = '', details = NULL WHERE seq BETWEEN 11 AND 15`,
			`INSERT INTO audit_archives SELECT 15, 11, root, bundle_sha256, reason, request, requested_by, approved_by, at FROM audit_archives`}, 11, "no audit record of the controller archived them"},
		{"archive not a prefix", []string{`UPDATE audit_archives SET from_seq = 2`}, 1, "not one prefix of the log"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := setup(t)
			c.sql(t, tc.stmts...)
			c.open(t)
			rep := c.verify(t)
			if rep.OK() {
				t.Fatalf("tampered log verified: %+v", rep)
			}
			if rep.FirstBad == nil || rep.FirstBad.Seq != tc.seq {
				t.Errorf("first bad record %+v, want seq %d (problems %q)", rep.FirstBad, tc.seq, rep.Problems)
			}
			if !strings.Contains(strings.Join(rep.Problems, "\n"), tc.because) {
				t.Errorf("problems %q, want %q", rep.Problems, tc.because)
			}
		})
	}
}
