package sqlite

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/storetest"
	"github.com/cordonhq/cordon/pkg/audit"
	"golang.org/x/mod/sumdb/tlog"
)

var indexEpoch = time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)

// randomRecord is a record about a few users, devices and apps, its time
// about seq seconds after indexEpoch with jitter, ties and now and then a
// late one (a gateway's spool after an outage), so time order is not seq
// order.
func randomRecord(r *rand.Rand, seq int) store.AuditEvent {
	at := indexEpoch.Add(time.Duration(seq) * time.Second).Add(time.Duration(r.IntN(9)-4) * time.Second)
	if r.IntN(30) == 0 {
		at = at.Add(-time.Duration(r.IntN(600)) * time.Second)
	}
	user, dev, app := fmt.Sprintf("user-%d", r.IntN(8)), fmt.Sprintf("dev-%d", r.IntN(10)), fmt.Sprintf("app-%d", r.IntN(5))
	e := store.AuditEvent{Time: at, Actor: "gateway:gw-1", Subject: app}
	switch x := r.IntN(10); {
	case x < 6:
		e.Type, e.Outcome = audit.FlowAllow, "allow"
		e.Details = map[string]string{"user": user, "device": dev, "proto": "tcp"}
	case x < 7:
		e.Type, e.Outcome = audit.FlowDeny, "deny"
		e.Details = map[string]string{"user": user, "device": dev}
	case x < 8:
		e.Type, e.Outcome, e.Actor, e.Subject = audit.AuthLogin, "success", "user:"+user, user
		if r.IntN(3) == 0 {
			e.Outcome = "failure"
		}
		e.Details = map[string]string{"device": dev}
	case x < 9:
		e.Type, e.Outcome, e.Actor, e.Subject = audit.PostureReport, "success", "device:"+dev, dev
	default:
		e.Type, e.Outcome, e.Actor = audit.AdminAppCreate, "success", "admin:alice"
	}
	return e
}

// randomQuery is a search with at least one key most of the time.
func randomQuery(r *rand.Rand, span time.Duration) store.AuditQuery {
	var q store.AuditQuery
	for q.User == "" && q.Device == "" && q.App == "" && r.IntN(8) != 0 {
		if r.IntN(2) == 0 {
			q.User = fmt.Sprintf("user-%d", r.IntN(9)) // user-8: none
		}
		if r.IntN(3) == 0 {
			q.Device = fmt.Sprintf("dev-%d", r.IntN(10))
		}
		if r.IntN(3) == 0 {
			q.App = fmt.Sprintf("app-%d", r.IntN(5))
		}
	}
	q.Type = []string{"", "", "", "flow.", string(audit.FlowDeny), string(audit.AuthLogin), "admin."}[r.IntN(7)]
	q.Outcome = []string{"", "", "", "failure", "allow"}[r.IntN(5)]
	if r.IntN(3) == 0 {
		q.Since = indexEpoch.Add(time.Duration(r.Int64N(int64(span))))
	}
	if r.IntN(3) == 0 {
		q.Until = indexEpoch.Add(time.Duration(r.Int64N(int64(span))))
	}
	q.Limit = []int{0, 7, 50, 1000}[r.IntN(4)]
	if q.User == "" && q.Device == "" && q.App == "" {
		q.Limit = 1000 // not the key index; the conformance suite pages these
	}
	return q
}

// storedRecords reads back every record not archived, as searches return
// them.
func storedRecords(t *testing.T, s *Store) []store.AuditEvent {
	t.Helper()
	ctx := t.Context()
	n, err := s.AuditLogSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done, err := archivedTo(ctx, s.r)
	if err != nil {
		t.Fatal(err)
	}
	var evs []store.AuditEvent
	if n > done {
		err = s.ScanAuditLog(ctx, done+1, n, func(e store.AuditEvent, _ tlog.Hash, _ bool) error {
			evs = append(evs, e)
			return nil
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// checkSearches compares n random searches with the brute-force filter
// over the stored records.
func checkSearches(t *testing.T, s *Store, r *rand.Rand, n int, span time.Duration) {
	t.Helper()
	evs := storedRecords(t, s)
	for range n {
		q := randomQuery(r, span)
		got := storetest.SearchAll(t, s, q)
		if want := storetest.WantSearch(q, evs); !slices.Equal(got, want) {
			t.Fatalf("search %+v: got %d records %v, want %d %v", q, len(got), got[:min(len(got), 12)], len(want), want[:min(len(want), 12)])
		}
	}
}

// checkKeyIndex checks the index against the records: every record up
// to the cursor, not archived, is in the posting list of each of its
// keys exactly once, with its time, in a bucket whose time range holds
// it; there is nothing else.
func checkKeyIndex(t *testing.T, s *Store) {
	t.Helper()
	ctx := t.Context()
	cur, err := readKeyCursor(ctx, s.r)
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		kind int
		key  string
		seq  int64
	}
	want := map[entry]int64{}
	rows, err := listRows(ctx, s.r, func(r rowScanner) (keyRow, error) {
		var k keyRow
		err := r.Scan(&k.seq, &k.time, &k.user, &k.device, &k.app)
		return k, err
	}, `SELECT seq, time, k_user, k_device, k_app FROM audit_events WHERE seq <= ?`, cur)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		for kind, k := range map[int]string{keyUser: r.user.String, keyDevice: r.device.String, keyApp: r.app.String} {
			if k != "" {
				want[entry{kind, k, r.seq}] = r.time
			}
		}
	}
	type prow struct {
		bucket, minT, maxT int64
		kind               int
		key                string
		entries            []byte
	}
	ps, err := listRows(ctx, s.r, func(r rowScanner) (prow, error) {
		var p prow
		err := r.Scan(&p.bucket, &p.minT, &p.maxT, &p.kind, &p.key, &p.entries)
		return p, err
	}, `SELECT p.bucket, b.min_time, b.max_time, p.kind, p.key, p.entries FROM audit_key_postings p
		LEFT JOIN audit_key_buckets b ON b.last_seq = p.bucket`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[entry]int64{}
	for _, p := range ps {
		if p.bucket > cur {
			t.Fatalf("bucket %d past the cursor %d", p.bucket, cur)
		}
		dec, err := decodePostings(nil, p.entries)
		if err != nil || len(dec) == 0 {
			t.Fatalf("bucket %d %d/%q: %d postings, %v", p.bucket, p.kind, p.key, len(dec), err)
		}
		for _, d := range dec {
			if d.seq > p.bucket || d.time < p.minT || d.time > p.maxT {
				t.Fatalf("posting %+v of %q in bucket %d (times %d..%d)", d, p.key, p.bucket, p.minT, p.maxT)
			}
			e := entry{p.kind, p.key, d.seq}
			if _, dup := got[e]; dup {
				t.Fatalf("record %d is twice in the posting lists of %q", d.seq, p.key)
			}
			got[e] = d.time
		}
	}
	if len(got) != len(want) {
		t.Fatalf("index holds %d entries up to seq %d, the records %d", len(got), cur, len(want))
	}
	for e, at := range want {
		if g, ok := got[e]; !ok || g != at {
			t.Fatalf("record %d, key %q: indexed %v at %d, want at %d", e.seq, e.key, ok, g, at)
		}
	}
}

// TestKeySearchAgainstBruteForce: with records indexed, not yet indexed,
// indexed in a partial chunk and archived in the middle of a bucket,
// every search by key returns what a filter over all the records does,
// page by page; the index holds each record once.
func TestKeySearchAgainstBruteForce(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "cordon.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.idx.chunk = 37
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 12))
	seq, archived := 0, int64(0)
	for round := range 10 {
		n := 20 + r.IntN(150)
		for n > 0 {
			batch := make([]store.AuditEvent, min(n, 1+r.IntN(60)))
			for i := range batch {
				seq++
				batch[i] = randomRecord(r, seq)
			}
			if err := s.AppendAudit(ctx, batch...); err != nil {
				t.Fatal(err)
			}
			n -= len(batch)
		}
		for range r.IntN(5) {
			if _, err := s.indexAuditKeys(ctx, r.IntN(4) == 0); err != nil {
				t.Fatal(err)
			}
		}
		if round == 5 || round == 8 {
			// Archive into the middle of the oldest bucket left.
			to := min(int64(seq), archived+s.idx.chunk*int64(1+r.IntN(3))+int64(r.IntN(int(s.idx.chunk))))
			if err := s.ArchiveAudit(ctx, store.AuditArchive{FromSeq: archived + 1, ToSeq: to, Root: "r", At: indexEpoch}); err != nil {
				t.Fatal(err)
			}
			archived = to
		}
		lag, err := s.AuditIndexLag(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d records, %d past the index, archived to %d", round, seq, lag, archived)
		checkKeyIndex(t, s)
		checkSearches(t, s, r, 25, time.Duration(seq)*time.Second)
	}
}

// TestMigrateAuditKeyIndex: schema 15 drops the key indexes of schema 12
// and the indexer builds the posting lists from the keys the rows hold;
// searches are complete before and after.
func TestMigrateAuditKeyIndex(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "cordon.db")
	// A trail as a schema 14 controller left it: rows logged, keys in
	// their columns, the key indexes of schema 12.
	old, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 12))
	const records = 250
	for seq := 1; seq <= records; seq += 50 {
		batch := make([]store.AuditEvent, 50)
		for i := range batch {
			batch[i] = randomRecord(r, seq+i)
		}
		if err := old.AppendAudit(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
	undo := []string{`DROP TABLE audit_key_postings`, `DROP TABLE audit_key_buckets`, `DROP TABLE audit_key_cursor`,
		// Schema 16 (device quarantine) undone too, so Open migrates
		// from 14 again.
		`DROP INDEX devices_public_key`, `ALTER TABLE devices DROP COLUMN quarantined_at`,
		`ALTER TABLE devices DROP COLUMN quarantined_by`, `ALTER TABLE devices DROP COLUMN quarantine_reason`,
		// Schema 18 (access reviews) too.
		`DROP TABLE review_lines`, `DROP TABLE review_campaigns`,
		// And schema 17 (break-glass).
		`DROP TABLE break_glass_reviews`, `DROP TABLE break_glass_uses`, `DROP INDEX sessions_active_expires`,
		`ALTER TABLE users DROP COLUMN break_glass`, `ALTER TABLE apps DROP COLUMN emergency`,
		`ALTER TABLE sessions DROP COLUMN expires_at`, `ALTER TABLE sessions DROP COLUMN break_glass`,
		`DELETE FROM schema_version WHERE version >= 15`}
	for _, line := range strings.Split(auditSearchIndexes, "\n") {
		if strings.Contains(line, "k_") { // schema 12's key indexes
			undo = append(undo, line)
		}
	}
	for _, q := range undo {
		if _, err := old.w.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	const keyIndexes = `SELECT COUNT(*) FROM sqlite_schema WHERE name IN ('audit_events_user', 'audit_events_device', 'audit_events_app')`
	var have int
	if err := old.w.QueryRowContext(ctx, keyIndexes).Scan(&have); err != nil || have != 3 {
		t.Fatalf("schema 14 trail has %d key indexes (%v), want 3", have, err)
	}
	old.Close()

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var left int
	if err := s.r.QueryRowContext(ctx, keyIndexes).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d key indexes of schema 12 left (%v)", left, err)
	}
	if lag, err := s.AuditIndexLag(ctx); err != nil || lag != records {
		t.Fatalf("after the migration %d records past the index (%v), want all %d", lag, err, records)
	}
	checkSearches(t, s, r, 30, records*time.Second) // unindexed: scanned
	s.idx.chunk = 100
	ictx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.RunAuditIndexer(ictx, slog.New(slog.DiscardHandler))
	}()
	deadline := time.Now().Add(20 * time.Second)
	for lag, _ := s.AuditIndexLag(ctx); lag >= s.idx.chunk; lag, _ = s.AuditIndexLag(ctx) {
		if time.Now().After(deadline) {
			t.Fatalf("indexer did not catch up: %d records past it", lag)
		}
		time.Sleep(10 * time.Millisecond) // polling the indexer's goroutine
	}
	cancel()
	<-done
	if lag, _ := s.AuditIndexLag(ctx); lag != records%100 {
		t.Fatalf("%d records past the index, want %d (whole chunks only)", lag, records%100)
	}
	checkKeyIndex(t, s)
	checkSearches(t, s, r, 30, records*time.Second)
}

const indexCrashEnv = "CORDON_AUDITINDEX_CRASH_DB"

// TestAuditIndexCrashChild is the child of TestAuditIndexCrash: with
// the indexer running on small chunks it appends random batches and
// prints the log's size once each append returned, until killed.
func TestAuditIndexCrashChild(t *testing.T) {
	path := os.Getenv(indexCrashEnv)
	if path == "" {
		t.Skip("the child of TestAuditIndexCrash; runs only under it")
	}
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	s.idx.chunk = 97
	go s.RunAuditIndexer(ctx, slog.New(slog.NewTextHandler(os.Stderr, nil))) // until the kill
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 12))
	n, err := s.AuditLogSize(ctx)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	for {
		batch := make([]store.AuditEvent, 1+r.IntN(60))
		for i := range batch {
			batch[i] = randomRecord(r, int(n)+i+1)
		}
		if err := s.AppendAudit(ctx, batch...); err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		n += int64(len(batch))
		fmt.Println("ack", n)
	}
}

// TestAuditIndexCrash: kill -9 of a process appending with the indexer
// running, at random points (often inside the indexer's transaction:
// it commits every 97 records), then reopen: every acknowledged record
// is there, the index holds each indexed record exactly once, and after
// the indexer catches up searches equal the brute-force filter.
func TestAuditIndexCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: not in -short")
	}
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "cordon.db")
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 13))
	var acked int64
	for round := range 8 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestAuditIndexCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), indexCrashEnv+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		want := 1 + r.IntN(25)
		for got := 0; got < want && sc.Scan(); {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "ack "); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				acked = max(acked, n)
				got++
			} else if strings.HasPrefix(line, "error") || strings.HasPrefix(line, "---") || strings.HasPrefix(line, "panic") {
				t.Fatalf("round %d: child: %s", round, line)
			}
		}
		time.Sleep(time.Duration(r.IntN(5000)) * time.Microsecond) // a random point of what follows
		cmd.Process.Kill()
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				acked = max(acked, n)
			}
		}
		cmd.Wait()

		s, err := Open(ctx, path)
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		n, err := s.AuditLogSize(ctx)
		if err != nil || n < acked {
			t.Fatalf("round %d: log of %d records (%v), %d acknowledged", round, n, err, acked)
		}
		cur, _ := readKeyCursor(ctx, s.r)
		t.Logf("round %d: %d records (%d acknowledged), indexed to %d", round, n, acked, cur)
		checkKeyIndex(t, s)
		s.Close()
	}
	// Converged: the indexer catches up from its cursor; searches match.
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for {
		st, err := s.indexAuditKeys(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		if st.records == 0 {
			break
		}
	}
	checkKeyIndex(t, s)
	n, _ := s.AuditLogSize(ctx)
	checkSearches(t, s, r, 30, time.Duration(n)*time.Second)
	if lag, _ := s.AuditIndexLag(ctx); lag >= s.idx.chunk {
		t.Fatalf("%d records past the index after catching up", lag)
	}
}

// FuzzDecodePostings: any bytes decode to postings or an error, never a
// panic; what decodes has increasing seqs and encodes back to the same
// postings.
func FuzzDecodePostings(f *testing.F) {
	f.Add(appendPostings(nil, []posting{{1, 100}, {2, 90}, {7, 1_000_000}}))
	f.Add(appendPostings(nil, []posting{{1 << 40, -5}}))
	f.Add([]byte{0x80})
	f.Add([]byte{0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := decodePostings(nil, b)
		if err != nil {
			return
		}
		for i := 1; i < len(ps); i++ {
			if ps[i].seq <= ps[i-1].seq {
				t.Fatalf("seqs do not increase: %+v", ps)
			}
		}
		again, err := decodePostings(nil, appendPostings(nil, ps))
		if err != nil || !slices.Equal(again, ps) {
			t.Fatalf("%+v encodes to what decodes as %+v, %v", ps, again, err)
		}
	})
}
