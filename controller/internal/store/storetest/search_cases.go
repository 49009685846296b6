package storetest

// Cases for audit search and archiving.

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
	"golang.org/x/mod/sumdb/tlog"
)

// searchWorld appends n records with a few users, devices, apps, types and
// outcomes, times that repeat (to exercise the cursor's tie-break on
// seq), and returns them as stored (Seq set).
func searchWorld(t *testing.T, s store.Store, n int) []store.AuditEvent {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	types := []audit.Type{audit.FlowAllow, audit.FlowDeny, audit.SessionStart, audit.AuthLogin, audit.AdminAppCreate}
	var evs []store.AuditEvent
	for i := range n {
		typ := types[r.IntN(len(types))]
		e := store.AuditEvent{Time: at(time.Duration(i/3) * time.Second), Type: typ, Outcome: "success",
			Actor: "gateway:gw-1", Subject: fmt.Sprintf("app-%d", r.IntN(3)), Details: map[string]string{}}
		switch typ {
		case audit.FlowAllow, audit.FlowDeny:
			e.Outcome = map[audit.Type]string{audit.FlowAllow: "allow", audit.FlowDeny: "deny"}[typ]
			e.Details["user"] = fmt.Sprintf("user-%d", r.IntN(4))
			e.Details["device"] = fmt.Sprintf("dev-%d", r.IntN(6))
		case audit.SessionStart, audit.AuthLogin:
			e.Actor = fmt.Sprintf("user:user-%d", r.IntN(4))
			e.Details["device"] = fmt.Sprintf("dev-%d", r.IntN(6))
			if r.IntN(3) == 0 {
				e.Outcome = "failure"
			}
		case audit.AdminAppCreate:
			e.Actor = "admin:alice"
		}
		evs = append(evs, e)
	}
	for lo := 0; lo < n; lo += 37 {
		must(t, s.AppendAudit(ctx(t), evs[lo:min(lo+37, n)]...))
	}
	for i := range evs {
		evs[i].Seq = int64(i + 1)
	}
	return evs
}

// matches is the reference the store's search is compared with.
func matches(q store.AuditQuery, e store.AuditEvent) bool {
	k := audit.KeysOf(e.Type, e.Actor, e.Subject, e.Details)
	switch {
	case q.User != "" && k.User != q.User,
		q.Device != "" && k.Device != q.Device,
		q.App != "" && k.App != q.App,
		q.Outcome != "" && e.Outcome != q.Outcome,
		!q.Since.IsZero() && e.Time.Before(q.Since),
		!q.Until.IsZero() && !e.Time.Before(q.Until):
		return false
	case q.Type == "":
		return true
	case strings.HasSuffix(q.Type, "."):
		return strings.HasPrefix(string(e.Type), q.Type)
	}
	return string(e.Type) == q.Type
}

// searchAll pages through q and returns the seqs found, failing on a
// repeated record.
func searchAll(t *testing.T, s store.Store, q store.AuditQuery, between func()) []int64 {
	t.Helper()
	var got []int64
	seen := map[int64]bool{}
	for pages := 0; ; pages++ {
		if pages > 10_000 {
			t.Fatal("search does not end")
		}
		p, err := s.SearchAudit(ctx(t), q)
		must(t, err)
		if lim := cmp.Or(q.Limit, 100); len(p.Events) > lim {
			t.Fatalf("page of %d records, limit %d", len(p.Events), q.Limit)
		}
		for _, e := range p.Events {
			if seen[e.Seq] {
				t.Fatalf("record %d returned twice (query %+v)", e.Seq, q)
			}
			seen[e.Seq] = true
			got = append(got, e.Seq)
		}
		if p.NextCursor == "" {
			return got
		}
		if len(p.Events) == 0 {
			t.Fatal("empty page with a next cursor")
		}
		q.Cursor = p.NextCursor
		if between != nil {
			between()
		}
	}
}

// want is the seqs of evs matching q, newest first by (Time, Seq).
func want(q store.AuditQuery, evs []store.AuditEvent) []int64 {
	var m []store.AuditEvent
	for _, e := range evs {
		if matches(q, e) {
			m = append(m, e)
		}
	}
	slices.SortFunc(m, func(a, b store.AuditEvent) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		return int(b.Seq - a.Seq)
	})
	out := []int64{}
	for _, e := range m {
		out = append(out, e.Seq)
	}
	return out
}

func testAuditSearch(t *testing.T, s store.Store) {
	evs := searchWorld(t, s, 400)
	queries := []store.AuditQuery{
		{},
		{User: "user-1"},
		{Device: "dev-2"},
		{App: "app-0"},
		{Type: string(audit.FlowDeny)},
		{Type: "flow."},
		{Type: "auth."},
		{Outcome: "failure"},
		{User: "user-2", Type: "flow.", Outcome: "deny"},
		{Device: "dev-3", Since: at(20 * time.Second), Until: at(90 * time.Second)},
		{Since: at(100 * time.Second)},
		{Until: at(10 * time.Second)},
		{App: "app-1", Type: string(audit.FlowAllow), Since: at(5 * time.Second)},
		{User: "nobody"},
		{Type: "flow.", Since: at(200 * time.Second)}, // after every record
	}
	for _, q := range queries {
		for _, limit := range []int{1, 7, 0} {
			q.Limit = limit
			got := searchAll(t, s, q, nil)
			if w := want(q, evs); !slices.Equal(got, w) {
				t.Errorf("search %+v: got %d records %v, want %d %v", q, len(got), head(got), len(w), head(w))
			}
		}
	}

	// A returned record is the record as stored.
	p, err := s.SearchAudit(ctx(t), store.AuditQuery{Limit: 1})
	must(t, err)
	if len(p.Events) != 1 || p.Events[0].Seq != 400 || !p.Events[0].Time.Equal(evs[399].Time) ||
		p.Events[0].Type != evs[399].Type || p.Events[0].Actor != evs[399].Actor {
		t.Errorf("newest record: got %+v, want %+v", p.Events, evs[399])
	}

	// Cursors are opaque but checked: garbage, or another query's cursor,
	// is refused.
	p, err = s.SearchAudit(ctx(t), store.AuditQuery{User: "user-1", Limit: 2})
	must(t, err)
	for _, q := range []store.AuditQuery{
		{User: "user-2", Cursor: p.NextCursor},
		{User: "user-1", Cursor: "not-a-cursor"},
		{User: "user-1", Cursor: p.NextCursor + "A"},
		{User: "user-1", Cursor: strings.Repeat("A", 100)},
	} {
		if _, err := s.SearchAudit(ctx(t), q); !errors.Is(err, store.ErrBadCursor) {
			t.Errorf("search %+v: got %v, want ErrBadCursor", q, err)
		}
	}
}

func head(xs []int64) []int64 { return xs[:min(len(xs), 10)] }

// testAuditSearchWhileAppending pages through a search while records
// arrive: every record there when the search began is returned once, in
// order; the new ones (newer) are not in it.
func testAuditSearchWhileAppending(t *testing.T, s store.Store) {
	evs := searchWorld(t, s, 300)
	var added []store.AuditEvent
	i := 0 // new records are newer than every one before
	for _, q := range []store.AuditQuery{{Limit: 9}, {Type: "flow.", Limit: 5}, {User: "user-0", Limit: 4}} {
		got := searchAll(t, s, q, func() {
			// New records, at the newest time and later, including one that
			// matches every query.
			e := store.AuditEvent{Time: at(time.Duration(100+i) * time.Second), Type: audit.FlowAllow, Actor: "gateway:gw-1",
				Outcome: "allow", Subject: "app-0", Details: map[string]string{"user": "user-0"}}
			i++
			must(t, s.AppendAudit(ctx(t), e, e))
			added = append(added, e, e)
		})
		if w := want(q, evs); !slices.Equal(got, w) {
			t.Errorf("search %+v while appending: got %d records %v, want %d %v", q, len(got), head(got), len(w), head(w))
		}
		// What was appended is there for the next search.
		for _, e := range added {
			e.Seq = int64(len(evs) + 1)
			evs = append(evs, e)
		}
		added = added[:0]
	}
}

func testAuditArchive(t *testing.T, s store.Store) {
	c := ctx(t)
	evs := searchWorld(t, s, 60)
	if as, err := s.ListAuditArchives(c); err != nil || len(as) != 0 {
		t.Fatalf("new store has archives: %v %v", as, err)
	}
	before, err := s.ReadAuditHashes(c, []int64{0, 1, 2, tlog.StoredHashIndex(0, 59)})
	must(t, err)
	newest, err := s.ReadNewestAuditTime(c, 1, 20)
	must(t, err)
	if !newest.Equal(evs[19].Time) {
		t.Errorf("newest time of 1..20: %v, want %v", newest, evs[19].Time)
	}

	a := store.AuditArchive{FromSeq: 1, ToSeq: 20, Root: "root", BundleSHA256: "ab", Reason: "r", Request: "req",
		RequestedBy: "alice", ApprovedBy: "bob", At: at(time.Hour)}
	for _, bad := range []struct {
		a    store.AuditArchive
		want error
	}{
		{store.AuditArchive{FromSeq: 2, ToSeq: 20}, store.ErrStale},
		{store.AuditArchive{FromSeq: 1, ToSeq: 61}, store.ErrNotFound},
		{store.AuditArchive{FromSeq: 1, ToSeq: 0}, store.ErrNotFound},
	} {
		if err := s.ArchiveAudit(c, bad.a); !errors.Is(err, bad.want) {
			t.Errorf("ArchiveAudit %d..%d: got %v, want %v", bad.a.FromSeq, bad.a.ToSeq, err, bad.want)
		}
	}
	must(t, s.ArchiveAudit(c, a))
	if err := s.ArchiveAudit(c, a); !errors.Is(err, store.ErrStale) {
		t.Errorf("archiving a range twice: got %v, want ErrStale", err)
	}
	as, err := s.ListAuditArchives(c)
	must(t, err)
	if len(as) != 1 || as[0] != a {
		t.Errorf("archives: got %+v, want %+v", as, a)
	}

	// The bodies are gone from reads; the hashes and the log's size stay.
	got := searchAll(t, s, store.AuditQuery{Limit: 50}, nil)
	var rest []store.AuditEvent
	for _, e := range evs[20:] {
		rest = append(rest, e)
	}
	if w := want(store.AuditQuery{}, rest); !slices.Equal(got, w) {
		t.Errorf("search after archive: got %v, want %v", head(got), head(w))
	}
	list, err := s.ListAudit(c, store.AuditFilter{Limit: 1000})
	must(t, err)
	if len(list) != 40 || list[len(list)-1].Seq != 21 {
		t.Errorf("list after archive: %d records, want 40 from seq 21", len(list))
	}
	after, err := s.ReadAuditHashes(c, []int64{0, 1, 2, tlog.StoredHashIndex(0, 59)})
	must(t, err)
	if !slices.Equal(before, after) {
		t.Error("archiving changed stored tree hashes")
	}
	if n, err := s.AuditLogSize(c); err != nil || n != 60 {
		t.Errorf("log size after archive: %d %v, want 60", n, err)
	}
	var scanned int64
	must(t, s.ScanAuditLog(c, 1, 60, func(e store.AuditEvent, _ tlog.Hash, logged bool) error {
		scanned++
		if e.Seq != scanned || !logged {
			return fmt.Errorf("scan: record %d (logged %v), want %d logged", e.Seq, logged, scanned)
		}
		if e.Seq <= 20 && (e.Type != "" || e.Actor != "" || e.Details != nil) {
			return fmt.Errorf("archived record %d still has a body: %+v", e.Seq, e)
		}
		return nil
	}))
	// The log extends past an archive.
	must(t, s.AppendAudit(c, event("after", 1)))
	if n, _ := s.AuditLogSize(c); n != 61 {
		t.Errorf("log size after an append: %d, want 61", n)
	}
	must(t, s.ArchiveAudit(c, store.AuditArchive{FromSeq: 21, ToSeq: 30, Root: "r2", At: at(2 * time.Hour)}))
	if as, _ := s.ListAuditArchives(c); len(as) != 2 || as[1].FromSeq != 21 {
		t.Errorf("archives after a second: %+v", as)
	}
}

func testArchiveRequests(t *testing.T, s store.Store) {
	c := ctx(t)
	r := store.ArchiveRequest{ID: "ar-1", FromSeq: 1, ToSeq: 10, Reason: "storage", BundleSHA256: "ff", RequestedBy: "alice",
		CreatedAt: at(0), ExpiresAt: at(time.Hour)}
	must(t, s.CreateArchiveRequest(c, r))
	if err := s.CreateArchiveRequest(c, r); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("duplicate request: got %v, want ErrAlreadyExists", err)
	}
	got, err := s.GetArchiveRequest(c, "ar-1")
	must(t, err)
	if got.ApprovedAt != nil || got.ID != r.ID || got.ToSeq != 10 || !got.ExpiresAt.Equal(r.ExpiresAt) || got.RequestedBy != "alice" {
		t.Errorf("got %+v, want %+v", got, r)
	}
	if _, err := s.GetArchiveRequest(c, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown request: %v", err)
	}
	if err := s.ConsumeArchiveRequest(c, "nope", "bob", at(time.Minute)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("consume unknown: %v", err)
	}
	// Of concurrent approvals exactly one wins.
	errs := together(8, func(i int) error {
		return s.ConsumeArchiveRequest(c, "ar-1", fmt.Sprintf("admin-%d", i), at(time.Minute))
	})
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrRequestUsed):
			t.Errorf("concurrent approval: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d approvals of one request succeeded, want 1", won)
	}
	got, err = s.GetArchiveRequest(c, "ar-1")
	must(t, err)
	if got.ApprovedAt == nil || !got.ApprovedAt.Equal(at(time.Minute)) || !strings.HasPrefix(got.ApprovedBy, "admin-") {
		t.Errorf("approved request: %+v", got)
	}
	must(t, s.CreateArchiveRequest(c, store.ArchiveRequest{ID: "ar-2", FromSeq: 1, ToSeq: 5, CreatedAt: at(time.Second), ExpiresAt: at(time.Hour)}))
	rs, err := s.ListArchiveRequests(c)
	must(t, err)
	wantNames(t, "requests, newest first", names(rs, func(r store.ArchiveRequest) string { return r.ID }), []string{"ar-2", "ar-1"})
}

// WantSearch is the reference search: the seqs of the records of evs
// that match q, newest first by (Time, Seq). A backend's own tests
// compare its search with it on states the suite cannot reach (an index
// half built).
func WantSearch(q store.AuditQuery, evs []store.AuditEvent) []int64 { return want(q, evs) }

// SearchAll pages through q on s and returns the seqs found, failing t on
// a repeated record or a search that does not end.
func SearchAll(t *testing.T, s store.Store, q store.AuditQuery) []int64 {
	return searchAll(t, s, q, nil)
}
