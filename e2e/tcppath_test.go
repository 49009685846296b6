package e2e

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The TCP path for networks that block UDP (issue 14):
//
//	[cl1 ns] cordon up (nurse)
//	  nft: output ip daddr 192.0.2.2 udp dport 51820 drop   ← the "hotel network"
//	     │  UDP 51820 ✗
//	     └─ TLS on TCP 443 ─────────────► [gw ns] cordon-gateway --tcp-listen :443
//	                                           same wireguard-go device, same authorizer
//
// The gateway is started with --tcp-listen :443, so the nurse's map lists
// its TCP endpoint.

// Bounds. fallbackBound: the issue asks for 3 s from the first unanswered
// UDP packet; a 'cordon up' also connects to the controller and gets its
// map first, and a loaded CI host needs slack.
const (
	fallbackBound = 6 * time.Second
	returnBound   = 10 * time.Second
	metricsAddr   = "127.0.0.1:9469"
	blockTable    = "cordon_e2e_block"
)

// The measurement: interleaved UDP/TCP rounds, one download each way per
// round. E2E_TCP_ROUNDS and E2E_TCP_BULK_MIB make it longer for the
// figures in docs/benchmarks.md.
var (
	tcpRounds = envInt("E2E_TCP_ROUNDS", 3)
	bulkBytes = int64(envInt("E2E_TCP_BULK_MIB", 32)) << 20
)

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// TestTCPFallback: with UDP to the gateway blocked, 'cordon up' reaches the
// app over TLS on TCP 443, 'cordon status' and the client's metrics say
// tcp, DNS answers, and plaintext on the gateway's TLS port gets nothing
// but a counted drop. Lifting the block moves the client back to UDP;
// blocking again mid-session moves it to TCP again. Each round measures
// the time to fall back and to move back, and throughput over UDP and
// over TCP, interleaved in this one run. Last, a device revoke cuts access
// within 1 s over the TCP path.
func TestTCPFallback(t *testing.T) {
	t.Parallel()
	w := newWorld(t, withGatewayArgs("--tcp-listen", ":443", "--metrics-listen", metricsAddr),
		withClientArgs("--metrics-listen", metricsAddr))
	ehr := w.svcs["ehr"]
	w.waitReach(w.nurse, ehr, 15*time.Second)
	w.waitPath(w.nurse, "udp", 5*time.Second)
	if st, err := w.nurse.status(); err != nil || len(st.Gateways) == 0 || st.Gateways[0].TCPEndpoint != gwWANAddr+":443" {
		t.Fatalf("status before the block: %+v, %v; want the gateway's TCP endpoint %s:443 from the map", st, err, gwWANAddr)
	}

	// 'cordon up' on a network that blocks UDP.
	w.nurse.proc.stop()
	w.blockUDP(w.cl1)
	w.up(w.nurse)
	upAt := time.Now()
	d := w.waitReach(w.nurse, ehr, 2*fallbackBound)
	t.Logf("FIGURE fresh 'cordon up' with UDP blocked: app reached %v after the control channel connected", d.Round(time.Millisecond))
	if d > fallbackBound {
		t.Errorf("app reached %v after 'cordon up' connected, want within %v", d.Round(time.Millisecond), fallbackBound)
	}
	w.waitPath(w.nurse, "tcp", time.Second)
	if n := w.udpDropped(w.cl1); n == 0 {
		t.Errorf("the block dropped no UDP packet: the client never tried UDP first")
	}
	t.Logf("UDP packets to the gateway dropped by the block: %d (since 'cordon up' %v ago)", w.udpDropped(w.cl1), time.Since(upAt).Round(time.Millisecond))
	if path := statusPath(w.nurse, "ehr"); path != "tcp" {
		t.Errorf("'cordon status' shows path %q for ehr's gateway, want tcp", path)
	}
	// DNS through the stub, over the TCP path.
	stub := w.overlayOf("nurse")
	if r := exchange(t, w.cl1, stub, "ehr.hosp.internal.", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		t.Errorf("ehr.hosp.internal through the stub over TCP: %s %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
	cm := w.scrapeMetrics(w.cl1)
	if v := cm[`cordon_client_gateway_path{gateway="`+w.gatewayID()+`",path="tcp"}`]; v != 1 {
		t.Errorf("client metric cordon_client_gateway_path for tcp = %v, want 1", v)
	}
	if v := cm[`cordon_client_path_switches_total{to="tcp"}`]; v < 1 {
		t.Errorf("client metric cordon_client_path_switches_total{to=tcp} = %v, want >= 1", v)
	}
	if v := w.scrapeMetrics(w.gw)["cordon_gateway_tcp_streams_open"]; v < 1 {
		t.Errorf("gateway metric cordon_gateway_tcp_streams_open = %v, want >= 1", v)
	}
	w.plaintextDropped()

	// Interleaved rounds: UDP works again → back to UDP; blocked again mid-
	// session → TCP. Throughput on each path in each round.
	var fallbacks, returns []time.Duration
	var udpRate, tcpRate []float64
	for round := 1; round <= tcpRounds; round++ {
		loop := startLoops(t, []*client{w.nurse}, ehr) // traffic: probes go with it
		w.unblockUDP(w.cl1)
		start := time.Now()
		w.waitPath(w.nurse, "udp", returnBound)
		returns = append(returns, time.Since(start))
		loop.stop()
		udpRate = append(udpRate, w.bulkRate(w.nurse, ehr))

		loop = startLoops(t, []*client{w.nurse}, ehr)
		w.blockUDP(w.cl1)
		start = time.Now()
		fallbacks = append(fallbacks, loop.waitSuccess(t, w.nurse, start, fallbackBound))
		loop.stop()
		w.waitPath(w.nurse, "tcp", time.Second)
		tcpRate = append(tcpRate, w.bulkRate(w.nurse, ehr))
		t.Logf("round %d: back to UDP in %v, to TCP in %v; %.0f Mbit/s over UDP, %.0f Mbit/s over TCP", round,
			returns[round-1].Round(time.Millisecond), fallbacks[round-1].Round(time.Millisecond), udpRate[round-1], tcpRate[round-1])
	}
	ratios := make([]float64, len(tcpRate))
	for i := range tcpRate {
		ratios[i] = tcpRate[i] / udpRate[i]
	}
	t.Logf("FIGURE fall back to TCP (mid-session block → first new request through): %v", durations(fallbacks))
	t.Logf("FIGURE move back to UDP (block lifted → path udp): %v", durations(returns))
	t.Logf("FIGURE throughput Mbit/s, one TCP download of %d MiB: UDP %v, TCP %v, TCP/UDP per round %v",
		bulkBytes>>20, rates(udpRate), rates(tcpRate), rates(ratios))
	for i, r := range tcpRate {
		if r <= 0 {
			t.Errorf("round %d: nothing crossed the TCP path", i+1)
		}
	}

	// A device revoke cuts access within 1 s over the TCP path.
	w.waitPath(w.nurse, "tcp", time.Second)
	st, err := w.nurse.status()
	if err != nil {
		t.Fatal(err)
	}
	dev := st.DeviceID
	w.cutAndRestore(ehr, "cordonctl device revoke (TCP path)", func() { w.mustCtl("", "device", "revoke", dev) }, nil, time.Second)
	waitFor(t, 10*time.Second, "the revoked device's 'cordon up' to stop", func() error {
		if w.nurse.proc.exited() == "" {
			return errors.New("still running")
		}
		return nil
	})
	w.nurse.proc = nil // stopped on purpose; checkAlive must not count it
}

// waitPath waits until c's status shows path for its (only) gateway.
func (w *world) waitPath(c *client, path string, timeout time.Duration) time.Duration {
	w.t.Helper()
	return waitFor(w.t, timeout, c.user+"'s path to the gateway to be "+path, func() error {
		st, err := c.status()
		if err != nil {
			return err
		}
		if len(st.Gateways) == 0 {
			return errors.New("no gateway in the map")
		}
		if got := st.Gateways[0].Path; got != path {
			return fmt.Errorf("path %q (endpoint %s)", got, st.Gateways[0].Endpoint)
		}
		return nil
	})
}

// statusPath is the PATH column of app's row in 'cordon status'.
func statusPath(c *client, app string) string {
	out, _, _ := c.cordon("", "status")
	col := -1
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == "APP" {
			col = slices.Index(f, "PATH")
		} else if col >= 0 && len(f) > col && f[0] == app {
			return f[col]
		}
	}
	return "no PATH for " + app + " in:\n" + out
}

// blockUDP drops every UDP packet from ns to the gateway's WireGuard port,
// the way a hotel or guest network does.
func (w *world) blockUDP(ns netNS) {
	w.t.Helper()
	rules := `table inet ` + blockTable + ` {
	counter udp_dropped {}
	chain out {
		type filter hook output priority 0; policy accept;
		ip daddr ` + gwWANAddr + ` udp dport 51820 counter name udp_dropped drop
	}
}`
	f := filepath.Join(w.dir, "block-udp.nft")
	if err := os.WriteFile(f, []byte(rules), 0o644); err != nil {
		w.t.Fatal(err)
	}
	mustRun(w.t, "ip", "netns", "exec", ns.name, "nft", "-f", f)
}

func (w *world) unblockUDP(ns netNS) {
	w.t.Helper()
	mustRun(w.t, "ip", "netns", "exec", ns.name, "nft", "delete", "table", "inet", blockTable)
}

// udpDropped is how many packets the block dropped.
func (w *world) udpDropped(ns netNS) int {
	w.t.Helper()
	s := mustRun(w.t, "ip", "netns", "exec", ns.name, "nft", "list", "counter", "inet", blockTable, "udp_dropped")
	m := counterPackets.FindStringSubmatch(s)
	if m == nil {
		w.t.Fatalf("nft counter udp_dropped: %s", s)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// scrapeMetrics reads the /metrics of the daemon in ns.
func (w *world) scrapeMetrics(ns netNS) map[string]float64 {
	w.t.Helper()
	resp, err := ns.httpClient(2*time.Second, 5*time.Second, nil).Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		w.t.Fatalf("scrape metrics in %s: %v", ns.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return parseMetrics(string(b))
}

// gatewayID is the ID of the world's gateway.
func (w *world) gatewayID() string {
	w.t.Helper()
	gws := w.gateways()
	i := slices.IndexFunc(gws, func(g gatewayInfo) bool { return g.Name == gwName })
	if i < 0 {
		w.t.Fatalf("no gateway %s in %+v", gwName, gws)
	}
	return gws[i].ID
}

// plaintextDropped: a host that is not enrolled (the second client's
// namespace, without its tunnel) completes TLS with the gateway's TCP port
// and sends an HTTP request: it gets no answer, the stream is closed, and
// the gateway counts the drop.
func (w *world) plaintextDropped() {
	t := w.t
	t.Helper()
	before := w.scrapeMetrics(w.gw)["cordon_gateway_tcp_frames_dropped_total"]
	var got []byte
	err := w.cl2.do(func() error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", gwWANAddr+":443",
			&tls.Config{InsecureSkipVerify: true, NextProtos: []string{"cordon-wg/1"}}) // the attacker trusts anything
		if err != nil {
			return fmt.Errorf("TLS to the gateway's TCP port: %w", err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: ehr.hosp.internal\r\n\r\n")); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err = io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return errors.New("the stream stayed open after plaintext")
		}
		return nil
	})
	if err != nil {
		t.Errorf("plaintext on the TCP port: %v", err)
	}
	if len(got) > 0 {
		t.Errorf("the gateway's TCP port answered plaintext with %q", got)
	}
	waitFor(t, 5*time.Second, "the gateway to count the dropped stream", func() error {
		if v := w.scrapeMetrics(w.gw)["cordon_gateway_tcp_frames_dropped_total"]; v != before+1 {
			return fmt.Errorf("cordon_gateway_tcp_frames_dropped_total %v, want %v", v, before+1)
		}
		return nil
	})
}

// bulkRate downloads bulkBytes from s through c's tunnel and returns the
// rate in Mbit/s.
func (w *world) bulkRate(c *client, s *service) float64 {
	w.t.Helper()
	hc := c.ns.httpClient(3*time.Second, 60*time.Second, nil)
	start := time.Now()
	resp, err := hc.Get(fmt.Sprintf("http://%s/bulk?n=%d", s.addr, bulkBytes))
	if err != nil {
		w.t.Fatalf("bulk download: %v", err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != bulkBytes {
		w.t.Fatalf("bulk download: %d of %d bytes: %v", n, bulkBytes, err)
	}
	return float64(n) * 8 / time.Since(start).Seconds() / 1e6
}

func durations(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.Round(time.Millisecond).String()
	}
	return "[" + strings.Join(s, " ") + "]"
}

func rates(fs []float64) string {
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = strconv.FormatFloat(f, 'f', 2, 64)
	}
	return "[" + strings.Join(s, " ") + "]"
}
