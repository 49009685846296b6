package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Split-horizon DNS, asked with dig from the client namespaces:
//
//	[cl1 ns] dig @<nurse overlay>  ──►  cordon stub (the nurse's device)
//	                                      │ ehr.hosp.internal: through the tunnel
//	                                      ▼
//	                                    [gw ns] gateway DNS @<gateway overlay>:53
//
// The nurse is entitled to ehr; billing exists but is not hers; the clerk
// is entitled to nothing.
func TestDNSSplitHorizon(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("SKIP: dig not installed (apt-get install dnsutils)")
	}
	w := newWorld(t)
	w.waitReach(w.nurse, w.svcs["ehr"], 15*time.Second)
	nurseStub, clerkStub := w.overlayOf("nurse"), w.overlayOf("clerk")
	gw := w.gatewayOverlay()

	// The entitled name resolves, through the stub and at the gateway.
	for _, server := range []string{nurseStub, gw} {
		status, answer := dig(t, w.cl1, server, "ehr.hosp.internal", "A")
		if status != "NOERROR" || !strings.Contains(answer, "10.20.0.10") {
			t.Errorf("dig @%s ehr.hosp.internal: %s %q, want NOERROR 10.20.0.10", server, status, answer)
		}
	}
	// Over TCP too, and the other record types, through the stub.
	for _, q := range []struct{ name, qtype, want string }{
		{"ehr.hosp.internal", "A", "10.20.0.10"},
		{"10.0.20.10.in-addr.arpa", "PTR", "ehr.hosp.internal."},
		{"_http._tcp.ehr.hosp.internal", "SRV", "0 0 80 ehr.hosp.internal."},
	} {
		for _, opt := range []string{"+notcp", "+tcp"} {
			if status, answer := dig(t, w.cl1, nurseStub, q.name, q.qtype, opt); status != "NOERROR" || !strings.Contains(answer, q.want) {
				t.Errorf("dig %s @%s %s %s: %s %q, want NOERROR %s", opt, nurseStub, q.name, q.qtype, status, answer, q.want)
			}
		}
	}
	// The non-entitled and the non-existent names give the same NXDOMAIN:
	// from the nurse's stub, at the gateway itself, and from the clerk's
	// stub.
	for _, tc := range []struct {
		ns     netNS
		server string
	}{{w.cl1, nurseStub}, {w.cl1, gw}, {w.cl2, clerkStub}} {
		for _, name := range []string{"billing.hosp.internal", "nosuch-4711.hosp.internal", "ehr.hosp.internal"} {
			if name == "ehr.hosp.internal" && tc.ns == w.cl1 {
				continue
			}
			if status, answer := dig(t, tc.ns, tc.server, name, "A"); status != "NXDOMAIN" || answer != "" {
				t.Errorf("dig @%s %s: %s %q, want NXDOMAIN and no answer", tc.server, name, status, answer)
			}
		}
		hidden := exchange(t, tc.ns, tc.server, "billing.hosp.internal.", dns.TypeA)
		never := exchange(t, tc.ns, tc.server, "billing.hosp.internal.", dns.TypeA)
		never2 := exchange(t, tc.ns, tc.server, "nosuch-4711.hosp.internal.", dns.TypeA)
		sameNXDomain(t, tc.server, hidden, never)
		hidden.Question, never2.Question = nil, nil
		sameNXDomain(t, tc.server, hidden, never2)
	}
	// A denied lookup at the gateway is audited.
	w.waitAudit("dns.deny of billing by the nurse", func(e auditEvent) bool {
		return e.Type == "dns.deny" && e.Subject == "billing.hosp.internal" && e.Details["user"] == "nurse"
	})

	// A scan of the internal zone from the unentitled device finds nothing.
	var found []string
	for _, label := range []string{"ehr", "billing", "lab", "pacs", "www", "mail", "vpn", "admin", "ehr-admin", "radiology", "pharmacy", "portal"} {
		for _, qt := range []string{"A", "AAAA", "SRV", "TXT"} {
			if status, answer := dig(t, w.cl2, clerkStub, label+".hosp.internal", qt); status != "NXDOMAIN" {
				found = append(found, fmt.Sprintf("%s/%s: %s %s", label, qt, status, answer))
			}
		}
	}
	for i := 1; i <= 20; i++ {
		if status, answer := dig(t, w.cl2, clerkStub, fmt.Sprintf("%d.0.20.10.in-addr.arpa", i), "PTR"); status != "NXDOMAIN" {
			found = append(found, fmt.Sprintf("PTR 10.20.0.%d: %s %s", i, status, answer))
		}
	}
	if len(found) > 0 {
		t.Errorf("a scan from the unentitled device found: %v", found)
	}

	// After the nurse leaves the group, ehr stops resolving within 2 s.
	start := time.Now()
	w.mustCtl("", "group", "remove-member", groupName, "nurse")
	_, err := poll(10*time.Second, 50*time.Millisecond, func() error {
		if status, answer := dig(t, w.cl1, nurseStub, "ehr.hosp.internal", "A"); status != "NXDOMAIN" {
			return fmt.Errorf("still %s %s", status, answer)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("ehr.hosp.internal still resolves %v after the nurse left the group: %v", time.Since(start).Round(time.Millisecond), err)
	}
	t.Logf("ehr.hosp.internal stopped resolving %v after group remove-member", time.Since(start).Round(time.Millisecond))
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("ehr.hosp.internal stopped resolving after %v, want within 2s", d.Round(time.Millisecond))
	}
}

// overlayOf returns the overlay address of user's device.
func (w *world) overlayOf(user string) string {
	w.t.Helper()
	for _, d := range w.devices() {
		if d.User == user {
			return d.OverlayAddr
		}
	}
	w.t.Fatalf("no device of %s", user)
	return ""
}

// dig runs dig in ns and returns the status and the answer section.
func dig(t *testing.T, ns netNS, server, name, qtype string, opts ...string) (status, answer string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	argv := append([]string{"netns", "exec", ns.name, "dig", "+tries=2", "+time=2", "+noall", "+comments", "+answer"}, opts...)
	out, errOut, code := run(ctx, "", nil, "ip", append(argv, "@"+server, name, qtype)...)
	if code != 0 {
		return fmt.Sprintf("dig exit %d: %s", code, strings.TrimSpace(errOut+out)), ""
	}
	var ans []string
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, "status: "); i >= 0 {
			status = strings.TrimSuffix(strings.Fields(l[i+len("status: "):])[0], ",")
		} else if l != "" && !strings.HasPrefix(l, ";") {
			ans = append(ans, strings.Join(strings.Fields(l), " "))
		}
	}
	return status, strings.Join(ans, "; ")
}

// exchange sends one query from inside ns.
func exchange(t *testing.T, ns netNS, server, name string, qtype uint16) *dns.Msg {
	t.Helper()
	r, err := exchangeErr(ns, server, name, qtype)
	if err != nil {
		t.Fatalf("query %s at %s: %v", name, server, err)
	}
	return r
}

// exchangeErr is exchange returning its error (for a goroutine).
func exchangeErr(ns netNS, server, name string, qtype uint16) (*dns.Msg, error) {
	var r *dns.Msg
	err := ns.do(func() error {
		q := new(dns.Msg)
		q.SetQuestion(name, qtype)
		q.SetEdns0(1232, false)
		var err error
		r, _, err = (&dns.Client{Timeout: 3 * time.Second}).Exchange(q, net.JoinHostPort(server, "53"))
		return err
	})
	return r, err
}

// sameNXDomain compares two NXDOMAIN answers field by field, ID aside.
func sameNXDomain(t *testing.T, server string, a, b *dns.Msg) {
	t.Helper()
	a, b = a.Copy(), b.Copy()
	a.Id, b.Id = 0, 0
	if a.Rcode != dns.RcodeNameError {
		t.Errorf("@%s: rcode %s, want NXDOMAIN", server, dns.RcodeToString[a.Rcode])
	}
	if a.MsgHdr != b.MsgHdr || !reflect.DeepEqual(fmt.Sprint(a.Question, a.Answer, a.Ns, a.Extra), fmt.Sprint(b.Question, b.Answer, b.Ns, b.Extra)) {
		t.Errorf("@%s: NXDOMAIN answers differ:\n%v\n%v", server, a, b)
	}
}

// With /etc/resolv.conf managed (no systemd-resolved), the system resolver
// of the client's namespace resolves entitled names through the tunnel and
// Internet names through the original nameserver, which must never see an
// internal name; 'cordon down' restores the file, and so does the next
// start after a crash.
//
// The managed file is /etc/netns/<cl1>/resolv.conf, which 'ip netns exec'
// puts at /etc/resolv.conf for dig: the host's own file is never touched.
func TestDNSResolvConfNoLeak(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("SKIP: dig not installed (apt-get install dnsutils)")
	}
	w := newWorld(t)
	w.waitReach(w.nurse, w.svcs["ehr"], 15*time.Second)
	capture := startCapture(t, w.cl1, cl1Addr+":53")

	etc := filepath.Join("/etc/netns", w.cl1.name)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	rc := filepath.Join(etc, "resolv.conf")
	orig := "nameserver " + cl1Addr + "\nsearch hosp.example\n"
	if err := os.WriteFile(rc, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	nurse := w.nurse
	overlay := w.overlayOf("nurse")
	upManaged := func(name string, wantLogs ...string) *proc {
		p := w.start(nurse.ns, name, bin("cordon"), "up", "--state-dir", nurse.stateDir, "--mode", "tun",
			"--interface", nurse.iface, "--dns", "resolv-conf", "--resolv-conf", rc)
		nurse.proc = p
		waitFor(t, 20*time.Second, "resolv.conf to name the cordon stub", func() error {
			if s := p.exited(); s != "" {
				t.Fatalf("%s\n%s", s, p.logs())
			}
			if b, _ := os.ReadFile(rc); !strings.Contains(string(b), "nameserver "+overlay+"\n") {
				return fmt.Errorf("resolv.conf is %q", b)
			}
			for _, l := range append(wantLogs, "resolv.conf points at the cordon stub") {
				if !strings.Contains(p.logs(), l) {
					return fmt.Errorf("no %q in its log yet", l)
				}
			}
			return nil
		})
		return p
	}
	nurse.proc.stop()
	p := upManaged("cordon-nurse-resolvconf")

	// dig with no @server: the namespace's system resolver.
	sys := func(name string) (string, string) {
		var status, answer string
		poll(10*time.Second, 100*time.Millisecond, func() error {
			status, answer = digSystem(t, nurse.ns, name)
			if status == "SERVFAIL" || strings.HasPrefix(status, "dig exit") {
				return fmt.Errorf("%s", status) // the stub has no map yet
			}
			return nil
		})
		return status, answer
	}
	if status, answer := sys("ehr.hosp.internal"); status != "NOERROR" || !strings.Contains(answer, "10.20.0.10") {
		t.Errorf("system resolver, ehr.hosp.internal: %s %q", status, answer)
	}
	for _, name := range []string{"billing.hosp.internal", "nosuch.hosp.internal", "EHR-ADMIN.hosp.internal", "11.0.20.10.in-addr.arpa"} {
		if status, _ := sys(name); status != "NXDOMAIN" {
			t.Errorf("system resolver, %s: %s, want NXDOMAIN", name, status)
		}
	}
	if status, answer := sys("www.example.com"); status != "NOERROR" || !strings.Contains(answer, "192.0.2.80") {
		t.Errorf("system resolver, www.example.com: %s %q, want the upstream's answer", status, answer)
	}
	for _, n := range capture.names() {
		if strings.Contains(strings.ToLower(n), "hosp.internal") || strings.Contains(n, "in-addr.arpa") {
			t.Errorf("LEAK: the upstream resolver saw internal name %s", n)
		}
	}
	if len(capture.names()) == 0 {
		t.Error("the upstream resolver saw nothing: the test did not exercise it")
	}

	// Crash: the file stays managed until the next start restores it.
	p.cmd.Process.Kill()
	<-p.done
	if b, _ := os.ReadFile(rc); !strings.Contains(string(b), overlay) {
		t.Fatalf("after the crash resolv.conf is %q; the test expected it still managed", b)
	}
	p = upManaged("cordon-nurse-resolvconf2", "resolv.conf restored")
	if !p.terminate(stopGrace) {
		t.Fatal("cordon up did not stop on SIGTERM")
	}
	if b, _ := os.ReadFile(rc); string(b) != orig {
		t.Errorf("after cordon down resolv.conf is %q, want the original %q", b, orig)
	}
}

// capture is a DNS server that records every name it is asked and answers
// A 192.0.2.80.
type capture struct {
	mu   sync.Mutex
	seen []string
}

func (c *capture) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.seen...)
}

func startCapture(t *testing.T, ns netNS, addr string) *capture {
	t.Helper()
	var pc net.PacketConn
	if err := ns.do(func() (err error) { pc, err = net.ListenPacket("udp", addr); return }); err != nil {
		t.Fatal(err)
	}
	c := &capture{}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(wr dns.ResponseWriter, q *dns.Msg) {
		c.mu.Lock()
		c.seen = append(c.seen, q.Question[0].Name)
		c.mu.Unlock()
		r := new(dns.Msg)
		r.SetReply(q)
		if rr, err := dns.NewRR(q.Question[0].Name + " 60 IN A 192.0.2.80"); err == nil && q.Question[0].Qtype == dns.TypeA {
			r.Answer = []dns.RR{rr}
		}
		wr.WriteMsg(r)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return c
}

// digSystem runs dig in ns against the namespace's /etc/resolv.conf.
func digSystem(t *testing.T, ns netNS, name string) (status, answer string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, errOut, code := run(ctx, "", nil, "ip", "netns", "exec", ns.name, "dig", "+tries=1", "+time=2", "+noall", "+comments", "+answer", name, "A")
	if code != 0 {
		return fmt.Sprintf("dig exit %d: %s", code, strings.TrimSpace(errOut+out)), ""
	}
	var ans []string
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, "status: "); i >= 0 {
			status = strings.TrimSuffix(strings.Fields(l[i+len("status: "):])[0], ",")
		} else if l != "" && !strings.HasPrefix(l, ";") {
			ans = append(ans, strings.Join(strings.Fields(l), " "))
		}
	}
	return status, strings.Join(ans, "; ")
}
