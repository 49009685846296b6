package client

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/cordonhq/cordon/client/internal/reach"
	"github.com/cordonhq/cordon/pkg/agentstate"
	"github.com/cordonhq/cordon/pkg/controlclient"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/wgdev"
)

// TestStatusVerdicts: the running tunnel's status over its local socket
// carries the reach classifier's verdict for every app of its map (what
// 'cordon status' and the status page show).
func TestStatusVerdicts(t *testing.T) {
	wg, err := wgdev.New(tuntest.NewChannelTUN().TUN(), wgdev.Options{Name: "cordon-apps-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer wg.Close()
	tn := &tunnel{cc: controlclient.New(controlclient.Config{Addr: "127.0.0.1:1", TLS: &tls.Config{}}), fo: newFailover(nil), wg: wg,
		st: &agentstate.State{Enrollment: agentstate.Enrollment{ID: "dev-1", User: "nurse"}}, paths: newPaths(nil, slog.Default())}
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
	if apps, err := statusApps(dir); err != nil || len(apps) != 0 {
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
	apps, err := statusApps(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]reach.Reason{"ehr": reach.ReasonControlDown, "pacs": reach.ReasonGatewayUnreachable}
	if len(apps) != len(want) {
		t.Fatalf("apps %+v, want %d", apps, len(want))
	}
	for _, a := range apps {
		if v := reach.For(want[a.Name]); a.State != v {
			t.Errorf("%s: %+v, want %+v", a.Name, a.State, v)
		}
	}

	// The session ended by an administrator: every app says so.
	tn.mu.Lock()
	tn.cm.Session = &controlproto.SessionInfo{State: controlproto.SessionEnded, Reason: "admin"}
	tn.mu.Unlock()
	apps, err = statusApps(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range apps {
		if a.State.Reason != reach.ReasonSessionEnded || a.State.Detail != "an administrator ended your session" {
			t.Errorf("%s after the admin ended the session: %+v", a.Name, a.State)
		}
	}
}

// statusApps is every app of the running tunnel's status.
func statusApps(dir string) ([]AppStatus, error) {
	st, err := GetStatus(dir)
	if err != nil {
		return nil, err
	}
	var out []AppStatus
	for _, g := range st.Gateways {
		out = append(out, g.Apps...)
	}
	return out, nil
}
