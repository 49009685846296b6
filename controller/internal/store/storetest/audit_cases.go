package storetest

// Cases for the audit trail, admin tokens, snapshots and robustness.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/policy"
)

// --- audit ---

func event(typ string, i int) store.AuditEvent {
	return store.AuditEvent{
		Time:    at(time.Duration(i) * time.Second),
		Type:    audit.Type(typ), // any string: the store does not interpret types
		Actor:   "user:nurse",
		Outcome: "success",
		Subject: fmt.Sprintf("subject-%d", i),
	}
}

func testAudit(t *testing.T, s store.Store) {
	c := ctx(t)
	list, err := s.ListAudit(c, store.AuditFilter{})
	must(t, err)
	if len(list) != 0 {
		t.Fatalf("new store has audit events: %+v", list)
	}
	must(t, s.AppendAudit(c)) // nothing to do

	e1 := event("login", 1)
	e1.Details = map[string]string{"ip": "10.1.2.3", "mfa": "totp", "quote": `"{}\n`}
	e2 := event("flow.allow", 2)
	e2.Seq = 999 // ignored: the store assigns Seq
	must(t, s.AppendAudit(c, e1, e2))
	must(t, s.AppendAudit(c, event("flow.deny", 3)))

	list, err = s.ListAudit(c, store.AuditFilter{})
	must(t, err)
	if len(list) != 3 {
		t.Fatalf("got %d events, want 3", len(list))
	}
	wantNames(t, "types, newest first", names(list, func(e store.AuditEvent) string { return string(e.Type) }), []string{"flow.deny", "flow.allow", "login"})
	for i := 1; i < len(list); i++ {
		if list[i-1].Seq <= list[i].Seq {
			t.Fatalf("Seq not strictly decreasing newest first: %d then %d", list[i-1].Seq, list[i].Seq)
		}
	}
	if list[1].Seq == 999 {
		t.Errorf("store kept the caller's Seq")
	}
	got := list[2]
	want := e1
	want.Seq = got.Seq
	equal(t, "event round trip", got, want)

	// A zero Time is set by the store.
	must(t, s.AppendAudit(c, store.AuditEvent{Type: "session.end"}))
	list, err = s.ListAudit(c, store.AuditFilter{Limit: 1})
	must(t, err)
	if len(list) != 1 || list[0].Type != "session.end" || list[0].Time.IsZero() {
		t.Errorf("latest event = %+v", list)
	}
}

func testAuditFilter(t *testing.T, s store.Store) {
	c := ctx(t)
	types := []string{"login", "flow.allow", "flow.deny", "flow", "flowlog.x", "dns.deny", "flow.allow.extra"}
	var batch []store.AuditEvent
	for i := range 150 {
		batch = append(batch, event(types[i%len(types)], i))
	}
	must(t, s.AppendAudit(c, batch...))
	all, err := s.ListAudit(c, store.AuditFilter{Limit: 1000})
	must(t, err)
	if len(all) != 150 {
		t.Fatalf("got %d events, want 150", len(all))
	}
	// Seq order matches append order within a batch.
	for i, e := range all {
		if want := fmt.Sprintf("subject-%d", 149-i); e.Subject != want {
			t.Fatalf("event %d is %s, want %s", i, e.Subject, want)
		}
	}
	oldest := all[len(all)-1].Seq

	count := func(f store.AuditFilter) []store.AuditEvent {
		t.Helper()
		l, err := s.ListAudit(c, f)
		must(t, err)
		for i := 1; i < len(l); i++ {
			if l[i-1].Seq <= l[i].Seq {
				t.Fatalf("filter %+v: not newest first", f)
			}
		}
		return l
	}
	if n := len(count(store.AuditFilter{})); n != 100 {
		t.Errorf("default limit returned %d, want 100", n)
	}
	if n := len(count(store.AuditFilter{Limit: -5})); n != 100 {
		t.Errorf("negative limit returned %d, want 100", n)
	}
	if l := count(store.AuditFilter{Limit: 7}); len(l) != 7 || l[0].Seq != all[0].Seq {
		t.Errorf("limit 7 returned %d events starting at %d", len(l), l[0].Seq)
	}

	want := func(f store.AuditFilter, match func(string) bool) {
		t.Helper()
		got := count(f)
		var exp []int64
		for _, e := range all {
			if match(string(e.Type)) && e.Seq > f.AfterSeq {
				exp = append(exp, e.Seq)
			}
		}
		if f.Limit > 0 && len(exp) > f.Limit {
			exp = exp[:f.Limit]
		}
		gotSeqs := names(got, func(e store.AuditEvent) string { return fmt.Sprint(e.Seq) })
		expSeqs := names(exp, func(s int64) string { return fmt.Sprint(s) })
		if !slices.Equal(gotSeqs, expSeqs) {
			t.Errorf("filter %+v: got seqs %v, want %v", f, gotSeqs, expSeqs)
		}
	}
	want(store.AuditFilter{Type: "flow.", Limit: 1000}, func(s string) bool {
		return s == "flow.allow" || s == "flow.deny" || s == "flow.allow.extra"
	})
	want(store.AuditFilter{Type: "flow", Limit: 1000}, func(s string) bool { return s == "flow" })
	want(store.AuditFilter{Type: "flow.allow", Limit: 1000}, func(s string) bool { return s == "flow.allow" })
	want(store.AuditFilter{Type: "flow.allow.", Limit: 1000}, func(s string) bool { return s == "flow.allow.extra" })
	want(store.AuditFilter{Type: "nothing", Limit: 1000}, func(string) bool { return false })
	want(store.AuditFilter{Type: "%", Limit: 1000}, func(string) bool { return false })
	want(store.AuditFilter{Type: "_.", Limit: 1000}, func(string) bool { return false })
	want(store.AuditFilter{AfterSeq: oldest + 140, Limit: 1000}, func(string) bool { return true })
	want(store.AuditFilter{Type: "flow.", AfterSeq: oldest + 100, Limit: 3}, func(s string) bool { return len(s) > 5 && s[:5] == "flow." })
	want(store.AuditFilter{AfterSeq: all[0].Seq}, func(string) bool { return true })
}

// testAuditConcurrent: concurrent appends get distinct Seqs and none is lost.
func testAuditConcurrent(t *testing.T, s store.Store) {
	c := ctx(t)
	const writers, batches, per = 8, 5, 10
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				var batch []store.AuditEvent
				for i := range per {
					e := event("flow.allow", i)
					e.Subject = fmt.Sprintf("w%d-b%d-%d", w, b, i)
					batch = append(batch, e)
				}
				if err := s.AppendAudit(c, batch...); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	list, err := s.ListAudit(c, store.AuditFilter{Limit: 10000})
	must(t, err)
	if len(list) != writers*batches*per {
		t.Fatalf("got %d events, want %d", len(list), writers*batches*per)
	}
	// Strictly decreasing newest-first, and each batch contiguous and in
	// order (one transaction).
	pos := map[string]int64{}
	for i, e := range list {
		if i > 0 && list[i-1].Seq <= e.Seq {
			t.Fatalf("Seq not strictly decreasing at %d", i)
		}
		pos[e.Subject] = e.Seq
	}
	for w := range writers {
		for b := range batches {
			first := pos[fmt.Sprintf("w%d-b%d-0", w, b)]
			for i := range per {
				if got := pos[fmt.Sprintf("w%d-b%d-%d", w, b, i)]; got != first+int64(i) {
					t.Fatalf("batch w%d-b%d not contiguous: event %d at seq %d, first at %d", w, b, i, got, first)
				}
			}
		}
	}
}

// --- snapshot ---

func testSnapshot(t *testing.T, s store.Store) {
	c := ctx(t)
	snap, err := s.Snapshot(c)
	must(t, err)
	if len(snap.Segments)+len(snap.Apps)+len(snap.Users)+len(snap.Groups)+len(snap.Rules)+len(snap.Gateways)+len(snap.Devices) != 0 {
		t.Fatalf("empty store snapshot not empty: %+v", snap)
	}

	must(t, s.CreateSegment(c, seg("radiology")))
	must(t, s.CreateSegment(c, seg("clinical")))
	must(t, s.CreateApp(c, app("pacs", "radiology")))
	must(t, s.CreateApp(c, app("ehr", "clinical")))
	must(t, s.CreateUser(c, user("nurse")))
	must(t, s.CreateUser(c, user("admin")))
	must(t, s.CreateGroup(c, store.Group{Name: "nurses", Members: []string{"nurse"}}))
	must(t, s.CreateGroup(c, store.Group{Name: "all", Members: []string{"nurse", "admin"}}))
	must(t, s.CreateRule(c, store.Rule{Name: "r2", Group: "nurses", App: "ehr"}))
	must(t, s.CreateRule(c, store.Rule{Name: "r1", Group: "all", App: "pacs"}))
	enroll(t, s, "clinical", "gw-2")
	enroll(t, s, "radiology", "gw-1")
	_, err = s.CreateDevice(c, store.Device{ID: "dev-2", User: "nurse"})
	must(t, err)
	_, err = s.CreateDevice(c, store.Device{ID: "dev-1", User: "admin"})
	must(t, err)

	snap, err = s.Snapshot(c)
	must(t, err)
	// The snapshot agrees with the list methods.
	segs, _ := s.ListSegments(c)
	apps, _ := s.ListApps(c)
	users, _ := s.ListUsers(c)
	groups, _ := s.ListGroups(c)
	rules, _ := s.ListRules(c)
	gws, _ := s.ListGateways(c)
	devs, _ := s.ListDevices(c)
	equal(t, "Snapshot", *snap, store.Snapshot{
		Segments: segs, Apps: apps, Users: users, Groups: groups, Rules: rules, Gateways: gws, Devices: devs,
	})
	wantNames(t, "snapshot segments", names(snap.Segments, func(s store.Segment) string { return s.Name }), []string{"clinical", "radiology"})
	wantNames(t, "snapshot groups", names(snap.Groups, func(g store.Group) string { return g.Name }), []string{"all", "nurses"})
	wantNames(t, "snapshot group members", snap.Groups[0].Members, []string{"admin", "nurse"})
	wantNames(t, "snapshot rules", names(snap.Rules, func(r store.Rule) string { return r.Name }), []string{"r1", "r2"})
	wantNames(t, "snapshot gateways", names(snap.Gateways, func(g store.Gateway) string { return g.ID }), []string{"gw-1", "gw-2"})
	wantNames(t, "snapshot devices", names(snap.Devices, func(d store.Device) string { return d.ID }), []string{"dev-1", "dev-2"})
	if snap.Users[1].PasswordHash == "" {
		t.Errorf("snapshot users lack credentials")
	}
}

// testSnapshotConsistent takes snapshots while a writer keeps changing the
// directory; every snapshot must be referentially whole. A snapshot read
// table by table outside one transaction would see, for example, a device
// whose user was created after the users were read.
func testSnapshotConsistent(t *testing.T, s store.Store) {
	c := ctx(t)
	must(t, s.CreateSegment(c, seg("clinical")))
	must(t, s.CreateApp(c, app("ehr", "clinical")))

	const rounds = 60
	done := make(chan struct{})
	var writeErr error
	go func() {
		defer close(done)
		for i := range rounds {
			u, g, r := fmt.Sprintf("u%03d", i), fmt.Sprintf("g%03d", i), fmt.Sprintf("r%03d", i)
			steps := []func() error{
				func() error { return s.CreateUser(c, user(u)) },
				func() error { _, err := s.CreateDevice(c, store.Device{ID: "d-" + u, User: u}); return err },
				func() error { return s.CreateGroup(c, store.Group{Name: g, Members: []string{u}}) },
				func() error { return s.CreateRule(c, store.Rule{Name: r, Group: g, App: "ehr"}) },
			}
			if i >= 2 { // tear down an older round, in dependency order
				o := i - 2
				ou, og, or := fmt.Sprintf("u%03d", o), fmt.Sprintf("g%03d", o), fmt.Sprintf("r%03d", o)
				steps = append(steps,
					func() error { return s.DeleteRule(c, or) },
					func() error { return s.DeleteGroup(c, og) },
					func() error { return s.DeleteUser(c, ou) },
				)
			}
			for _, step := range steps {
				if err := step(); err != nil {
					writeErr = err
					return
				}
			}
		}
	}()

	snaps := 0
	for running := true; running; {
		select {
		case <-done:
			running = false // one more snapshot after the writer stops
		default:
		}
		snap, err := s.Snapshot(c)
		must(t, err)
		snaps++
		checkWhole(t, snap)
	}
	if writeErr != nil {
		t.Fatalf("writer: %v", writeErr)
	}
	if snaps < 2 {
		t.Logf("only %d snapshots overlapped the writer", snaps)
	}
}

// checkWhole fails if any reference in snap dangles.
func checkWhole(t *testing.T, snap *store.Snapshot) {
	t.Helper()
	set := func(ns []string) map[string]bool {
		m := make(map[string]bool, len(ns))
		for _, n := range ns {
			m[n] = true
		}
		return m
	}
	users := set(names(snap.Users, func(u store.User) string { return u.Name }))
	groups := set(names(snap.Groups, func(g store.Group) string { return g.Name }))
	apps := set(names(snap.Apps, func(a store.App) string { return a.Name }))
	segs := set(names(snap.Segments, func(s store.Segment) string { return s.Name }))
	for _, d := range snap.Devices {
		if !users[d.User] {
			t.Fatalf("snapshot: device %s of missing user %s", d.ID, d.User)
		}
	}
	for _, g := range snap.Groups {
		for _, m := range g.Members {
			if !users[m] {
				t.Fatalf("snapshot: group %s has missing member %s", g.Name, m)
			}
		}
	}
	for _, r := range snap.Rules {
		if !groups[r.Group] || !apps[r.App] {
			t.Fatalf("snapshot: rule %s references missing group %s or app %s", r.Name, r.Group, r.App)
		}
	}
	for _, a := range snap.Apps {
		if !segs[a.Segment] {
			t.Fatalf("snapshot: app %s in missing segment %s", a.Name, a.Segment)
		}
	}
	for _, g := range snap.Gateways {
		if !segs[g.Segment] {
			t.Fatalf("snapshot: gateway %s in missing segment %s", g.ID, g.Segment)
		}
	}
	// Every user created in a round has its device by the time its group
	// exists (they are created in that order).
	devUsers := set(names(snap.Devices, func(d store.Device) string { return d.User }))
	for _, g := range snap.Groups {
		for _, m := range g.Members {
			if !devUsers[m] {
				t.Fatalf("snapshot: group %s exists but its member %s has no device yet", g.Name, m)
			}
		}
	}
}

// --- robustness ---

// testOddInput: values the API layer would reject still store and load
// without panics or corruption. (Strings stay valid UTF-8 without NUL:
// PostgreSQL text cannot hold either.)
func testOddInput(t *testing.T, s store.Store) {
	c := ctx(t)
	odd := "'; DROP TABLE users; --\u202e%_\\\"\n"
	must(t, s.CreateSegment(c, store.Segment{Name: odd, CIDRs: []netip.Prefix{{}}}))
	got, err := s.GetSegment(c, odd)
	must(t, err)
	if got.Name != odd {
		t.Errorf("name round trip: %q", got.Name)
	}
	must(t, s.CreateApp(c, store.App{Name: "", Segment: odd, Proto: policy.Proto(250)}))
	a, err := s.GetApp(c, "")
	must(t, err)
	if a.Addr.IsValid() || a.Proto != 250 || len(a.Ports) != 0 {
		t.Errorf("zero app round trip: %+v", a)
	}
	must(t, s.CreateUser(c, store.User{Name: odd}))
	d, err := s.CreateDevice(c, store.Device{ID: odd, User: odd})
	must(t, err)
	if !d.PublicKey.IsZero() {
		t.Errorf("zero key came back as %v", d.PublicKey)
	}
	_, err = s.GetDevice(c, odd)
	must(t, err)
	must(t, s.AppendAudit(c, store.AuditEvent{Type: audit.Type(odd), Details: map[string]string{odd: odd}}))
	ev, err := s.ListAudit(c, store.AuditFilter{Type: odd})
	must(t, err)
	if len(ev) != 1 || ev[0].Details[odd] != odd {
		t.Errorf("odd audit event round trip: %+v", ev)
	}
	must(t, s.CreateEnrollToken(c, store.EnrollToken{ID: "far", Segment: odd, Hash: []byte{0}, ExpiresAt: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}))
	must(t, s.CreateEnrollToken(c, store.EnrollToken{ID: "past", Segment: odd, Hash: []byte{1}}))
	_, err = s.RedeemEnrollToken(c, []byte{1}, at(0), store.Gateway{})
	wantErr(t, "token with zero ExpiresAt", err, store.ErrTokenInvalid)
	if _, err := s.RedeemEnrollToken(c, []byte{0}, time.Time{}, store.Gateway{}); err != nil {
		t.Errorf("redeem at zero time: %v", err)
	}
	if _, err := s.Snapshot(c); err != nil {
		t.Errorf("snapshot with odd values: %v", err)
	}
}

// testCanceledContext: a cancelled context fails the call and changes
// nothing.
func testCanceledContext(t *testing.T, s store.Store) {
	c, cancel := context.WithCancel(ctx(t))
	cancel()
	if err := s.CreateSegment(c, seg("clinical")); err == nil {
		t.Fatalf("CreateSegment with a cancelled context succeeded")
	}
	if _, err := s.ListSegments(c); err == nil {
		t.Errorf("ListSegments with a cancelled context succeeded")
	}
	if _, err := s.GetSegment(ctx(t), "clinical"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("cancelled create left a segment behind: %v", err)
	}
}

func testClose(t *testing.T, s store.Store) {
	must(t, s.CreateSegment(ctx(t), seg("clinical")))
	must(t, s.Close())
	must(t, s.Close())
	if _, err := s.ListSegments(ctx(t)); err == nil {
		t.Errorf("ListSegments after Close succeeded")
	}
}
