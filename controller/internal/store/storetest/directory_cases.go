package storetest

// Cases for segments, apps, users, groups and rules.

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/policy"
)

// --- segments ---

func testSegments(t *testing.T, s store.Store) {
	c := ctx(t)
	for _, n := range []string{"radiology", "cardiology", "lab"} {
		must(t, s.CreateSegment(c, seg(n)))
	}
	wantErr(t, "duplicate", s.CreateSegment(c, seg("lab")), store.ErrAlreadyExists)

	got, err := s.GetSegment(c, "radiology")
	must(t, err)
	equal(t, "GetSegment", got, seg("radiology"))

	_, err = s.GetSegment(c, "nope")
	wantErr(t, "GetSegment missing", err, store.ErrNotFound)

	list, err := s.ListSegments(c)
	must(t, err)
	wantNames(t, "ListSegments", names(list, func(s store.Segment) string { return s.Name }), []string{"cardiology", "lab", "radiology"})
	equal(t, "listed segment", list[2], seg("radiology"))

	must(t, s.DeleteSegment(c, "lab"))
	_, err = s.GetSegment(c, "lab")
	wantErr(t, "get deleted", err, store.ErrNotFound)
	wantErr(t, "delete missing", s.DeleteSegment(c, "lab"), store.ErrNotFound)

	// A zero CreatedAt is set by the store; nil CIDRs come back empty.
	before := time.Now().Add(-time.Second)
	must(t, s.CreateSegment(c, store.Segment{Name: "empty"}))
	got, err = s.GetSegment(c, "empty")
	must(t, err)
	if got.CreatedAt.Before(before) || got.CreatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("zero CreatedAt stored as %v, want about now", got.CreatedAt)
	}
	if len(got.CIDRs) != 0 {
		t.Errorf("CIDRs = %v, want none", got.CIDRs)
	}
}

// --- apps ---

func testApps(t *testing.T, s store.Store) {
	c := ctx(t)
	wantErr(t, "app in missing segment", s.CreateApp(c, app("ehr", "clinical")), store.ErrNotFound)
	must(t, s.CreateSegment(c, seg("clinical")))

	ehr := app("ehr", "clinical")
	must(t, s.CreateApp(c, ehr))
	pacs := app("pacs", "clinical")
	pacs.Addr = netip.MustParsePrefix("fd00:20::5/128")
	pacs.Proto = policy.ProtoUDP
	pacs.Ports = []policy.PortRange{policy.AllPorts}
	pacs.Classification = store.ClassInternal
	must(t, s.CreateApp(c, pacs))
	icmp := app("monitor", "clinical")
	icmp.Addr = netip.MustParsePrefix("10.20.0.0/28")
	icmp.Proto = policy.ProtoICMP
	icmp.Ports = nil
	icmp.Classification = store.ClassPublic
	must(t, s.CreateApp(c, icmp))
	wantErr(t, "duplicate", s.CreateApp(c, ehr), store.ErrAlreadyExists)

	for _, want := range []store.App{ehr, pacs, icmp} {
		got, err := s.GetApp(c, want.Name)
		must(t, err)
		equal(t, "GetApp "+want.Name, got, want)
	}
	_, err := s.GetApp(c, "nope")
	wantErr(t, "GetApp missing", err, store.ErrNotFound)

	list, err := s.ListApps(c)
	must(t, err)
	wantNames(t, "ListApps", names(list, func(a store.App) string { return a.Name }), []string{"ehr", "monitor", "pacs"})

	wantErr(t, "delete segment with apps", s.DeleteSegment(c, "clinical"), store.ErrInUse)

	// A rule pins the app.
	must(t, s.CreateGroup(c, store.Group{Name: "nurses"}))
	must(t, s.CreateRule(c, store.Rule{Name: "nurses-ehr", Group: "nurses", App: "ehr"}))
	wantErr(t, "delete app with rule", s.DeleteApp(c, "ehr"), store.ErrInUse)
	if _, err := s.GetApp(c, "ehr"); err != nil {
		t.Fatalf("app gone after refused delete: %v", err)
	}
	must(t, s.DeleteRule(c, "nurses-ehr"))
	must(t, s.DeleteApp(c, "ehr"))
	wantErr(t, "delete missing", s.DeleteApp(c, "ehr"), store.ErrNotFound)

	must(t, s.DeleteApp(c, "pacs"))
	must(t, s.DeleteApp(c, "monitor"))
	must(t, s.DeleteSegment(c, "clinical"))
}

// --- users ---

func testUsers(t *testing.T, s store.Store) {
	c := ctx(t)
	nurse := user("nurse")
	doc := user("doctor")
	doc.Disabled = true
	doc.TOTPSecret = ""
	must(t, s.CreateUser(c, nurse))
	must(t, s.CreateUser(c, doc))
	wantErr(t, "duplicate", s.CreateUser(c, nurse), store.ErrAlreadyExists)

	got, err := s.GetUser(c, "doctor")
	must(t, err)
	equal(t, "GetUser", got, doc)
	if got.PasswordHash != doc.PasswordHash {
		t.Errorf("password hash = %q, want %q", got.PasswordHash, doc.PasswordHash)
	}
	_, err = s.GetUser(c, "nope")
	wantErr(t, "GetUser missing", err, store.ErrNotFound)

	list, err := s.ListUsers(c)
	must(t, err)
	wantNames(t, "ListUsers", names(list, func(u store.User) string { return u.Name }), []string{"doctor", "nurse"})
	equal(t, "listed user", list[1], nurse)

	// Disable and re-enable keep everything else.
	_, err = s.SetUserDisabled(c, "nurse", true, time.Now())
	must(t, err)
	got, err = s.GetUser(c, "nurse")
	must(t, err)
	if !got.Disabled || got.PasswordHash != nurse.PasswordHash || got.TOTPSecret != nurse.TOTPSecret {
		t.Errorf("after disable: %+v", got)
	}
	_, err = s.SetUserDisabled(c, "nurse", false, time.Now())
	must(t, err)
	got, err = s.GetUser(c, "nurse")
	must(t, err)
	equal(t, "re-enabled user", got, nurse)
	_, err = s.SetUserDisabled(c, "nope", true, time.Now())
	wantErr(t, "disable missing", err, store.ErrNotFound)

	must(t, s.DeleteUser(c, "doctor"))
	_, err = s.GetUser(c, "doctor")
	wantErr(t, "get deleted", err, store.ErrNotFound)
	wantErr(t, "delete missing", s.DeleteUser(c, "doctor"), store.ErrNotFound)
}

// --- groups ---

func testGroups(t *testing.T, s store.Store) {
	c := ctx(t)
	for _, u := range []string{"carol", "alice", "bob"} {
		must(t, s.CreateUser(c, user(u)))
	}
	nurses := store.Group{Name: "nurses", Members: []string{"carol", "alice"}, CreatedAt: at(4 * time.Minute)}
	must(t, s.CreateGroup(c, nurses))
	wantErr(t, "duplicate", s.CreateGroup(c, nurses), store.ErrAlreadyExists)

	got, err := s.GetGroup(c, "nurses")
	must(t, err)
	nurses.Members = []string{"alice", "carol"} // sorted
	equal(t, "GetGroup", got, nurses)

	// An unknown member fails the whole creation.
	wantErr(t, "group with unknown member", s.CreateGroup(c, store.Group{Name: "ghosts", Members: []string{"alice", "nobody"}}), store.ErrNotFound)
	_, err = s.GetGroup(c, "ghosts")
	wantErr(t, "group created despite failure", err, store.ErrNotFound)

	must(t, s.CreateGroup(c, store.Group{Name: "admins"}))
	must(t, s.AddMember(c, "admins", "bob"))
	must(t, s.AddMember(c, "admins", "alice"))
	wantErr(t, "add twice", s.AddMember(c, "admins", "bob"), store.ErrAlreadyExists)
	wantErr(t, "add unknown user", s.AddMember(c, "admins", "nobody"), store.ErrNotFound)
	wantErr(t, "add to unknown group", s.AddMember(c, "nobody", "bob"), store.ErrNotFound)

	list, err := s.ListGroups(c)
	must(t, err)
	wantNames(t, "ListGroups", names(list, func(g store.Group) string { return g.Name }), []string{"admins", "nurses"})
	wantNames(t, "admins members", list[0].Members, []string{"alice", "bob"})
	wantNames(t, "nurses members", list[1].Members, []string{"alice", "carol"})

	must(t, s.RemoveMember(c, "admins", "alice"))
	wantErr(t, "remove non-member", s.RemoveMember(c, "admins", "alice"), store.ErrNotFound)
	wantErr(t, "remove from unknown group", s.RemoveMember(c, "nobody", "bob"), store.ErrNotFound)
	got, err = s.GetGroup(c, "admins")
	must(t, err)
	wantNames(t, "admins after remove", got.Members, []string{"bob"})

	// Empty group.
	must(t, s.RemoveMember(c, "admins", "bob"))
	got, err = s.GetGroup(c, "admins")
	must(t, err)
	if len(got.Members) != 0 {
		t.Errorf("empty group members = %q", got.Members)
	}

	// A rule pins the group.
	must(t, s.CreateSegment(c, seg("clinical")))
	must(t, s.CreateApp(c, app("ehr", "clinical")))
	must(t, s.CreateRule(c, store.Rule{Name: "r", Group: "nurses", App: "ehr"}))
	wantErr(t, "delete group with rule", s.DeleteGroup(c, "nurses"), store.ErrInUse)
	must(t, s.DeleteRule(c, "r"))
	must(t, s.DeleteGroup(c, "nurses"))
	_, err = s.GetGroup(c, "nurses")
	wantErr(t, "get deleted", err, store.ErrNotFound)
	wantErr(t, "delete missing", s.DeleteGroup(c, "nurses"), store.ErrNotFound)

	// Re-creating the group does not resurrect old memberships.
	must(t, s.CreateGroup(c, store.Group{Name: "nurses"}))
	got, err = s.GetGroup(c, "nurses")
	must(t, err)
	if len(got.Members) != 0 {
		t.Errorf("recreated group has members %q", got.Members)
	}
	_, err = s.GetGroup(c, "nope")
	wantErr(t, "GetGroup missing", err, store.ErrNotFound)
}

// --- rules ---

func testRules(t *testing.T, s store.Store) {
	c := ctx(t)
	must(t, s.CreateSegment(c, seg("clinical")))
	must(t, s.CreateApp(c, app("ehr", "clinical")))
	must(t, s.CreateApp(c, app("pacs", "clinical")))
	must(t, s.CreateGroup(c, store.Group{Name: "nurses"}))

	wantErr(t, "rule for missing group", s.CreateRule(c, store.Rule{Name: "x", Group: "nobody", App: "ehr"}), store.ErrNotFound)
	wantErr(t, "rule for missing app", s.CreateRule(c, store.Rule{Name: "x", Group: "nurses", App: "nothing"}), store.ErrNotFound)

	r1 := store.Rule{Name: "nurses-pacs", Group: "nurses", App: "pacs", CreatedAt: at(5 * time.Minute)}
	r2 := store.Rule{Name: "nurses-ehr", Group: "nurses", App: "ehr", CreatedAt: at(6 * time.Minute)}
	must(t, s.CreateRule(c, r1))
	must(t, s.CreateRule(c, r2))
	wantErr(t, "duplicate", s.CreateRule(c, r1), store.ErrAlreadyExists)

	got, err := s.GetRule(c, "nurses-pacs")
	must(t, err)
	equal(t, "GetRule", got, r1)
	_, err = s.GetRule(c, "nope")
	wantErr(t, "GetRule missing", err, store.ErrNotFound)

	list, err := s.ListRules(c)
	must(t, err)
	equal(t, "ListRules", list, []store.Rule{r2, r1})

	must(t, s.DeleteRule(c, "nurses-pacs"))
	wantErr(t, "delete missing", s.DeleteRule(c, "nurses-pacs"), store.ErrNotFound)
	_, err = s.GetRule(c, "nurses-pacs")
	wantErr(t, "get deleted", err, store.ErrNotFound)
}
