package client

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cordonhq/cordon/client/internal/dnsstub"
	"github.com/cordonhq/cordon/client/internal/pathsel"
	"github.com/cordonhq/cordon/internal/metricshttp/metricstest"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/wgdev"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// --metrics-listen takes loopback addresses only.
func TestListenMetricsLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "10.0.0.1:9469", "example.com:9469", "127.0.0.1"} {
		if ln, err := listenMetrics(addr); err == nil {
			ln.Close()
			t.Errorf("listenMetrics(%q) succeeded, want a refusal", addr)
		} else if !strings.Contains(err.Error(), "--metrics-listen") {
			t.Errorf("listenMetrics(%q): %v, want an error naming the flag", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		ln, err := listenMetrics(addr)
		if err != nil {
			t.Errorf("listenMetrics(%q): %v", addr, err)
			continue
		}
		ln.Close()
	}
}

func testSources(now time.Time, m *controlproto.ClientMap, peers []wgdev.PeerStatus) metricsSources {
	return metricsSources{
		connected: func() bool { return true },
		dns:       func() dnsstub.Stats { return dnsstub.Stats{Answer: 3, NXDomain: 2} },
		view:      func() *controlproto.ClientMap { return m },
		peers:     func() ([]wgdev.PeerStatus, error) { return peers, nil },
		now:       func() time.Time { return now },
		paths:     func() map[string]pathsel.Path { return map[string]pathsel.Path{"gw-2": pathsel.TCP} },
		switches:  func() (uint64, uint64) { return 1, 2 },
	}
}

// gathered is every series of reg as name{,label=value...} → value.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				vals[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				vals[key] = m.GetGauge().GetValue()
			}
		}
	}
	return vals
}

// The client's metrics follow the applied map and the WireGuard device,
// by the injected clock.
func TestMetricsValues(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	k1, k2 := newPublic(t), newPublic(t)
	m := &controlproto.ClientMap{
		Gateways: []controlproto.ClientGateway{
			{GatewayID: "gw-1", PublicKey: k1, Apps: []controlproto.App{{Name: "ehr"}, {Name: "pacs"}}},
			{GatewayID: "gw-2", PublicKey: k2, Apps: []controlproto.App{{Name: "lab"}}},
		},
		Session: &controlproto.SessionInfo{ExpiresAt: now.Add(90 * time.Minute),
			StepUp:  []controlproto.StepUp{{App: "pharmacy"}},
			Posture: []controlproto.PostureFinding{{Check: "disk", Apps: []string{"a", "b"}}, {Check: "fw", Apps: []string{"b"}}}},
	}
	peers := []wgdev.PeerStatus{
		{PublicKey: k1, LastHandshake: now.Add(-30 * time.Second), RxBytes: 500, TxBytes: 200},
		{PublicKey: k2}, // never handshaken
	}
	vals := gathered(t, metricsRegistry(testSources(now, m, peers)))
	for key, v := range map[string]float64{
		"cordon_client_tunnel_up":                                     1,
		"cordon_client_apps,state=reachable":                          3,
		"cordon_client_apps,state=step_up":                            1,
		"cordon_client_apps,state=posture":                            2,
		"cordon_client_apps,state=no_mfa":                             0,
		"cordon_client_gateway_handshake_age_seconds,gateway=gw-1":    30,
		"cordon_client_gateway_bytes_total,direction=rx,gateway=gw-1": 500,
		"cordon_client_gateway_bytes_total,direction=tx,gateway=gw-2": 0,
		"cordon_client_session_seconds_left":                          5400,
		"cordon_client_dns_answers_total,kind=answer":                 3,
		"cordon_client_dns_answers_total,kind=nxdomain":               2,
		"cordon_client_control_connected":                             1,
		"cordon_client_gateway_path,gateway=gw-1,path=udp":            1,
		"cordon_client_gateway_path,gateway=gw-2,path=tcp":            1,
		"cordon_client_path_switches_total,to=udp":                    1,
		"cordon_client_path_switches_total,to=tcp":                    2,
	} {
		if got, ok := vals[key]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", key, got, ok, v)
		}
	}
	if _, ok := vals["cordon_client_gateway_handshake_age_seconds,gateway=gw-2"]; ok {
		t.Error("handshake age of a gateway never handshaken is served")
	}
	// Before the first map: tunnel down, no session.
	vals = gathered(t, metricsRegistry(testSources(now, nil, nil)))
	if vals["cordon_client_tunnel_up"] != 0 {
		t.Error("tunnel up without a map")
	}
	if _, ok := vals["cordon_client_session_seconds_left"]; ok {
		t.Error("session time left served without a session")
	}
}

// The alert rules and the dashboard under deploy/ name only metrics the
// client serves.
func TestDeployedRulesAndDashboardNameServedMetrics(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	k := newPublic(t)
	m := &controlproto.ClientMap{Gateways: []controlproto.ClientGateway{{GatewayID: "gw-1", PublicKey: k}},
		Session: &controlproto.SessionInfo{ExpiresAt: now.Add(time.Hour)}}
	reg := metricsRegistry(testSources(now, m, []wgdev.PeerStatus{{PublicKey: k, LastHandshake: now}}))
	deploy := filepath.Join("..", "..", "..", "deploy")
	metricstest.CheckDeployed(t, metricstest.Served(t, reg),
		filepath.Join(deploy, "prometheus", "cordon-client-alerts.yaml"), filepath.Join(deploy, "grafana", "cordon-client.json"))
}

func newPublic(t *testing.T) wgkey.Public {
	t.Helper()
	k, err := wgkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}
