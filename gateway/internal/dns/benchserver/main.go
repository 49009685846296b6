// Command benchserver runs the gateway's split-horizon DNS server on
// loopback with a synthetic hospital (bench/dns drives it; it is not
// shipped). Devices get loopback overlay addresses (127.1.0.0/16 and up) so
// a load generator can ask as any of them by binding that source address.
//
// It also writes the same names as a static zone file for CoreDNS, and the
// workload (which device may see which app) for the load generator.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/cordonhq/cordon/gateway/internal/dns"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
)

func main() {
	apps := flag.Int("apps", 10000, "number of apps")
	devices := flag.Int("devices", 100000, "number of devices in the policy")
	groups := flag.Int("groups", 100, "groups; device d is in group d%groups, which may reach apps/groups apps")
	listen := flag.String("listen", "127.0.0.1:5300", "UDP address to serve on")
	zoneFile := flag.String("zone-file", "", "write the same names as a zone file for CoreDNS here")
	workload := flag.String("workload", "", "write 'device-address entitled-app hidden-app' lines here")
	flag.Parse()

	const zone = "hosp.internal."
	var wireApps []controlproto.App
	var rules []policy.Rule
	appAddr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	for i := range *apps {
		a := controlproto.App{
			Name: fmt.Sprintf("app%05d", i), DNSName: fmt.Sprintf("app%05d.%s", i, zone),
			Addr: netip.PrefixFrom(appAddr(i), 32), Proto: policy.ProtoTCP,
			Ports: []policy.PortRange{{First: 443, Last: 443}},
		}
		wireApps = append(wireApps, a)
		rules = append(rules, policy.Rule{ID: policy.RuleID("r-" + a.Name), App: a.Name, Dst: []netip.Prefix{a.Addr}, Proto: a.Proto, Ports: a.Ports})
	}
	perGroup := *apps / *groups
	groupRules := make([][]policy.RuleID, *groups)
	for g := range *groups {
		for j := range perGroup {
			groupRules[g] = append(groupRules[g], rules[g*perGroup+j].ID)
		}
	}
	devAddr := func(d int) netip.Addr { return netip.AddrFrom4([4]byte{127, byte(1 + d>>16), byte(d >> 8), byte(d)}) }
	peers := make([]policy.Peer, *devices)
	for d := range *devices {
		peers[d] = policy.Peer{DeviceID: fmt.Sprintf("dev-%06d", d), User: fmt.Sprintf("user-%06d", d), Addr: devAddr(d), Rules: groupRules[d%*groups]}
	}
	pol, err := policy.Compile(rules, peers)
	if err != nil {
		log.Fatal(err)
	}
	events := make(chan controlproto.FlowEvent, 4096)
	go func() {
		for range events { // the controller's side, discarded
		}
	}()
	srv, err := dns.New(dns.Config{
		Policy: func() dns.Decider { return pol }, Events: events,
		QueriesPerSecond: 1e6, Burst: 1e6, // one loopback host plays every device
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.SetMap([]controlproto.DNSZone{{Name: zone, TTL: 5}}, wireApps); err != nil {
		log.Fatal(err)
	}
	if *zoneFile != "" {
		f, err := os.Create(*zoneFile)
		if err != nil {
			log.Fatal(err)
		}
		w := bufio.NewWriter(f)
		fmt.Fprintf(w, "$ORIGIN %s\n$TTL 5\n@ IN SOA %s hostmaster.%s 1 3600 600 86400 5\n@ IN NS ns.%s\nns IN A 127.0.0.1\n", zone, zone, zone, zone)
		for i, a := range wireApps {
			fmt.Fprintf(w, "app%05d IN A %s\n", i, a.Addr.Addr())
		}
		w.Flush()
		f.Close()
	}
	if *workload != "" {
		f, err := os.Create(*workload)
		if err != nil {
			log.Fatal(err)
		}
		w := bufio.NewWriter(f)
		// 2,000 devices spread over all groups: the entitled app is one of
		// the device's group, the hidden one from the next group.
		for k := range 2000 {
			d := k * (*devices / 2000)
			g := d % *groups
			fmt.Fprintf(w, "%s app%05d.%s app%05d.%s\n", devAddr(d), g*perGroup+k%perGroup, zone, ((g+1)%*groups)*perGroup+k%perGroup, zone)
		}
		w.Flush()
		f.Close()
	}
	pc, err := net.ListenPacket("udp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	srv.ServeUDP(pc)
	fmt.Printf("ready: %d apps, %d devices, serving on %s\n", *apps, *devices, pc.LocalAddr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	srv.Close()
	st := srv.Stats()
	fmt.Printf("stats: %+v\n", st)
}
