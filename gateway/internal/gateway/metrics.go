package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cordonhq/cordon/gateway/internal/cluster"
	"github.com/cordonhq/cordon/gateway/internal/dns"
	"github.com/cordonhq/cordon/gateway/internal/flow"
	"github.com/cordonhq/cordon/gateway/internal/spool"
	"github.com/cordonhq/cordon/gateway/internal/tlsport"
	"github.com/cordonhq/cordon/internal/metricshttp"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/wgdev"
)

// metricsRegistry is the gateway's Prometheus metrics (names in
// docs/operations.md). Every value is read when scraped from the counters
// the authorizer, the DNS server, the spool and the WireGuard device
// already keep, so the packet path does no extra work for them.
func (g *gw) metricsRegistry(connected func() bool, decision prometheus.Histogram, tcp *tcpPath) *prometheus.Registry {
	src := metricsSources{flow: g.authz.Stats, dns: g.dns.Stats, spool: g.flows.sp.Stats, connected: connected,
		validUntil: g.mapValidUntil, peers: g.wg.Status, now: g.now, decision: decision, tcp: tcp.stats}
	if g.cluster != nil {
		src.cluster, src.members = g.cluster.Stats, g.cluster.Members
	}
	return metricsRegistry(src)
}

// metricsSources are where the gateway's metrics are read from at scrape
// time.
type metricsSources struct {
	flow       func() flow.Stats
	dns        func() dns.Stats
	spool      func() spool.Stats
	connected  func() bool
	validUntil func() time.Time // zero: no map
	peers      func() ([]wgdev.PeerStatus, error)
	now        func() time.Time
	decision   prometheus.Histogram // newDecisionHistogram
	// cluster and members are the gateway cluster's counters and members
	// (nil without --cluster-listen: no cluster metrics).
	cluster func() cluster.Stats
	members func() []controlproto.ClusterMemberState
	tcp     func() (tlsport.Stats, uint64)
}

// mapValidUntil is when the map in effect stops granting anything (zero:
// no map).
func (g *gw) mapValidUntil() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cur == nil {
		return time.Time{}
	}
	return g.validUntil
}

func metricsRegistry(src metricsSources) *prometheus.Registry {
	reg := metricshttp.NewRegistry()
	reg.MustRegister(src.decision, wgCollector{peers: src.peers, now: src.now})
	m := metricshttp.Funcs{Reg: reg}
	fs := func(f func(flow.Stats) uint64) func() float64 {
		return func() float64 { return float64(f(src.flow())) }
	}
	ds := func(f func(dns.Stats) uint64) func() float64 {
		return func() float64 { return float64(f(src.dns())) }
	}
	type L = prometheus.Labels

	const flowsHelp = "New flows by verdict: allowed (admitted to the connection table) or refused (the policy allowed it but the full flow record spool refused it, --spool-full)."
	m.Counter("gateway_flows_total", flowsHelp, L{"verdict": "allowed"}, fs(func(s flow.Stats) uint64 { return s.FlowsOpened }))
	m.Counter("gateway_flows_total", flowsHelp, L{"verdict": "refused"}, fs(func(s flow.Stats) uint64 { return s.FlowsRefused }))
	m.Counter("gateway_flows_cut_total", "Open flows cut because the policy, session or grant no longer allows them.", L{"reason": "policy"},
		fs(func(s flow.Stats) uint64 { return s.FlowsCut }))
	m.Counter("gateway_flows_ended_total", "Flows that left the connection table (closed, idle or cut).", nil,
		fs(func(s flow.Stats) uint64 { return s.FlowsEnded }))
	m.Gauge("gateway_flows_open", "Flows in the connection table now.", nil,
		func() float64 { return float64(src.flow().FlowsOpen) })

	if src.tcp != nil {
		ts := func(f func(tlsport.Stats, uint64) float64) func() float64 {
			return func() float64 { return f(src.tcp()) }
		}
		m.Gauge("gateway_tcp_streams_open", "WireGuard-over-TLS streams open on the TCP port (--tcp-listen).", nil,
			ts(func(s tlsport.Stats, _ uint64) float64 { return float64(s.Open) }))
		m.Counter("gateway_tcp_streams_total", "Streams whose TLS handshake completed and that were handed to WireGuard.", nil,
			ts(func(s tlsport.Stats, _ uint64) float64 { return float64(s.Accepted) }))
		const refHelp = "TCP connections refused, by reason: source (over the streams per source address), full (over the streams in all) or handshake (TLS failed or timed out)."
		m.Counter("gateway_tcp_refused_total", refHelp, L{"reason": "source"}, ts(func(s tlsport.Stats, _ uint64) float64 { return float64(s.RefusedSource) }))
		m.Counter("gateway_tcp_refused_total", refHelp, L{"reason": "full"}, ts(func(s tlsport.Stats, _ uint64) float64 { return float64(s.RefusedFull) }))
		m.Counter("gateway_tcp_refused_total", refHelp, L{"reason": "handshake"}, ts(func(s tlsport.Stats, _ uint64) float64 { return float64(s.HandshakeFailed) }))
		m.Counter("gateway_tcp_frames_dropped_total", "Streams closed because a frame was not a WireGuard message (empty, too large, or another protocol).", nil,
			ts(func(_ tlsport.Stats, drops uint64) float64 { return float64(drops) }))
	}

	const pktHelp = "Packets through the flow authorizer by direction (to_app: from clients; to_client: replies) and verdict."
	m.Counter("gateway_packets_total", pktHelp, L{"direction": "to_app", "verdict": "allowed"}, fs(func(s flow.Stats) uint64 { return s.PacketsAllowed }))
	m.Counter("gateway_packets_total", pktHelp, L{"direction": "to_app", "verdict": "denied"}, fs(func(s flow.Stats) uint64 { return s.PacketsDenied }))
	m.Counter("gateway_packets_total", pktHelp, L{"direction": "to_client", "verdict": "allowed"}, fs(func(s flow.Stats) uint64 { return s.PacketsReturned }))
	m.Counter("gateway_packets_total", pktHelp, L{"direction": "to_client", "verdict": "denied"}, fs(func(s flow.Stats) uint64 { return s.ReturnDropped }))
	m.Counter("gateway_packets_malformed_total", "Unparseable packets dropped, both directions.", nil, fs(func(s flow.Stats) uint64 { return s.Malformed }))
	m.Counter("gateway_flow_events_dropped_total", "Flow and DNS audit events dropped because the queue to the spool was full.", nil,
		func() float64 { return float64(src.flow().EventsDropped + src.dns().EventsDropped) })

	const dnsHelp = "DNS queries by what they got: answer, nxdomain (unknown or not entitled: the same reply), refused, formerr, notimp, dropped (malformed) or rate_limited."
	for kind, f := range map[string]func(dns.Stats) uint64{
		"answer": func(s dns.Stats) uint64 { return s.Answered }, "nxdomain": func(s dns.Stats) uint64 { return s.NXDomain },
		"refused": func(s dns.Stats) uint64 { return s.Refused }, "formerr": func(s dns.Stats) uint64 { return s.FormErr },
		"notimp": func(s dns.Stats) uint64 { return s.NotImp }, "dropped": func(s dns.Stats) uint64 { return s.Dropped },
		"rate_limited": func(s dns.Stats) uint64 { return s.RateLimited },
	} {
		m.Counter("gateway_dns_queries_total", dnsHelp, L{"kind": kind}, ds(f))
	}

	m.Gauge("gateway_spool_bytes", "Bytes of flow records in the spool waiting for the controller's acknowledgement.", nil,
		func() float64 { return float64(src.spool().Bytes) })
	m.Gauge("gateway_spool_max_bytes", "The flow record spool's bound (--spool-max-bytes).", nil,
		func() float64 { return float64(src.spool().MaxBytes) })
	m.Gauge("gateway_spool_full", "1 while the flow record spool is full (new flows are refused per --spool-full).", nil,
		func() float64 { return metricshttp.Bool(src.spool().Full) })
	m.Gauge("gateway_control_connected", "1 while the control channel to the controller is up.", nil,
		func() float64 { return metricshttp.Bool(src.connected()) })
	m.Gauge("gateway_map_valid_until_timestamp_seconds", "When the map in effect stops granting anything (Unix seconds; 0 without a map).", nil, func() float64 {
		if t := src.validUntil(); !t.IsZero() {
			return float64(t.UnixNano()) / 1e9
		}
		return 0
	})
	if src.cluster != nil {
		clusterMetrics(m, src)
	}
	return reg
}

// clusterMetrics are the gateway cluster's (cluster.go).
func clusterMetrics(m metricshttp.Funcs, src metricsSources) {
	type L = prometheus.Labels
	cs := func(f func(cluster.Stats) uint64) func() float64 {
		return func() float64 { return float64(f(src.cluster())) }
	}
	for _, state := range []string{controlproto.MemberAlive, controlproto.MemberSuspect, controlproto.MemberDead} {
		m.Gauge("gateway_cluster_members", "The other gateways of this gateway's cluster by state as it sees them (dead: also never heard of).", L{"state": state}, func() float64 {
			n := 0
			for _, mb := range src.members() {
				if mb.State == state {
					n++
				}
			}
			return float64(n)
		})
	}
	const refusedHelp = "What the cluster refused: member (alive messages and state exchanges of unlisted or unverified nodes), packet (packets and streams from unlisted addresses), notice (revocation notices whose signature or age did not verify), activity (activity reports not signed by a member, or replayed)."
	m.Counter("gateway_cluster_refused_total", refusedHelp, L{"what": "member"}, cs(func(s cluster.Stats) uint64 { return s.Refused }))
	m.Counter("gateway_cluster_refused_total", refusedHelp, L{"what": "packet"}, cs(func(s cluster.Stats) uint64 { return s.FilteredPackets }))
	m.Counter("gateway_cluster_refused_total", refusedHelp, L{"what": "notice"}, cs(func(s cluster.Stats) uint64 { return s.BadNotices }))
	m.Counter("gateway_cluster_refused_total", refusedHelp, L{"what": "activity"}, cs(func(s cluster.Stats) uint64 { return s.BadActivity }))
	m.Counter("gateway_cluster_notices_total", "Revocation notices from the controller acted on (received directly or gossiped).", nil, cs(func(s cluster.Stats) uint64 { return s.Notices }))
	const bytesHelp = "Gossip packet bytes (UDP) by direction; streams are not counted."
	m.Counter("gateway_cluster_gossip_bytes_total", bytesHelp, L{"direction": "tx"}, cs(func(s cluster.Stats) uint64 { return s.PacketBytesSent }))
	m.Counter("gateway_cluster_gossip_bytes_total", bytesHelp, L{"direction": "rx"}, cs(func(s cluster.Stats) uint64 { return s.PacketBytesReceived }))
}

// newDecisionHistogram is cordon_gateway_authorizer_decision_seconds,
// fed by flow.Config.ObserveDecision (a sample of new flows).
func newDecisionHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: metricshttp.Namespace, Name: "gateway_authorizer_decision_seconds",
		Help:    fmt.Sprintf("Seconds the flow authorizer's policy took to decide a new flow (one in %d new flows, by source port, is timed).", flow.DecisionSample),
		Buckets: prometheus.ExponentialBuckets(250e-9, 2, 14)}) // 250 ns to 2 ms
}

// ready is /readyz: the gateway has a map, from the controller or the one
// it saved, to serve.
func (g *gw) ready(context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cur == nil {
		return errors.New("no network map yet: the gateway has not reached the controller and has no saved map")
	}
	return nil
}

// wgCollector reads the WireGuard device's peers once per scrape.
type wgCollector struct {
	peers func() ([]wgdev.PeerStatus, error) // wgdev.Device.Status
	now   func() time.Time
}

// activeWithin is how recent a peer's handshake must be to count as active:
// WireGuard's reject-after time, past which the session is dead.
const activeWithin = 3 * time.Minute

var (
	peersDesc  = prometheus.NewDesc("cordon_gateway_peers", "WireGuard peers configured (entitled client devices, plus ones lingering after removal).", nil, nil)
	activeDesc = prometheus.NewDesc("cordon_gateway_peers_active", "WireGuard peers with a handshake in the last 3 minutes.", nil, nil)
	bytesDesc  = prometheus.NewDesc("cordon_gateway_wireguard_bytes", "WireGuard bytes of the peers configured now, by direction (rx: from clients); a sum over current peers, so it drops when a peer leaves.", []string{"direction"}, nil)
)

func (c wgCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- peersDesc
	ch <- activeDesc
	ch <- bytesDesc
}

func (c wgCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.peers()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(peersDesc, err)
		return
	}
	var active int
	var rx, tx int64
	now := c.now()
	for _, p := range st {
		if !p.LastHandshake.IsZero() && now.Sub(p.LastHandshake) < activeWithin {
			active++
		}
		rx += p.RxBytes
		tx += p.TxBytes
	}
	ch <- prometheus.MustNewConstMetric(peersDesc, prometheus.GaugeValue, float64(len(st)))
	ch <- prometheus.MustNewConstMetric(activeDesc, prometheus.GaugeValue, float64(active))
	ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.GaugeValue, float64(rx), "rx")
	ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.GaugeValue, float64(tx), "tx")
}
