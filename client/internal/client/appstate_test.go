package client

import (
	"context"
	"crypto/tls"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/cordonhq/cordon/client/internal/reach"
	"github.com/cordonhq/cordon/pkg/controlclient"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/wgdev"
)

// TestGetApps: the running tunnel answers GetApps over its local socket
// with tunnel.Explain's verdict for every app of its map.
func TestGetApps(t *testing.T) {
	wg, err := wgdev.New(tuntest.NewChannelTUN().TUN(), wgdev.Options{Name: "cordon-apps-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer wg.Close()
	tn := &tunnel{cc: controlclient.New(controlclient.Config{Addr: "127.0.0.1:1", TLS: &tls.Config{}}), fo: newFailover(nil), wg: wg}
	dir := t.TempDir()

	// No map yet: no apps.
	ln, err := listenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var served sync.WaitGroup
	served.Go(func() { serveLocal(ctx, ln, tn, func() {}) })
	defer served.Wait()
	defer cancel()
	if apps, err := GetApps(dir); err != nil || len(apps) != 0 {
		t.Fatalf("before the first map: %+v %v", apps, err)
	}

	// The control channel is down (never ran) and gw-b's probes failed:
	// the gateway is the more specific answer for pacs.
	tn.mu.Lock()
	tn.cm = &controlproto.ClientMap{
		Session: &controlproto.SessionInfo{State: controlproto.SessionActive, ExpiresAt: time.Now().Add(time.Hour)},
		Gateways: []controlproto.ClientGateway{
			{GatewayID: "gw-a", Apps: []controlproto.App{{Name: "ehr", DNSName: "ehr.hospital.internal.", Addr: netip.MustParsePrefix("10.20.0.5/32")}}},
			{GatewayID: "gw-b", Apps: []controlproto.App{{Name: "pacs", Addr: netip.MustParsePrefix("10.30.0.9/32")}}},
		},
	}
	tn.mu.Unlock()
	tn.fo.health["gw-b"] = &gwHealth{dead: true}
	apps, err := GetApps(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]reach.Reason{"ehr": reach.ReasonControlDown, "pacs": reach.ReasonGatewayUnreachable}
	if len(apps) != len(want) {
		t.Fatalf("apps %+v, want %d", apps, len(want))
	}
	for _, a := range apps {
		v := reach.For(want[a.App.Name])
		if a.Reason != v.Reason.String() || a.Detail != v.Detail || a.Next != v.Next {
			t.Errorf("%s: %+v, want %+v", a.App.Name, a, v)
		}
	}

	// The session ended by an administrator: every app says so.
	tn.mu.Lock()
	tn.cm.Session = &controlproto.SessionInfo{State: controlproto.SessionEnded, Reason: "admin"}
	tn.mu.Unlock()
	apps, err = GetApps(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range apps {
		if a.Reason != reach.ReasonSessionEnded.String() || a.Detail != "an administrator ended your session" {
			t.Errorf("%s after the admin ended the session: %+v", a.App.Name, a)
		}
	}
}
