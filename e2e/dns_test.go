package e2e

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"reflect"
	"strings"
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
	var r *dns.Msg
	err := ns.do(func() error {
		q := new(dns.Msg)
		q.SetQuestion(name, qtype)
		q.SetEdns0(1232, false)
		var err error
		r, _, err = (&dns.Client{Timeout: 3 * time.Second}).Exchange(q, net.JoinHostPort(server, "53"))
		return err
	})
	if err != nil {
		t.Fatalf("query %s at %s: %v", name, server, err)
	}
	return r
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
