package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Every daemon with --metrics-listen: the controller, the gateway and the
// nurse's client serve /metrics, /healthz and /readyz in their namespaces,
// and the metrics move when the nurse opens an allowed flow, is denied
// another and looks names up.
func TestMetricsAllDaemons(t *testing.T) {
	t.Parallel()
	const addr = "127.0.0.1:9469" // each daemon in its own namespace
	w := newWorld(t, withControllerArgs("--metrics-listen", addr), withGatewayArgs("--metrics-listen", addr),
		withClientArgs("--metrics-listen", addr))
	daemons := []struct {
		name string
		ns   netNS
	}{{"controller", w.ctl}, {"gateway", w.gw}, {"client", w.cl1}}
	scrape := func(ns netNS, path string) (int, string) {
		t.Helper()
		resp, err := ns.httpClient(2*time.Second, 5*time.Second, nil).Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// The client and the gateway are ready once they have a map.
	for _, d := range daemons {
		waitFor(t, 20*time.Second, d.name+" /readyz", func() error {
			if code, body := scrape(d.ns, "/readyz"); code != http.StatusOK {
				return fmt.Errorf("%d %s", code, body)
			}
			return nil
		})
		if code, body := scrape(d.ns, "/healthz"); code != http.StatusOK {
			t.Errorf("%s /healthz: %d %s", d.name, code, body)
		}
	}
	before := map[string]map[string]float64{}
	for _, d := range daemons {
		_, body := scrape(d.ns, "/metrics")
		before[d.name] = parseMetrics(body)
	}

	w.waitReach(w.nurse, w.svcs["ehr"], 15*time.Second) // allowed
	w.unreachable(w.nurse, w.svcs["ehr-admin"])         // in the tunnel's AllowedIPs, denied by the gateway
	stub := w.overlayOf("nurse")
	if r := exchange(t, w.cl1, stub, "ehr.hosp.internal.", dns.TypeA); r.Rcode != dns.RcodeSuccess {
		t.Errorf("ehr.hosp.internal through the stub: %s", dns.RcodeToString[r.Rcode])
	}
	if r := exchange(t, w.cl1, stub, "billing.hosp.internal.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("billing.hosp.internal through the stub: %s", dns.RcodeToString[r.Rcode])
	}
	if r := exchange(t, w.cl1, w.gatewayOverlay(), "billing.hosp.internal.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("billing.hosp.internal at the gateway: %s", dns.RcodeToString[r.Rcode])
	}

	// The gateway list shows the gateway's load: the nurse is its peer
	// (the clerk is entitled to nothing behind it).
	waitFor(t, 10*time.Second, "gateway list to show the gateway's peers and flows", func() error {
		for _, g := range w.gateways() {
			if g.Name != gwName {
				continue
			}
			if g.Peers == nil || g.Flows == nil {
				return fmt.Errorf("%s: no load shown", g.Name)
			}
			if *g.Peers < 1 {
				return fmt.Errorf("%s: peers %d flows %d, want the nurse as a peer", g.Name, *g.Peers, *g.Flows)
			}
			return nil
		}
		return fmt.Errorf("%s not in the gateway list", gwName)
	})

	// moved: the value grew; set: present with a value > 0.
	type check struct{ name, want string }
	checks := map[string][]check{
		"controller": {
			{`cordon_control_agents{kind="gateway"}`, "set"}, {`cordon_control_agents{kind="client"}`, "set"},
			{`cordon_control_maps_sent_total{form="whole"}`, "set"}, {"cordon_control_map_bytes_sent_total", "set"},
			{"cordon_audit_log_checkpoint_size", "set"},
			{`cordon_signin_failures_total{kind="user"}`, "present"},
			{`cordon_sessions{state="active"}`, "set"},
			{"cordon_control_map_push_seconds_count", "set"},
		},
		"gateway": {
			{`cordon_gateway_flows_total{verdict="allowed"}`, "moved"},
			{`cordon_gateway_packets_total{direction="to_app",verdict="allowed"}`, "moved"},
			{`cordon_gateway_packets_total{direction="to_app",verdict="denied"}`, "moved"},
			{`cordon_gateway_packets_total{direction="to_client",verdict="allowed"}`, "moved"},
			{`cordon_gateway_dns_queries_total{kind="answer"}`, "moved"},
			{`cordon_gateway_dns_queries_total{kind="nxdomain"}`, "moved"},
			{"cordon_gateway_control_connected", "set"}, {"cordon_gateway_peers", "set"},
			{"cordon_gateway_peers_active", "set"}, {`cordon_gateway_wireguard_bytes{direction="rx"}`, "moved"},
			{"cordon_gateway_spool_max_bytes", "set"}, {"cordon_gateway_spool_full", "present"},
			{"cordon_gateway_flows_open", "present"}, {`cordon_gateway_flows_cut_total{reason="policy"}`, "present"},
			{"cordon_gateway_map_valid_until_timestamp_seconds", "set"},
		},
		"client": {
			{"cordon_client_tunnel_up", "set"}, {"cordon_client_control_connected", "set"},
			{`cordon_client_apps{state="reachable"}`, "set"},
			{`cordon_client_dns_answers_total{kind="answer"}`, "moved"},
			{`cordon_client_dns_answers_total{kind="nxdomain"}`, "moved"},
			{"cordon_client_session_seconds_left", "set"},
		},
	}
	for _, d := range daemons {
		_, body := scrape(d.ns, "/metrics")
		after := parseMetrics(body)
		for _, c := range checks[d.name] {
			v, ok := after[c.name]
			switch {
			case !ok:
				t.Errorf("%s: %s missing from /metrics", d.name, c.name)
			case c.want == "set" && v <= 0:
				t.Errorf("%s: %s = %v, want > 0", d.name, c.name, v)
			case c.want == "moved" && v <= before[d.name][c.name]:
				t.Errorf("%s: %s = %v, was %v: did not move", d.name, c.name, v, before[d.name][c.name])
			}
		}
		// Per-gateway client metrics carry the gateway's ID.
		if d.name == "client" {
			var age, bytes bool
			for k := range after {
				age = age || strings.HasPrefix(k, "cordon_client_gateway_handshake_age_seconds{")
				bytes = bytes || strings.HasPrefix(k, "cordon_client_gateway_bytes_total{")
			}
			if !age || !bytes {
				t.Errorf("client: handshake age (%v) or bytes (%v) per gateway missing:\n%s", age, bytes, body)
			}
		}
	}
}

// parseMetrics reads Prometheus text exposition: series (name{labels}) to
// value, comments skipped.
func parseMetrics(body string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}
