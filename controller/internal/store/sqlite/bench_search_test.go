package sqlite_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/pkg/audit"
)

// BenchmarkSearchAudit measures audit searches on a generated trail: a
// hospital's 90 days, 5,000 users on 8,000 devices reaching 300 apps;
// 90% of records are flows allowed, 5% denied, the rest sessions,
// sign-ins (a tenth failed), posture and admin changes.
//
// By default it builds 200,000 records in a temporary directory. The
// figures in docs/benchmarks.md are for 10 million, built once (about
// three minutes) into a file outside the repository and reused:
//
//	CORDON_SEARCH_BENCH_DB=/var/tmp/search-10m.db CORDON_SEARCH_BENCH_RECORDS=10000000 \
//	  go test -run XXX -bench SearchAudit -benchtime 200x ./controller/internal/store/sqlite
func BenchmarkSearchAudit(b *testing.B) {
	n := 200_000
	path := filepath.Join(b.TempDir(), "cordon.db")
	if p := os.Getenv("CORDON_SEARCH_BENCH_DB"); p != "" {
		path = p
	}
	if s := os.Getenv("CORDON_SEARCH_BENCH_RECORDS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1000 {
			b.Fatalf("CORDON_SEARCH_BENCH_RECORDS=%q: want a number of at least 1000", s)
		}
	}
	ctx := context.Background()
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	have, err := st.AuditLogSize(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if have != 0 && have != int64(n) {
		b.Fatalf("%s holds %d records, not %d: remove it to build it again", path, have, n)
	}
	if have == 0 {
		start := time.Now()
		buildSearchTrail(b, st, n)
		b.Logf("built %d records in %v", n, time.Since(start))
	}
	indexTrail(b, st)
	newest := searchEpoch.Add(searchSpan)
	day := 24 * time.Hour
	for _, c := range []struct {
		name string
		q    store.AuditQuery
	}{
		{"user_24h", store.AuditQuery{User: "user-17", Since: newest.Add(-day)}},
		{"user_all", store.AuditQuery{User: "user-17"}},
		{"device_7d", store.AuditQuery{Device: "dev-1232", Since: newest.Add(-7 * day)}},
		{"app_denied_7d", store.AuditQuery{App: "app-42", Type: string(audit.FlowDeny), Since: newest.Add(-7 * day)}},
		{"user_sessions", store.AuditQuery{User: "user-17", Type: string(audit.SessionStart)}},
		{"failed_logins", store.AuditQuery{Type: string(audit.AuthLogin), Outcome: "failure"}},
		{"failed_logins_month_ago", store.AuditQuery{Type: string(audit.AuthLogin), Outcome: "failure", Until: newest.Add(-30 * day)}},
		{"admin_changes", store.AuditQuery{Type: "admin."}},
		{"flows_1h_month_ago", store.AuditQuery{Type: "flow.", Since: newest.Add(-30 * day), Until: newest.Add(-30*day + time.Hour)}},
		{"denied_any", store.AuditQuery{Outcome: "deny"}},
		{"no_match", store.AuditQuery{User: "nobody", Type: "flow."}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var got int
			for b.Loop() {
				p, err := st.SearchAudit(ctx, c.q)
				if err != nil {
					b.Fatal(err)
				}
				got = len(p.Events)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/page")
			b.ReportMetric(float64(got), "records")
		})
	}
	// Paging deep: the 50th page of 100 of a month of one app's flows
	// costs what the first does (the cursor is an index position).
	b.Run("app_page_50", func(b *testing.B) {
		q := store.AuditQuery{App: "app-42", Since: newest.Add(-30 * day)}
		for range 49 {
			p, err := st.SearchAudit(ctx, q)
			if err != nil {
				b.Fatal(err)
			}
			if p.NextCursor == "" {
				b.Skip("fewer than 50 pages: a trail this small has none so deep")
			}
			q.Cursor = p.NextCursor
		}
		for b.Loop() {
			if _, err := st.SearchAudit(ctx, q); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/page")
	})
}

// BenchmarkSearchAuditTail measures searches by key over records the key
// index has not reached: 40,000 records, two chunks, the most a running
// controller leaves behind while its indexer keeps up (a chunk waiting
// to fill and one being written). A search by key on a large trail costs
// its BenchmarkSearchAudit figure plus at most this.
func BenchmarkSearchAuditTail(b *testing.B) {
	st, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "cordon.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	buildSearchTrail(b, st, 40_000)
	if lag, err := st.AuditIndexLag(b.Context()); err != nil || lag != 40_000 {
		b.Fatalf("%d records past the index (%v), want all 40,000", lag, err)
	}
	newest := searchEpoch.Add(searchSpan)
	day := 24 * time.Hour
	for _, c := range []struct {
		name string
		q    store.AuditQuery
	}{
		{"user_24h", store.AuditQuery{User: "user-17", Since: newest.Add(-day)}},
		{"user_all", store.AuditQuery{User: "user-17"}},
		{"app_denied_7d", store.AuditQuery{App: "app-42", Type: string(audit.FlowDeny), Since: newest.Add(-7 * day)}},
		{"no_match", store.AuditQuery{User: "nobody", Type: "flow."}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := st.SearchAudit(b.Context(), c.q); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/page")
		})
	}
}

var (
	searchEpoch = time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	searchSpan  = 90 * 24 * time.Hour
)

// buildSearchTrail appends n records in batches of 10,000, their times
// spread evenly over searchSpan with a few seconds of jitter (gateways'
// clocks).
func buildSearchTrail(b *testing.B, st *sqlite.Store, n int) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(12, 1))
	step := searchSpan / time.Duration(n)
	batch := make([]store.AuditEvent, 0, 10_000)
	for i := range n {
		at := searchEpoch.Add(time.Duration(i)*step + time.Duration(r.IntN(5000))*time.Millisecond)
		u := r.IntN(5000)
		user := fmt.Sprintf("user-%d", u)
		dev := fmt.Sprintf("dev-%d", (u*8+r.IntN(2))%8000)
		app := fmt.Sprintf("app-%d", r.IntN(300))
		e := store.AuditEvent{Time: at, Actor: "gateway:gw-1", Subject: app}
		switch x := r.IntN(1000); {
		case x < 900:
			e.Type, e.Outcome = audit.FlowAllow, "allow"
		case x < 950:
			e.Type, e.Outcome = audit.FlowDeny, "deny"
		case x < 960:
			e.Type, e.Outcome, e.Actor, e.Subject = audit.SessionStart, "success", "user:"+user, fmt.Sprintf("sess-%d", i)
		case x < 970:
			e.Type, e.Outcome, e.Actor, e.Subject = audit.SessionEnd, "success", "controller", fmt.Sprintf("sess-%d", i)
		case x < 990:
			e.Type, e.Outcome, e.Actor, e.Subject = audit.AuthLogin, "success", "user:"+user, user
			if r.IntN(10) == 0 {
				e.Outcome = "failure"
			}
		case x < 998:
			e.Type, e.Outcome, e.Actor, e.Subject = audit.PostureReport, "success", "device:"+dev, dev
		default:
			e.Type, e.Outcome, e.Actor = audit.AdminGroupAddMember, "success", "admin:alice"
			e.Subject = "nurses"
		}
		switch e.Type {
		case audit.FlowAllow, audit.FlowDeny:
			e.Details = map[string]string{"proto": "tcp", "src": fmt.Sprintf("100.64.%d.%d:%d", u/250, u%250, 30000+r.IntN(30000)),
				"dst": "10.20.0.10:443", "gateway": "gw-1", "user": user, "device": dev, "rule": "r-" + app}
		case audit.SessionStart, audit.AuthLogin:
			e.Details = map[string]string{"device": dev, "source": "10.1.2.3"}
		case audit.SessionEnd:
			e.Details = map[string]string{"device": dev, "user": user, "reason": "idle"}
		case audit.AdminGroupAddMember:
			e.Details = map[string]string{"user": user}
		}
		batch = append(batch, e)
		if len(batch) == cap(batch) || i == n-1 {
			if err := st.AppendAudit(ctx, batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

// indexTrail runs the key indexer until the records past its cursor are
// fewer than a chunk (the state a running controller keeps).
func indexTrail(b *testing.B, st *sqlite.Store) {
	ctx, cancel := context.WithCancel(b.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		st.RunAuditIndexer(ctx, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	}()
	defer func() { cancel(); <-done }()
	start := time.Now()
	for {
		lag, err := st.AuditIndexLag(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if lag < 20_000 {
			break
		}
		time.Sleep(100 * time.Millisecond) // a benchmark's setup, polling the indexer
	}
	b.Logf("indexed in %v", time.Since(start))
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAppendAuditTrail measures appends on a trail that already
// holds records, with the key indexer running beside them as in the
// controller: batches of flow records with random users, devices and
// apps appended after a generated trail (see BenchmarkSearchAudit).
// ns/op is per batch; records/s is reported, and lag_records, how many
// records were past the index's cursor at the end (the indexer kept up
// if it is below a chunk or two).
//
// By default the trail is 100,000 records in a temporary directory,
// small enough that its indexes fit the page cache. For the large-trail
// figures in docs/benchmarks.md, build a bigger one into its own file
// (not the search benchmark's, which must keep its size):
//
//	CORDON_APPEND_BENCH_DB=/var/tmp/append-1m.db CORDON_APPEND_BENCH_RECORDS=1000000 \
//	  go test -run XXX -bench AppendAuditTrail -benchtime 20s ./controller/internal/store/sqlite
func BenchmarkAppendAuditTrail(b *testing.B) {
	n := 100_000
	path := filepath.Join(b.TempDir(), "cordon.db")
	if p := os.Getenv("CORDON_APPEND_BENCH_DB"); p != "" {
		path = p
	}
	if s := os.Getenv("CORDON_APPEND_BENCH_RECORDS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1000 {
			b.Fatalf("CORDON_APPEND_BENCH_RECORDS=%q: want a number of at least 1000", s)
		}
	}
	ctx := context.Background()
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	have, err := st.AuditLogSize(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if have == 0 {
		start := time.Now()
		buildSearchTrail(b, st, n)
		b.Logf("built %d records in %v", n, time.Since(start))
		have = int64(n)
	}
	indexTrail(b, st)
	// CORDON_APPEND_BENCH_NO_INDEXER=1: appends alone, for the indexer's
	// cost in the same session.
	if os.Getenv("CORDON_APPEND_BENCH_NO_INDEXER") == "" {
		ictx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			// Debug: each bucket's build and write times.
			st.RunAuditIndexer(ictx, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})))
		}()
		defer func() { stop(); <-done }()
	}
	// Records after the trail's newest, a millisecond apart; batches of
	// 100, 500 (a full gateway frame, gateway sendBatch), 1,000 and 10,000
	// (several frames in one transaction) on the same trail.
	r := rand.New(rand.NewPCG(uint64(have), 2))
	at := searchEpoch.Add(searchSpan).Add(time.Duration(have) * time.Millisecond)
	for _, size := range []int{100, 500, 1000, 10_000} {
		b.Run(fmt.Sprintf("batch_%d", size), func(b *testing.B) {
			before, err := st.AuditLogSize(ctx)
			if err != nil {
				b.Fatal(err)
			}
			// Batches made before the clock starts (the store's cost, not
			// fmt's), cycled; each append gives its records new times.
			batches := make([][]store.AuditEvent, 8)
			for j := range batches {
				batches[j] = make([]store.AuditEvent, size)
				for i := range batches[j] {
					u := r.IntN(5000)
					user, dev := fmt.Sprintf("user-%d", u), fmt.Sprintf("dev-%d", (u*8+r.IntN(2))%8000)
					app := fmt.Sprintf("app-%d", r.IntN(300))
					batches[j][i] = store.AuditEvent{Type: audit.FlowAllow, Outcome: "allow", Actor: "gateway:gw-1", Subject: app,
						Details: map[string]string{"proto": "tcp", "src": fmt.Sprintf("100.64.%d.%d:%d", u/250, u%250, 30000+r.IntN(30000)),
							"dst": "10.20.0.10:443", "gateway": "gw-1", "user": user, "device": dev, "rule": "r-" + app}}
				}
			}
			cpu := cpuTime(b)
			for n := 0; b.Loop(); n++ {
				batch := batches[n%len(batches)]
				for i := range batch {
					at = at.Add(time.Millisecond)
					batch[i].Time = at
				}
				if err := st.AppendAudit(ctx, batch...); err != nil {
					b.Fatal(err)
				}
			}
			after, err := st.AuditLogSize(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if want := before + int64(b.N*size); after != want {
				b.Fatalf("the log holds %d records after appending, want %d", after, want)
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "records/s")
			// The process's CPU time (appends, the indexer, the driver)
			// per record: on a shared machine, what records/s would be
			// with a core to itself, fsyncs aside.
			b.ReportMetric(float64((cpuTime(b)-cpu).Microseconds())/float64(b.N*size), "cpu_µs/record")
			lag, err := st.AuditIndexLag(ctx)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(lag), "lag_records")
		})
	}
}
