package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cordonhq/cordon/client/internal/dnsstub"
	"github.com/cordonhq/cordon/client/internal/pathsel"
	"github.com/cordonhq/cordon/internal/metricshttp"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/wgdev"
)

// listenMetrics listens on addr for --metrics-listen, which must be a
// loopback address: the client's metrics name the apps and gateways of a
// clinician's device, for a local agent to scrape, not for the network.
func listenMetrics(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %q: want HOST:PORT on loopback, e.g. 127.0.0.1:9469: %w", addr, err)
	}
	if host != "localhost" {
		a, err := netip.ParseAddr(host)
		if err != nil || !a.IsLoopback() {
			return nil, fmt.Errorf("--metrics-listen %q: the client serves metrics on loopback only (127.0.0.1 or [::1]): they describe this device's access", addr)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen: %w", err)
	}
	return ln, nil
}

// metricsRegistry is the client's Prometheus metrics (names in
// docs/operations.md), all read when scraped.
func (t *tunnel) metricsRegistry(now func() time.Time) *prometheus.Registry {
	return metricsRegistry(metricsSources{connected: t.cc.Connected, dns: t.stub.Stats, view: t.applied, peers: t.wg.Status, now: now,
		paths: t.paths.current, switches: t.paths.switchCounts})
}

// applied is the map in effect (nil before the first); maps are replaced
// whole, never modified.
func (t *tunnel) applied() *controlproto.ClientMap {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cm
}

// metricsSources are where the client's metrics are read from at scrape
// time.
type metricsSources struct {
	connected func() bool
	dns       func() dnsstub.Stats
	view      func() *controlproto.ClientMap // the map applied; nil: none yet
	peers     func() ([]wgdev.PeerStatus, error)
	now       func() time.Time
	paths     func() map[string]pathsel.Path // each gateway's path
	switches  func() (toUDP, toTCP uint64)
}

func metricsRegistry(src metricsSources) *prometheus.Registry {
	reg := metricshttp.NewRegistry()
	m := metricshttp.Funcs{Reg: reg}
	m.Gauge("client_control_connected", "1 while the control channel to the controller is up.", nil,
		func() float64 { return metricshttp.Bool(src.connected()) })
	const dnsHelp = "DNS answers the stub gave, by kind: answer, nxdomain (unknown or not entitled), servfail, refused, formerr or other."
	ds := func(f func(dnsstub.Stats) uint64) func() float64 {
		return func() float64 { return float64(f(src.dns())) }
	}
	for kind, f := range map[string]func(dnsstub.Stats) uint64{
		"answer": func(s dnsstub.Stats) uint64 { return s.Answer }, "nxdomain": func(s dnsstub.Stats) uint64 { return s.NXDomain },
		"servfail": func(s dnsstub.Stats) uint64 { return s.ServFail }, "refused": func(s dnsstub.Stats) uint64 { return s.Refused },
		"formerr": func(s dnsstub.Stats) uint64 { return s.FormErr }, "other": func(s dnsstub.Stats) uint64 { return s.Other },
	} {
		m.Counter("client_dns_answers_total", dnsHelp, prometheus.Labels{"kind": kind}, ds(f))
	}
	const switchHelp = "Gateways moved to another path, by the path moved to: tcp (UDP got no answer) or udp (UDP works again)."
	m.Counter("client_path_switches_total", switchHelp, prometheus.Labels{"to": "udp"},
		func() float64 { u, _ := src.switches(); return float64(u) })
	m.Counter("client_path_switches_total", switchHelp, prometheus.Labels{"to": "tcp"},
		func() float64 { _, t := src.switches(); return float64(t) })
	reg.MustRegister(tunnelCollector{src})
	return reg
}

// ready is the client's /readyz: a map from the controller is applied.
func (t *tunnel) ready(context.Context) error {
	if t.applied() == nil {
		return errors.New("no network map yet: the client has not reached the controller")
	}
	return nil
}

var (
	tunnelUpDesc = prometheus.NewDesc("cordon_client_tunnel_up",
		"1 while a network map is applied and at least one of its gateways had a WireGuard handshake in the last 3 minutes.", nil, nil)
	appsDesc = prometheus.NewDesc("cordon_client_apps",
		"Apps by state: reachable (in the map), step_up (needs a fresher second factor), posture (a posture check fails), no_mfa (the sign-in proved no second factor).", []string{"state"}, nil)
	handshakeAgeDesc = prometheus.NewDesc("cordon_client_gateway_handshake_age_seconds",
		"Seconds since the last WireGuard handshake with the gateway (absent before the first).", []string{"gateway"}, nil)
	gatewayBytesDesc = prometheus.NewDesc("cordon_client_gateway_bytes_total",
		"WireGuard bytes with the gateway since it was configured, by direction (rx: from the gateway).", []string{"gateway", "direction"}, nil)
	gatewayPathDesc = prometheus.NewDesc("cordon_client_gateway_path",
		"1 for the path WireGuard takes to the gateway now: udp, or tcp (TLS to its TCP endpoint, when UDP gets no answer).", []string{"gateway", "path"}, nil)
	sessionLeftDesc = prometheus.NewDesc("cordon_client_session_seconds_left",
		"Seconds until the session's absolute limit (absent without a session).", nil, nil)
)

// liveWithin is how recent a handshake must be for the tunnel to count as
// up: WireGuard's reject-after time, past which the session is dead.
const liveWithin = 3 * time.Minute

// tunnelCollector reads the map and the WireGuard device once per scrape.
type tunnelCollector struct{ src metricsSources }

func (c tunnelCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{tunnelUpDesc, appsDesc, handshakeAgeDesc, gatewayBytesDesc, gatewayPathDesc, sessionLeftDesc} {
		ch <- d
	}
}

func (c tunnelCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.src.now()
	ps, err := c.src.peers()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(tunnelUpDesc, err)
		return
	}
	byKey := make(map[string]int, len(ps))
	for i, p := range ps {
		byKey[p.PublicKey.String()] = i
	}
	cm := c.src.view()
	up := false
	apps := map[string]int{"reachable": 0, "step_up": 0, "posture": 0, "no_mfa": 0}
	if cm != nil {
		paths := c.src.paths()
		for _, g := range cm.Gateways {
			apps["reachable"] += len(g.Apps)
			ch <- prometheus.MustNewConstMetric(gatewayPathDesc, prometheus.GaugeValue, 1, g.GatewayID, paths[g.GatewayID].String())
			i, ok := byKey[g.PublicKey.String()]
			if !ok {
				continue
			}
			p := ps[i]
			ch <- prometheus.MustNewConstMetric(gatewayBytesDesc, prometheus.CounterValue, float64(p.RxBytes), g.GatewayID, "rx")
			ch <- prometheus.MustNewConstMetric(gatewayBytesDesc, prometheus.CounterValue, float64(p.TxBytes), g.GatewayID, "tx")
			if p.LastHandshake.IsZero() {
				continue
			}
			age := now.Sub(p.LastHandshake)
			ch <- prometheus.MustNewConstMetric(handshakeAgeDesc, prometheus.GaugeValue, age.Seconds(), g.GatewayID)
			if age < liveWithin {
				up = true
			}
		}
		if s := cm.Session; s != nil {
			apps["step_up"] = len(s.StepUp)
			posture := map[string]bool{}
			for _, f := range s.Posture {
				for _, a := range f.Apps {
					posture[a] = true
				}
			}
			apps["posture"] = len(posture)
			if s.NoMFA != nil {
				apps["no_mfa"] = len(s.NoMFA.Apps)
			}
			if !s.ExpiresAt.IsZero() {
				ch <- prometheus.MustNewConstMetric(sessionLeftDesc, prometheus.GaugeValue, max(s.ExpiresAt.Sub(now), 0).Seconds())
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(tunnelUpDesc, prometheus.GaugeValue, metricshttp.Bool(up))
	for state, n := range apps {
		ch <- prometheus.MustNewConstMetric(appsDesc, prometheus.GaugeValue, float64(n), state)
	}
}
