package cluster

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// world is a controller's view of a cluster and in-process gateways on
// loopback: it issues keys and lists members as the controller would.
type world struct {
	t     testing.TB
	ctl   *ecdsa.PrivateKey
	clock *clock
	name  string
	nodes []*node
}

type node struct {
	id       string
	key      *ecdsa.PrivateKey
	c        *Cluster
	notices  chan controlproto.RevocationNotice
	activity chan []controlproto.DeviceActivity
}

// clock is an injected clock tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newWorld(t testing.TB) *world {
	// Noon of some day: far from an epoch boundary.
	start := time.Unix(int64(controlproto.Epoch(time.Now()))*int64(controlproto.EpochLength/time.Second), 0).Add(12 * time.Hour)
	return &world{t: t, ctl: newKey(t), clock: &clock{t: start}, name: "icu"}
}

func logger(t testing.TB) *slog.Logger {
	if testing.Verbose() && os.Getenv("CLUSTER_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// add starts a node (not yet in any view).
func (w *world) add(id string, clk func() time.Time) *node {
	w.t.Helper()
	if clk == nil {
		clk = w.clock.Now
	}
	n := &node{id: id, key: newKey(w.t), notices: make(chan controlproto.RevocationNotice, 16),
		activity: make(chan []controlproto.DeviceActivity, 16)}
	c, err := New(Config{Name: id, Listen: netip.MustParseAddrPort("127.0.0.1:0"), Key: n.key,
		Controller: &w.ctl.PublicKey, Now: clk, Logger: logger(w.t).With("node", id),
		OnNotice:   func(r controlproto.RevocationNotice) { n.notices <- r },
		OnActivity: func(_ string, d []controlproto.DeviceActivity) { n.activity <- d }})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { c.Close() })
	n.c = c
	w.nodes = append(w.nodes, n)
	return n
}

// gossipKey derives the test key of an epoch.
func gossipKey(secret string, epoch uint64) []byte {
	k := bytes.Repeat([]byte{0}, gossipKeyLen)
	copy(k, fmt.Sprintf("%s-%d", secret, epoch))
	return k
}

// view is the cluster listing members, with keys of the epochs around
// the world clock's.
func (w *world) view(secret string, members ...*node) *controlproto.GatewayCluster {
	e := controlproto.Epoch(w.clock.Now())
	v := &controlproto.GatewayCluster{Name: w.name}
	for _, ep := range []uint64{e - 1, e, e + 1} {
		v.Keys = append(v.Keys, controlproto.ClusterKey{Epoch: ep, Key: gossipKey(secret, ep)})
	}
	for _, m := range members {
		der, err := x509.MarshalPKIXPublicKey(&m.key.PublicKey)
		if err != nil {
			w.t.Fatal(err)
		}
		v.Members = append(v.Members, controlproto.ClusterMember{GatewayID: m.id, Addr: m.c.Addr(), CertKey: der})
	}
	return v
}

func (w *world) update(v *controlproto.GatewayCluster, nodes ...*node) {
	w.t.Helper()
	for _, n := range nodes {
		if err := n.c.Update(v); err != nil {
			w.t.Fatalf("%s: update: %v", n.id, err)
		}
	}
}

// states is what n sees of the others.
func states(n *node) map[string]string {
	out := map[string]string{}
	for _, m := range n.c.Members() {
		out[m.GatewayID] = m.State
	}
	return out
}

// waitFor polls cond until it holds or d passes, and returns how long it
// took.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// allSee reports whether each of from sees each of want in state.
func allSee(from []*node, state string, want ...*node) bool {
	for _, n := range from {
		s := states(n)
		for _, m := range want {
			if m != n && s[m.id] != state {
				return false
			}
		}
	}
	return true
}

func (w *world) form(n int) []*node {
	w.t.Helper()
	var nodes []*node
	for i := range n {
		nodes = append(nodes, w.add(fmt.Sprintf("gw%02d", i), nil))
	}
	w.update(w.view("s1", nodes...), nodes...)
	waitFor(w.t, 30*time.Second, "cluster converges", func() bool { return allSee(nodes, controlproto.MemberAlive, nodes...) })
	return nodes
}

func TestConverge(t *testing.T) {
	w := newWorld(t)
	nodes := w.form(3)
	// (Packets may be filtered: a node drops a member's packets until its
	// own first Update lists that member.)
	for _, n := range nodes {
		if st := n.c.Stats(); st.Refused != 0 {
			t.Errorf("%s refused listed members: %+v", n.id, st)
		}
	}
}

// A member killed without a goodbye is declared dead by the others.
func TestDeadDetection(t *testing.T) {
	w := newWorld(t)
	nodes := w.form(3)
	nodes[2].c.Close()
	took := waitFor(t, 5*time.Second, "dead member seen dead", func() bool { return allSee(nodes[:2], controlproto.MemberDead, nodes[2]) })
	t.Logf("dead detection: %v", took)
	// Both survivors still see each other alive.
	if !allSee(nodes[:2], controlproto.MemberAlive, nodes[:2]...) {
		t.Error("survivors do not see each other alive")
	}
}

// A node with a key the controller did not issue cannot join.
func TestWrongKeyRefused(t *testing.T) {
	w := newWorld(t)
	nodes := w.form(2)
	x := w.add("gw-x", nil)
	listed := append(slices.Clone(nodes), x)
	w.update(w.view("s1", listed...), nodes...)
	w.update(w.view("other-secret", listed...), x) // listed, wrong key
	time.Sleep(time.Second)                        // nothing to wait for: prove it stays out
	if s := states(nodes[0]); s["gw-x"] != controlproto.MemberDead {
		t.Errorf("node with the wrong gossip key is %s to gw00, want dead", s["gw-x"])
	}
	if s := states(x); s["gw00"] != controlproto.MemberDead {
		t.Errorf("gw00 is %s to the node with the wrong key, want dead", s["gw00"])
	}
}

// A node with the gossip key but no enrollment (the controller does not
// list it) is refused, also when it tries to join a member directly.
func TestKeyWithoutEnrollmentRefused(t *testing.T) {
	w := newWorld(t)
	nodes := w.form(2)
	x := w.add("gw-x", nil)
	// x has the keys and believes it is listed; the members do not list
	// it. (Its own join "succeeds" on its side: a member answers a
	// push/pull with its state before it judges the asker's.)
	w.update(w.view("s1", append(slices.Clone(nodes), x)...), x)
	x.c.ml.Load().Join([]string{nodes[0].c.Addr().String()})
	time.Sleep(time.Second) // nothing to wait for: prove it stays out
	for _, n := range nodes {
		if slices.ContainsFunc(n.c.ml.Load().Members(), func(m *memberlist.Node) bool { return m.Name == "gw-x" }) {
			t.Errorf("%s has the unlisted node among its members", n.id)
		}
	}
	if st := nodes[0].c.Stats(); st.Refused == 0 || st.FilteredPackets == 0 {
		t.Errorf("gw00 did not count the unlisted node's merge and packets: %+v", st)
	}

	// An impostor naming itself as a listed member, from another
	// address, with its own key: refused too.
	imp := w.add("gw01", nil)
	w.update(w.view("s1", nodes[0], imp), imp)
	before := nodes[0].c.Stats().Refused
	imp.c.ml.Load().Join([]string{nodes[0].c.Addr().String()})
	time.Sleep(500 * time.Millisecond)
	if got := nodeNamed(t, nodes[0], "gw01"); addrPortOf(got.Addr, got.Port) != nodes[1].c.Addr() {
		t.Errorf("gw00 sees gw01 at %v, the impostor's address", addrPortOf(got.Addr, got.Port))
	}
	if nodes[0].c.Stats().Refused == before {
		t.Error("the impostor's merge was not refused")
	}
	if !allSee(nodes, controlproto.MemberAlive, nodes...) {
		t.Error("the impostor disturbed the listed members")
	}
}

// A member the controller stops listing is expelled: the others see it
// dead, and it cannot come back.
func TestRevokedExpelled(t *testing.T) {
	w := newWorld(t)
	nodes := w.form(3)
	w.update(w.view("s1", nodes[:2]...), nodes[:2]...)
	took := waitFor(t, 5*time.Second, "revoked member expelled", func() bool {
		for _, n := range nodes[:2] {
			for _, m := range n.c.ml.Load().Members() {
				if m.Name == nodes[2].id {
					return false
				}
			}
		}
		return true
	})
	t.Logf("expelled in %v", took)
	// It still has the key and keeps trying to join: it stays out.
	time.Sleep(joinEvery + 500*time.Millisecond)
	for _, n := range nodes[:2] {
		for _, m := range n.c.ml.Load().Members() {
			if m.Name == nodes[2].id {
				t.Errorf("%s took the revoked member back (%v)", n.id, m.State)
			}
		}
	}
}

// Keys rotate across an epoch boundary without splitting the cluster:
// one node crosses first (its clock runs ahead), then the controller
// issues the next epochs' keys to all.
func TestKeyRotation(t *testing.T) {
	w := newWorld(t)
	// A minute before the epoch ends.
	e := controlproto.Epoch(w.clock.Now())
	w.clock.Add(12*time.Hour - time.Minute)
	var ahead atomic.Int64
	early := func() time.Time { return w.clock.Now().Add(time.Duration(ahead.Load())) }
	a, b := w.add("gw-a", early), w.add("gw-b", nil)
	nodes := []*node{a, b}
	w.update(w.view("s1", nodes...), nodes...)
	waitFor(t, 10*time.Second, "converge", func() bool { return allSee(nodes, controlproto.MemberAlive, nodes...) })

	// a's clock passes the boundary: it encrypts with the next key.
	ahead.Store(int64(2 * time.Minute))
	a.c.refresh()
	if got := a.c.keyring.GetPrimaryKey(); !bytes.Equal(got, gossipKey("s1", e+1)) {
		t.Fatal("a did not move to the next epoch's key")
	}
	sendNotice(t, w, a, "n1")
	recv(t, b.notices, "n1")

	// The day passes for everyone; the controller issues the keys around
	// the new epoch (the oldest one dropped).
	ahead.Store(0)
	w.clock.Add(2 * time.Minute)
	w.update(w.view("s1", nodes...), nodes...)
	b.c.refresh()
	for _, n := range nodes {
		if got := n.c.keyring.GetPrimaryKey(); !bytes.Equal(got, gossipKey("s1", e+1)) {
			t.Fatalf("%s: primary key is not epoch %d's", n.id, e+1)
		}
		if len(n.c.keyring.GetKeys()) != 3 {
			t.Errorf("%s holds %d keys, want 3", n.id, len(n.c.keyring.GetKeys()))
		}
	}
	sendNotice(t, w, b, "n2")
	recv(t, a.notices, "n2")
	if !allSee(nodes, controlproto.MemberAlive, nodes...) {
		t.Error("the rotation split the cluster")
	}
}

func sendNotice(t *testing.T, w *world, from *node, id string) {
	t.Helper()
	r, err := controlproto.SignRevocation(w.ctl, controlproto.RevocationNotice{ID: id, DeviceID: "dev-" + id, IssuedAt: w.clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := from.c.Revoke(r); err != nil {
		t.Fatal(err)
	}
	recv(t, from.notices, id) // acted on where it arrived
}

func recv(t *testing.T, ch chan controlproto.RevocationNotice, id string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		select {
		case n := <-ch:
			if n.ID == id {
				return time.Since(start)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("notice %s not received", id)
		}
	}
}

// A notice reaches every member once; one not signed by the controller
// is refused by the member it is handed to and never gossiped.
func TestRevocationGossip(t *testing.T) {
	w := newWorld(t)
	nodes := w.form(3)
	sendNotice(t, w, nodes[0], "n1")
	for _, n := range nodes[1:] {
		took := recv(t, n.notices, "n1")
		t.Logf("%s got the notice in %v", n.id, took)
	}

	forger := newKey(t)
	r, err := controlproto.SignRevocation(forger, controlproto.RevocationNotice{ID: "f1", DeviceID: "dev-x", IssuedAt: w.clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].c.Revoke(r); err == nil {
		t.Error("a forged notice was taken")
	}
	// Gossiped straight into the cluster by a member (as a compromised
	// member would): every receiver refuses it.
	msg := append([]byte{msgNotice}, mustJSON(t, r)...)
	for _, n := range nodes[1:] {
		if err := nodes[0].c.ml.Load().SendReliable(nodeNamed(t, nodes[0], n.id), msg); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "forged notice counted", func() bool {
		return nodes[1].c.Stats().BadNotices > 0 && nodes[2].c.Stats().BadNotices > 0
	})
	for _, n := range nodes {
		select {
		case got := <-n.notices:
			t.Errorf("%s acted on %+v", n.id, got)
		default:
		}
	}
	// The same valid notice again: acted on once only.
	sendNotice2 := func() {
		r, _ := controlproto.SignRevocation(w.ctl, controlproto.RevocationNotice{ID: "n1", DeviceID: "dev-n1", IssuedAt: w.clock.Now()})
		nodes[1].c.Revoke(r)
	}
	sendNotice2()
	select {
	case got := <-nodes[1].notices:
		t.Errorf("a notice seen before was acted on again: %+v", got)
	case <-time.After(200 * time.Millisecond):
	}
}

// Activity reports reach the others, signed; a replay is refused.
func TestActivity(t *testing.T) {
	w := newWorld(t)
	nodes := w.form(3)
	devs := []controlproto.DeviceActivity{{DeviceID: "dev1", Idle: 3 * time.Second}}
	if err := nodes[0].c.SendActivity(devs); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[1:] {
		select {
		case got := <-n.activity:
			if len(got) != 1 || got[0] != devs[0] {
				t.Errorf("%s got %+v", n.id, got)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s got no activity", n.id)
		}
	}
	// The same clock reading again (a replay of the report): refused.
	if err := nodes[0].c.SendActivity(devs); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "replayed activity refused", func() bool { return nodes[1].c.Stats().BadActivity > 0 })
	select {
	case got := <-nodes[1].activity:
		t.Errorf("replayed report taken: %+v", got)
	default:
	}
}

// Garbage in the cluster's messages is counted and dropped, never a
// panic.
func TestBadMessages(t *testing.T) {
	w := newWorld(t)
	n := w.add("gw00", nil)
	w.update(w.view("s1", n), n)
	d := (*delegate)(n.c)
	for _, b := range [][]byte{nil, {msgNotice}, {msgNotice, '{'}, {msgActivity}, {msgActivity, 0, 0, 0, 200, 1}, {'z', 1}} {
		d.NotifyMsg(b)
	}
	if st := n.c.Stats(); st.BadNotices != 2 || st.BadActivity != 3 {
		t.Errorf("stats %+v, want 2 bad notices and 3 bad activity messages", st)
	}
}

func FuzzNotifyMsg(f *testing.F) {
	w := newWorld(f)
	n := w.add("gw00", nil)
	w.update(w.view("s1", n), n)
	f.Add([]byte{msgNotice, '{', '}'})
	f.Add([]byte{msgActivity, 0, 0, 0, 2, '{', '}', 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, b []byte) {
		(*delegate)(n.c).NotifyMsg(b)
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func nodeNamed(t *testing.T, from *node, id string) *memberlist.Node {
	t.Helper()
	for _, m := range from.c.ml.Load().Members() {
		if m.Name == id {
			return m
		}
	}
	t.Fatalf("%s does not know %s", from.id, id)
	return nil
}
