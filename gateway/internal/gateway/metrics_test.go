package gateway

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/gateway/internal/cluster"
	"github.com/cordonhq/cordon/gateway/internal/dns"
	"github.com/cordonhq/cordon/gateway/internal/flow"
	"github.com/cordonhq/cordon/gateway/internal/spool"
	"github.com/cordonhq/cordon/gateway/internal/tlsport"
	"github.com/cordonhq/cordon/internal/metricshttp/metricstest"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/wgdev"
)

func testSources(peers func() ([]wgdev.PeerStatus, error)) metricsSources {
	now := time.Unix(1_000_000, 0)
	return metricsSources{
		flow:       func() flow.Stats { return flow.Stats{FlowsOpened: 3, PacketsDenied: 2, FlowsOpen: 1} },
		dns:        func() dns.Stats { return dns.Stats{Answered: 5, NXDomain: 4} },
		spool:      func() spool.Stats { return spool.Stats{Bytes: 10, MaxBytes: 100, Full: true} },
		connected:  func() bool { return true },
		validUntil: func() time.Time { return now.Add(time.Hour) },
		peers:      peers,
		now:        func() time.Time { return now },
		decision:   newDecisionHistogram(),
		tcp: func() (tlsport.Stats, uint64) {
			return tlsport.Stats{Accepted: 6, Open: 2, RefusedSource: 1, HandshakeFailed: 3}, 4
		},
	}
}

// The gateway's metrics carry the values of the counters they read, and
// the peers collector counts active peers by the injected clock.
func TestMetricsValues(t *testing.T) {
	src := testSources(nil)
	now := src.now()
	src.peers = func() ([]wgdev.PeerStatus, error) {
		return []wgdev.PeerStatus{
			{LastHandshake: now.Add(-time.Minute), RxBytes: 100, TxBytes: 7},
			{LastHandshake: now.Add(-time.Hour), RxBytes: 1, TxBytes: 1},
			{},
		}, nil
	}
	reg := metricsRegistry(src)
	got, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]float64{}
	for _, f := range got {
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
	for key, v := range map[string]float64{
		"cordon_gateway_flows_total,verdict=allowed":                   3,
		"cordon_gateway_packets_total,direction=to_app,verdict=denied": 2,
		"cordon_gateway_dns_queries_total,kind=answer":                 5,
		"cordon_gateway_dns_queries_total,kind=nxdomain":               4,
		"cordon_gateway_wireguard_bytes,direction=rx":                  101,
		"cordon_gateway_control_connected":                             1,
		"cordon_gateway_flows_open":                                    1,
		"cordon_gateway_peers":                                         3,
		"cordon_gateway_peers_active":                                  1,
		"cordon_gateway_spool_full":                                    1,
		"cordon_gateway_map_valid_until_timestamp_seconds":             float64(now.Add(time.Hour).Unix()),
		"cordon_gateway_tcp_streams_open":                              2,
		"cordon_gateway_tcp_streams_total":                             6,
		"cordon_gateway_tcp_refused_total,reason=source":               1,
		"cordon_gateway_tcp_refused_total,reason=handshake":            3,
		"cordon_gateway_tcp_frames_dropped_total":                      4,
	} {
		if vals[key] != v {
			t.Errorf("%s = %v, want %v", key, vals[key], v)
		}
	}
}

// A gateway in a cluster serves the cluster's counters and its members by
// state; one in none serves no cluster metrics.
func TestClusterMetrics(t *testing.T) {
	src := testSources(func() ([]wgdev.PeerStatus, error) { return nil, nil })
	if served := metricstest.Served(t, metricsRegistry(src)); served["cordon_gateway_cluster_members"] {
		t.Error("cluster metrics without a cluster")
	}
	src.cluster = func() cluster.Stats {
		return cluster.Stats{Refused: 2, BadNotices: 1, Notices: 4, PacketBytesSent: 100}
	}
	src.members = func() []controlproto.ClusterMemberState {
		return []controlproto.ClusterMemberState{{GatewayID: "a", State: "alive"}, {GatewayID: "b", State: "dead"}, {GatewayID: "c", State: "dead"}}
	}
	got, err := metricsRegistry(src).Gather()
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]float64{}
	for _, f := range got {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			vals[key] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	for key, v := range map[string]float64{
		"cordon_gateway_cluster_members,state=alive":             1,
		"cordon_gateway_cluster_members,state=dead":              2,
		"cordon_gateway_cluster_members,state=suspect":           0,
		"cordon_gateway_cluster_refused_total,what=member":       2,
		"cordon_gateway_cluster_refused_total,what=notice":       1,
		"cordon_gateway_cluster_notices_total":                   4,
		"cordon_gateway_cluster_gossip_bytes_total,direction=tx": 100,
	} {
		if vals[key] != v {
			t.Errorf("%s = %v, want %v", key, vals[key], v)
		}
	}
}

// A WireGuard device that cannot be read fails the scrape's peer metrics
// with an error, not a panic or a zero.
func TestMetricsPeersError(t *testing.T) {
	reg := metricsRegistry(testSources(func() ([]wgdev.PeerStatus, error) { return nil, errors.New("device gone") }))
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "device gone") {
		t.Errorf("Gather with an unreadable device: %v, want its error", err)
	}
}

// The alert rules and the dashboard under deploy/ name only metrics the
// gateway serves.
func TestDeployedRulesAndDashboardNameServedMetrics(t *testing.T) {
	reg := metricsRegistry(testSources(func() ([]wgdev.PeerStatus, error) { return nil, nil }))
	deploy := filepath.Join("..", "..", "..", "deploy")
	metricstest.CheckDeployed(t, metricstest.Served(t, reg),
		filepath.Join(deploy, "prometheus", "cordon-gateway-alerts.yaml"), filepath.Join(deploy, "grafana", "cordon-gateway.json"))
}
