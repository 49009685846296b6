package e2e

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The gateway host is part of the boundary (docs/security.md, "The
// gateway host"): from a host on the gateway's WAN that is not enrolled
// and routes the app subnet and the overlay through the gateway, nothing
// behind the gateway and nothing on the gateway answers — while the
// gateway starts, runs, after SIGTERM and after SIGKILL — while an
// entitled client reaches its app through the tunnel whenever the gateway
// runs.

const (
	rogueAddr   = "192.0.2.66"
	spoofedAddr = "100.64.0.99" // an overlay address nobody was given
	sshAddr     = "10.20.0.10:22"
)

// rogue is an unenrolled host on the gateway's WAN segment.
type rogue struct {
	w  *world
	ns netNS
	// ssh is a listener standing in for SSH on the EHR host.
	ssh *atomic.Int64
}

// newRogue adds the host to the WAN bridge with routes for the app subnet
// and the overlay via the gateway's WAN address, an overlay address of its
// own on its interface (to spoof with), and counters for every packet it
// receives from the gateway, the app subnet or the overlay.
func (w *world) newRogue() *rogue {
	t := w.t
	t.Helper()
	ns := netNS{name: w.id + "-rogue"}
	mustRun(t, "ip", "netns", "add", ns.name)
	t.Cleanup(func() {
		if out, err := sh("ip", "netns", "pids", ns.name); err == nil {
			for _, p := range strings.Fields(out) {
				sh("kill", "-9", p)
			}
		}
		sh("ip", "netns", "del", ns.name)
	})
	ip(t, ns, "link", "set", "lo", "up")
	ip(t, w.wan, "link", "add", "p-rogue", "type", "veth", "peer", "name", "eth0", "netns", ns.name)
	ip(t, w.wan, "link", "set", "p-rogue", "master", "br0", "up")
	ip(t, ns, "addr", "add", rogueAddr+"/24", "dev", "eth0")
	ip(t, ns, "addr", "add", spoofedAddr+"/32", "dev", "eth0")
	ip(t, ns, "link", "set", "eth0", "up")
	ip(t, ns, "route", "add", appCIDR, "via", gwWANAddr)
	ip(t, ns, "route", "add", "100.64.0.0/10", "via", gwWANAddr, "src", rogueAddr)
	nft := `table inet probe {
	counter from_gw {}
	counter from_apps {}
	counter from_overlay {}
	chain in {
		type filter hook prerouting priority -300; policy accept;
		ip saddr ` + gwWANAddr + ` counter name from_gw
		ip saddr ` + appCIDR + ` counter name from_apps
		ip saddr 100.64.0.0/10 counter name from_overlay
	}
}`
	nftFile := filepath.Join(w.dir, "rogue.nft")
	if err := os.WriteFile(nftFile, []byte(nft), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "ip", "netns", "exec", ns.name, "nft", "-f", nftFile)

	var ssh atomic.Int64
	ln, err := w.app.listen("tcp", sshAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ssh.Add(1)
			c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
			c.Close()
		}
	}()
	return &rogue{w: w, ns: ns, ssh: &ssh}
}

var counterPackets = regexp.MustCompile(`packets (\d+)`)

// answers returns how many packets the rogue host received from the
// gateway, the app subnet and the overlay.
func (r *rogue) answers() map[string]int {
	out := map[string]int{}
	for _, c := range []string{"from_gw", "from_apps", "from_overlay"} {
		s := mustRun(r.w.t, "ip", "netns", "exec", r.ns.name, "nft", "list", "counter", "inet", "probe", c)
		m := counterPackets.FindStringSubmatch(s)
		if m == nil {
			r.w.t.Fatalf("nft counter %s: %s", c, s)
		}
		out[c], _ = strconv.Atoi(m[1])
	}
	return out
}

// probeResult is what one round of probes saw.
type probeResult struct {
	connected []string // TCP connections that completed
	answered  map[string]int
	accepted  int // connections the app services (and ssh) accepted
}

func (p probeResult) open() bool {
	return len(p.connected) > 0 || p.accepted > 0 || p.answered["from_gw"]+p.answered["from_apps"]+p.answered["from_overlay"] > 0
}

func (p probeResult) String() string {
	return fmt.Sprintf("connected=%v answers=%v accepted=%d", p.connected, p.answered, p.accepted)
}

// probe tries every way around the tunnel from the rogue host, in
// parallel, and reports what answered: TCP to every app port and SSH, from
// the rogue's own address and from a spoofed overlay source; UDP and ICMP
// echo to the app hosts; DNS to the gateway's overlay address; and a SYN,
// a UDP datagram and an ICMP echo to every port of the gateway's WAN
// address. Each TCP dial waits 1.5 s. Connections that services in busy
// accept are not counted (an entitled client uses them meanwhile; the
// probes hit every other service the same way).
func (r *rogue) probe(busy ...string) probeResult {
	t := r.w.t
	t.Helper()
	before := r.answers()
	acceptsBefore := r.accepts(busy)
	targets := []string{ehrAddr, ehrAdminAddr, billingAddr, labAddr, sshAddr}
	var mu sync.Mutex
	var res probeResult
	var wg sync.WaitGroup
	for _, from := range []string{rogueAddr, spoofedAddr} {
		for _, to := range targets {
			wg.Go(func() {
				err := r.ns.do(func() error {
					d := net.Dialer{Timeout: 1500 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
					c, err := d.Dial("tcp", to)
					if err == nil {
						c.Close()
						mu.Lock()
						res.connected = append(res.connected, from+"→"+to)
						mu.Unlock()
					}
					return nil
				})
				if err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Go(func() {
		if err := r.ns.do(func() error { return r.datagrams() }); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	time.Sleep(300 * time.Millisecond) // late answers
	after := r.answers()
	res.answered = map[string]int{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			res.answered[k] = d
		}
	}
	res.accepted = r.accepts(busy) - acceptsBefore
	return res
}

func (r *rogue) accepts(busy []string) int {
	n := int(r.ssh.Load())
	for name, s := range r.w.svcs {
		if !slices.Contains(busy, name) {
			n += int(s.accepts.Load())
		}
	}
	return n
}

// datagrams sends, from inside the rogue namespace: a TCP SYN, a UDP
// datagram and (once) an ICMP echo request to every port of the gateway's
// WAN address; UDP and echo to each app host; a DNS query to the gateway's
// overlay address, from the rogue's address and from the spoofed one.
func (r *rogue) datagrams() error {
	gw := netip.MustParseAddr(gwWANAddr)
	src := netip.MustParseAddr(rogueAddr)
	raw, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer syscall.Close(raw)
	send := func(pkt []byte, dst netip.Addr) error {
		sa := &syscall.SockaddrInet4{Addr: dst.As4()}
		for {
			err := syscall.Sendto(raw, pkt, 0, sa)
			if errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.EAGAIN) {
				time.Sleep(time.Millisecond)
				continue
			}
			return err
		}
	}
	for port := 1; port <= 65535; port++ {
		if err := send(ipv4Packet(src, gw, syscall.IPPROTO_TCP, tcpSYN(src, gw, 40000, uint16(port))), gw); err != nil {
			return fmt.Errorf("send SYN to port %d: %w", port, err)
		}
		if err := send(ipv4Packet(src, gw, syscall.IPPROTO_UDP, udpDatagram(uint16(port), []byte("probe"))), gw); err != nil {
			return fmt.Errorf("send UDP to port %d: %w", port, err)
		}
		if port%2048 == 0 {
			time.Sleep(5 * time.Millisecond) // let the bridge keep up
		}
	}
	echo := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1}
	binary.BigEndian.PutUint16(echo[2:], ^fold(sum(echo)))
	for _, dst := range []string{gwWANAddr, "10.20.0.10", "10.20.0.11", "10.20.0.12", gwAppAddr, "100.64.0.1"} {
		d := netip.MustParseAddr(dst)
		for _, s := range []netip.Addr{src, netip.MustParseAddr(spoofedAddr)} {
			if err := send(ipv4Packet(s, d, syscall.IPPROTO_ICMP, echo), d); err != nil {
				return err
			}
			for _, port := range []uint16{53, 80, 161, 514} {
				if err := send(ipv4Packet(s, d, syscall.IPPROTO_UDP, udpDatagram(port, dnsQuery())), d); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// dnsQuery is a query for ehr.hosp.internal A.
func dnsQuery() []byte {
	q := []byte{0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, l := range []string{"ehr", "hosp", "internal"} {
		q = append(q, byte(len(l)))
		q = append(q, l...)
	}
	return append(q, 0, 0, 1, 0, 1)
}

// ipv4Packet wraps payload in an IPv4 header (IPPROTO_RAW sends it as is;
// the kernel fills in the checksum and ID).
func ipv4Packet(src, dst netip.Addr, proto byte, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = proto
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	copy(b[20:], payload)
	// Transport checksums over the pseudo-header.
	ph := make([]byte, 12, 12+len(payload))
	copy(ph, s[:])
	copy(ph[4:], d[:])
	ph[9] = proto
	binary.BigEndian.PutUint16(ph[10:], uint16(len(payload)))
	seg := b[20:]
	switch proto {
	case syscall.IPPROTO_TCP:
		binary.BigEndian.PutUint16(seg[16:], ^fold(sum(append(ph, seg...))))
	case syscall.IPPROTO_UDP:
		binary.BigEndian.PutUint16(seg[6:], ^fold(sum(append(ph, seg...))))
	}
	return b
}

func tcpSYN(src, dst netip.Addr, sport, dport uint16) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 0x01020304)
	b[12] = 5 << 4
	b[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(b[14:], 64240)
	return b
}

func udpDatagram(dport uint16, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], 40001)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	copy(b[8:], payload)
	return b
}

func sum(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// gwCounters reads the gateway host firewall's drop counters.
func (w *world) gwCounters() map[string]int {
	out := map[string]int{}
	for _, c := range []string{"forward_dropped", "input_dropped", "spoofed"} {
		s, err := sh("ip", "netns", "exec", w.gw.name, "nft", "list", "counter", "inet", "cordon", c)
		if err != nil {
			w.t.Fatalf("gateway counter %s: %v %s", c, err, s)
		}
		m := counterPackets.FindStringSubmatch(s)
		if m == nil {
			w.t.Fatalf("gateway counter %s: %s", c, s)
		}
		out[c], _ = strconv.Atoi(m[1])
	}
	return out
}

func (w *world) gwSysctl(name string) string {
	out, err := sh("ip", "netns", "exec", w.gw.name, "sysctl", "-n", name)
	if err != nil {
		w.t.Fatalf("sysctl %s: %v %s", name, err, out)
	}
	return strings.TrimSpace(out)
}

func TestGatewayHostClosed(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := w.newRogue()
	nurse := w.nurse
	closed := func(state string, busy ...string) {
		t.Helper()
		start := time.Now()
		res := r.probe(busy...)
		if res.open() {
			t.Errorf("%s: the gateway host let the WAN through or answered it: %v", state, res)
		} else {
			t.Logf("%s: nothing answered the WAN host (%d SYNs, %d datagrams; %v)", state, 65535, 65535+48, time.Since(start).Round(time.Millisecond))
		}
	}

	// Running, with an entitled client using the tunnel meanwhile.
	w.waitReach(nurse, w.svcs["ehr"], 15*time.Second)
	c0 := w.gwCounters()
	var reached atomic.Int64
	ctx, stopUse := context.WithCancel(context.Background())
	var use sync.WaitGroup
	use.Go(func() {
		for ctx.Err() == nil {
			if body, err := nurse.get(ehrAddr); err == nil && body == "ehr" {
				reached.Add(1)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	closed("running", "ehr")
	// The other way: an app host reaches nothing on the WAN through the
	// gateway either.
	if ln, err := r.ns.listen("tcp", rogueAddr+":9999"); err != nil {
		t.Fatal(err)
	} else {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				t.Errorf("an app host reached the WAN host through the gateway (%v)", c.RemoteAddr())
				c.Close()
			}
		}()
		if c, err := w.app.dialTimeout("tcp", rogueAddr+":9999", 1500*time.Millisecond); err == nil {
			c.Close()
			t.Errorf("running: an app host connected to the WAN host through the gateway")
		}
		ln.Close()
	}
	stopUse()
	use.Wait()
	if reached.Load() == 0 {
		t.Errorf("running: the nurse never reached ehr through the tunnel while the WAN was probed")
	}
	c1 := w.gwCounters()
	if c1["spoofed"] <= c0["spoofed"] || c1["forward_dropped"] <= c0["forward_dropped"] || c1["input_dropped"] <= c0["input_dropped"] {
		t.Errorf("drop counters did not count the probes: before %v, after %v", c0, c1)
	}
	t.Logf("gateway drop counters after one round: %v", c1)

	// SIGTERM: stopped cleanly, forwarding left as the operator set it.
	w.gateway.stop()
	closed("stopped (SIGTERM)")
	if v := w.gwSysctl("net.ipv4.ip_forward"); v != "1" {
		t.Errorf("after SIGTERM ip_forward = %s, want the operator's 1", v)
	}

	// Starting, controller unreachable, before the first map: no saved
	// map and no controller.
	w.controller.stop()
	os.Remove(filepath.Join(w.dir, "gateway", "last-map.json"))
	w.gateway = w.runGateway("gateway-no-controller")
	waitFor(t, 10*time.Second, "gateway to start without the controller", func() error {
		if s := w.gateway.exited(); s != "" {
			t.Fatalf("%s\n%s", s, w.gateway.logs())
		}
		if !strings.Contains(w.gateway.logs(), "no saved map") {
			return errors.New("not yet")
		}
		return nil
	})
	closed("starting, controller unreachable, no map")

	// Controller back: the map arrives, the nurse is back.
	w.startController("controller-2")
	w.waitReach(nurse, w.svcs["ehr"], 30*time.Second)
	closed("running again")

	// SIGKILL: the host stays closed.
	w.gateway.cmd.Process.Kill()
	<-w.gateway.done
	closed("killed (SIGKILL)")
	if out, err := sh("ip", "netns", "exec", w.gw.name, "nft", "list", "table", "inet", "cordon"); err != nil || !strings.Contains(out, "policy drop") {
		t.Errorf("after SIGKILL the cordon table is gone or open: %v\n%s", err, out)
	}

	// The probe can see an open host: once the operator uninstalls the
	// firewall (forwarding still on), the WAN host reaches the apps.
	out, errOut, code := run(context.Background(), "", nil, "ip", "netns", "exec", w.gw.name, bin("cordon-gateway"), "uninstall")
	if code != 0 || !strings.Contains(out, "removed") || !strings.Contains(out, "forwarding is on") {
		t.Fatalf("cordon-gateway uninstall: exit %d\n%s%s", code, out, errOut)
	}
	if res := r.probe(); !res.open() {
		t.Errorf("after uninstall with forwarding on the probe saw nothing: it could not have seen a leak either")
	} else {
		t.Logf("after uninstall (forwarding on, no Cordon table) the probe sees the open host, as it should: %v", res)
	}
}

// TestGatewayManagedForwarding: with --manage-forwarding on a host whose
// operator left forwarding off, the gateway turns it on and, on SIGTERM,
// off again; without the flag it refuses to start and says what to set.
func TestGatewayManagedForwarding(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.gateway.stop()
	mustRun(t, "ip", "netns", "exec", w.gw.name, "sysctl", "-qw", "net.ipv4.ip_forward=0")

	p := w.runGateway("gateway-no-forwarding")
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatal("gateway started with forwarding off and no --manage-forwarding")
	}
	if l := p.logs(); !strings.Contains(l, "net.ipv4.ip_forward=1") || !strings.Contains(l, "--manage-forwarding") {
		t.Errorf("refusal does not say what to set:\n%s", l)
	}

	w.gateway = w.runGateway("gateway-managed", "--manage-forwarding")
	w.waitReach(w.nurse, w.svcs["ehr"], 30*time.Second)
	if v := w.gwSysctl("net.ipv4.ip_forward"); v != "1" {
		t.Errorf("--manage-forwarding: ip_forward = %s while running", v)
	}
	w.gateway.stop()
	if v := w.gwSysctl("net.ipv4.ip_forward"); v != "0" {
		t.Errorf("--manage-forwarding: ip_forward = %s after SIGTERM, want the operator's 0 back", v)
	}
}

// TestGatewayManagementSources: a management source reaches the host's own
// services (here, a listener on the gateway host); the rogue WAN host
// does not.
func TestGatewayManagementSources(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := w.newRogue()
	w.gateway.stop()
	w.gateway = w.runGateway("gateway-mgmt", "--management-sources", ctlAddr+"/32")
	w.waitReach(w.nurse, w.svcs["ehr"], 30*time.Second)

	ln, err := w.gw.listen("tcp", ":2222") // stands in for sshd
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if c, err := w.ctl.dialTimeout("tcp", gwWANAddr+":2222", 2*time.Second); err != nil {
		t.Errorf("management source %s cannot reach the gateway host's service: %v", ctlAddr, err)
	} else {
		c.Close()
	}
	if c, err := r.ns.dialTimeout("tcp", gwWANAddr+":2222", 1500*time.Millisecond); err == nil {
		c.Close()
		t.Errorf("the rogue WAN host reached the gateway host's service")
	}
}
