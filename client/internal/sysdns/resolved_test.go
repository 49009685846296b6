package sysdns

import (
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/cordonhq/cordon/client/internal/dbustest"
)

// fakeResolved records the Manager calls systemd-resolved would get.
type fakeResolved struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeResolved) rec(s string) *dbus.Error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
	return nil
}

type linkDNS struct {
	Family  int32
	Address []byte
}

type linkDomain struct {
	Domain      string
	RoutingOnly bool
}

func (f *fakeResolved) SetLinkDNS(i int32, a []linkDNS) *dbus.Error {
	return f.rec("SetLinkDNS " + strings.Join(func() []string {
		var s []string
		for _, x := range a {
			s = append(s, net.IP(x.Address).String())
		}
		return s
	}(), ","))
}

func (f *fakeResolved) SetLinkDomains(i int32, d []linkDomain) *dbus.Error {
	var s []string
	for _, x := range d {
		if x.RoutingOnly {
			s = append(s, "~"+x.Domain)
		} else {
			s = append(s, x.Domain)
		}
	}
	return f.rec("SetLinkDomains " + strings.Join(s, ","))
}

func (f *fakeResolved) SetLinkDefaultRoute(i int32, b bool) *dbus.Error {
	if b {
		return f.rec("SetLinkDefaultRoute true")
	}
	return f.rec("SetLinkDefaultRoute false")
}
func (f *fakeResolved) SetLinkLLMNR(i int32, m string) *dbus.Error { return f.rec("SetLinkLLMNR " + m) }
func (f *fakeResolved) SetLinkMulticastDNS(i int32, m string) *dbus.Error {
	return f.rec("SetLinkMulticastDNS " + m)
}
func (f *fakeResolved) RevertLink(i int32) *dbus.Error { return f.rec("RevertLink") }

// TestResolvedOverDBus runs a private bus with a fake resolved on it and
// checks the calls (and their D-Bus signatures) sysdns makes.
func TestResolvedOverDBus(t *testing.T) {
	conn := dbustest.Own(t, dbustest.SystemBus(t), resolveDest)
	fake := &fakeResolved{}
	if err := conn.Export(fake, resolvePath, "org.freedesktop.resolve1.Manager"); err != nil {
		t.Fatal(err)
	}

	m, err := New(Config{Mode: ModeResolved, Interface: "lo", Stub: stub})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetZones([]string{"Hosp.Internal.", "0.20.10.in-addr.arpa."}); err != nil {
		t.Fatal(err)
	}
	if err := m.SetZones([]string{"hosp.internal", "0.20.10.in-addr.arpa"}); err != nil { // no change
		t.Fatal(err)
	}
	if up := m.Upstream(); len(up) != 0 {
		t.Errorf("upstream %v: resolved mode sends the stub internal names only", up)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m.Close()
	want := []string{
		"SetLinkDNS 100.64.0.11",
		"SetLinkDomains ~0.20.10.in-addr.arpa,~hosp.internal",
		"SetLinkDefaultRoute false",
		"SetLinkLLMNR no",
		"SetLinkMulticastDNS no",
		"RevertLink",
	}
	fake.mu.Lock()
	got := append([]string(nil), fake.calls...)
	fake.mu.Unlock()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("calls:\n got %q\nwant %q", got, want)
	}
}
