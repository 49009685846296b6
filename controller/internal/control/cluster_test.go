package control_test

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/control"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// The gateways of a segment that gossip get their cluster in their maps:
// the keys around now and every member with its address and certificate
// key; a gateway without a cluster address is in no cluster. A device that
// leaves their maps is announced to them in a revocation notice signed by
// the CA, before the map. Peers that see a member dead make it dead for
// the controller at once, while its connection still looks open.
func TestGatewayClusterMaps(t *testing.T) {
	clock := &fakeClock{}
	clock.ns.Store(time.Now().UnixNano())
	h := newHarness(t, func(c *control.Config) { c.Now = clock.now })
	h.world(t)
	h.enrollDevice(t, "dev-nurse", "nurse")
	ids := []string{"gw-a", "gw-b", "gw-c"}
	addrs := map[string]netip.AddrPort{"gw-a": netip.MustParseAddrPort("10.9.0.1:7946"), "gw-b": netip.MustParseAddrPort("10.9.0.2:7946")}
	gws := map[string]*runningAgent{}
	for _, id := range ids {
		_, tc := h.enrollGateway(t, id, "lan")
		gws[id] = h.start(t, id, tc, controlproto.Hello{Kind: controlproto.KindGateway, Endpoint: gwEndpoint, ClusterAddr: addrs[id]})
	}
	// Within the grace period after the controller started, no clusters:
	// the gateways that reconnected first would expel the others.
	i, _ := gws["gw-a"].waitFrame(t, 0, "a first map", func(f *controlproto.Frame) bool { return f.Type == controlproto.TypeGatewayMap })
	h.recomputed(t)
	for _, r := range gws["gw-a"].framesFrom(i) {
		if r.f.GatewayMap != nil && r.f.GatewayMap.Cluster != nil {
			t.Fatal("a cluster within the grace period after the start")
		}
	}
	clock.advance(control.DefaultGatewayGrace + time.Second)
	clustered := func(n int) func(*controlproto.Frame) bool {
		return func(f *controlproto.Frame) bool {
			return f.Type == controlproto.TypeGatewayMap && f.GatewayMap.Cluster != nil && len(f.GatewayMap.Cluster.Members) == n
		}
	}
	_, got := gws["gw-a"].waitFrame(t, 0, "map with a cluster of two", clustered(2))
	c := got.f.GatewayMap.Cluster
	if c.Name != "lan" || len(c.Keys) != 3 || c.Keys[1].Epoch != controlproto.Epoch(time.Now()) {
		t.Fatalf("cluster %+v: want lan with the keys of the epochs around now", c)
	}
	for i, m := range c.Members {
		if m.GatewayID != ids[i] || m.Addr != addrs[ids[i]] {
			t.Errorf("member %d: %s at %v, want %s at %v", i, m.GatewayID, m.Addr, ids[i], addrs[ids[i]])
		}
		if _, err := x509.ParsePKIXPublicKey(m.CertKey); err != nil {
			t.Errorf("member %s: certificate key: %v", m.GatewayID, err)
		}
	}
	gws["gw-b"].waitFrame(t, 0, "gw-b's map with the same cluster", clustered(2))
	i, _ = gws["gw-c"].waitFrame(t, 0, "gw-c's map", func(f *controlproto.Frame) bool { return f.Type == controlproto.TypeGatewayMap })
	for _, r := range gws["gw-c"].framesFrom(i) {
		if r.f.GatewayMap != nil && r.f.GatewayMap.Cluster != nil {
			t.Fatal("a gateway without a cluster address got a cluster")
		}
	}

	// The nurse's device is revoked: gw-a gets a signed notice for it,
	// then its map without it.
	from := gws["gw-a"].count()
	if _, err := h.store.RevokeDevice(h.ctx, "dev-nurse", time.Now()); err != nil {
		t.Fatal(err)
	}
	h.srv.Changed(store.Change{Devices: []string{"dev-nurse"}})
	ni, notice := gws["gw-a"].waitFrame(t, from, "revocation notice", func(f *controlproto.Frame) bool { return f.Type == controlproto.TypeRevocation })
	blk, _ := pem.Decode(h.ca.CertPEM())
	caCert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	n, err := controlproto.VerifyRevocation(caCert.PublicKey.(*ecdsa.PublicKey), notice.f.Revocation, time.Now())
	if err != nil || n.DeviceID != "dev-nurse" {
		t.Fatalf("notice %+v: %v; want one for dev-nurse signed by the CA", n, err)
	}
	gws["gw-a"].waitFrame(t, ni, "map without the revoked device", func(f *controlproto.Frame) bool {
		return f.Type == controlproto.TypeGatewayMap && !isPeer(f.GatewayMap, "dev-nurse")
	})

	// gw-b alone sees gw-a dead: gw-a is up (one of one reporting is a
	// majority) ...
	if st := h.srv.GatewayStatus("gw-a"); st.State != control.GatewayUp {
		t.Fatalf("gw-a is %s before anyone reported it, want up", st.State)
	}
	gws["gw-b"].cc.Send(&controlproto.Frame{Type: controlproto.TypeActivity, Activity: &controlproto.Activity{
		Cluster: []controlproto.ClusterMemberState{{GatewayID: "gw-a", State: controlproto.MemberDead}}}})
	waitUntil(t, "gw-a dead as its peer sees it", func() bool { return h.srv.GatewayStatus("gw-a").State == control.GatewayDead })
	// ... and alive again when it sees it alive.
	gws["gw-b"].cc.Send(&controlproto.Frame{Type: controlproto.TypeActivity, Activity: &controlproto.Activity{
		Cluster: []controlproto.ClusterMemberState{{GatewayID: "gw-a", State: controlproto.MemberAlive}}}})
	waitUntil(t, "gw-a up again", func() bool { return h.srv.GatewayStatus("gw-a").State == control.GatewayUp })
	// A reporter that disconnects no longer counts.
	gws["gw-b"].cc.Send(&controlproto.Frame{Type: controlproto.TypeActivity, Activity: &controlproto.Activity{
		Cluster: []controlproto.ClusterMemberState{{GatewayID: "gw-a", State: controlproto.MemberDead}}}})
	waitUntil(t, "gw-a dead again", func() bool { return h.srv.GatewayStatus("gw-a").State == control.GatewayDead })
	gws["gw-b"].stop()
	waitUntil(t, "gw-a up once its only accuser left", func() bool { return h.srv.GatewayStatus("gw-a").State == control.GatewayUp })
}

// framesFrom returns the frames received at index >= from.
func (a *runningAgent) framesFrom(from int) []received {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]received(nil), a.frames[from:]...)
}
