package netmap

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

var updateGolden = flag.Bool("update", false, "rewrite golden files")

var exportNow = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func TestExportGolden(t *testing.T) {
	snap := snapshot(t)
	// One of every protocol shape the directory allows.
	pfx := netip.MustParsePrefix
	snap.Apps = append(snap.Apps,
		store.App{Name: "intranet", Segment: "lan", DNSName: "intranet.h.internal", Addr: pfx("10.20.0.80/32"), Proto: policy.ProtoAny, Ports: []policy.PortRange{{First: 443, Last: 443}, {First: 80, Last: 80}}, Classification: store.ClassPublic},
		store.App{Name: "pinger", Segment: "lab", DNSName: "ping.h.internal", Addr: pfx("10.30.0.0/28"), Proto: policy.ProtoICMP, Classification: store.ClassInternal},
		store.App{Name: "stream", Segment: "lab", DNSName: "stream.h.internal", Addr: pfx("10.30.0.9/32"), Proto: policy.ProtoUDP, Ports: []policy.PortRange{{First: 5000, Last: 5010}}, Classification: store.ClassInternal},
		store.App{Name: "wiki", Segment: "lan", DNSName: "wiki.h.internal", Addr: pfx("10.20.0.90/32"), Proto: policy.ProtoTCP, Ports: []policy.PortRange{policy.AllPorts}, Classification: store.ClassInternal},
	)
	snap.Groups = append(snap.Groups, store.Group{Name: "empty"})
	snap.Rules = append(snap.Rules, store.Rule{Name: "lab-intranet", Group: "lab", App: "intranet"})
	got, err := Export(snap, exportNow)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Export(shuffled(snap, rand.New(rand.NewPCG(1, 2))), exportNow)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, again) {
		t.Fatalf("export depends on the store's list order:\n%s\n---\n%s", got, again)
	}
	golden := filepath.Join("testdata", "export.golden.yaml")
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestExportGolden -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("export differs from %s (rerun with -update if intended):\n%s", golden, got)
	}
}

func TestExportRefusesInvalidDirectory(t *testing.T) {
	snap := snapshot(t)
	snap.Apps[0].Addr = netip.MustParsePrefix("192.0.2.1/32") // outside its segment
	if _, err := Export(snap, exportNow); err == nil {
		t.Fatal("export of an app outside its segment succeeded; want an error")
	}
}

// shuffled is snap with every list (and group's members) in random order.
func shuffled(snap *store.Snapshot, rng *rand.Rand) *store.Snapshot {
	s := *snap
	s.Segments, s.Apps, s.Users, s.Rules = slices.Clone(s.Segments), slices.Clone(s.Apps), slices.Clone(s.Users), slices.Clone(s.Rules)
	s.Groups = slices.Clone(s.Groups)
	for i := range s.Groups {
		s.Groups[i].Members = slices.Clone(s.Groups[i].Members)
		rng.Shuffle(len(s.Groups[i].Members), func(a, b int) {
			s.Groups[i].Members[a], s.Groups[i].Members[b] = s.Groups[i].Members[b], s.Groups[i].Members[a]
		})
	}
	rng.Shuffle(len(s.Segments), func(a, b int) { s.Segments[a], s.Segments[b] = s.Segments[b], s.Segments[a] })
	rng.Shuffle(len(s.Apps), func(a, b int) { s.Apps[a], s.Apps[b] = s.Apps[b], s.Apps[a] })
	rng.Shuffle(len(s.Groups), func(a, b int) { s.Groups[a], s.Groups[b] = s.Groups[b], s.Groups[a] })
	rng.Shuffle(len(s.Rules), func(a, b int) { s.Rules[a], s.Rules[b] = s.Rules[b], s.Rules[a] })
	return &s
}

// randomDirectory builds a directory the admin API could have produced.
func randomDirectory(t *testing.T, rng *rand.Rand) *store.Snapshot {
	snap := &store.Snapshot{}
	nseg := 1 + rng.IntN(3)
	for i := range nseg {
		snap.Segments = append(snap.Segments, store.Segment{Name: fmt.Sprintf("seg-%d", i), CIDRs: []netip.Prefix{
			netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 24),
			netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 9, 0}), 24),
		}})
		snap.Gateways = append(snap.Gateways, store.Gateway{
			ID: fmt.Sprintf("gw-%d", i), Name: fmt.Sprintf("gw-%d", i), Segment: fmt.Sprintf("seg-%d", i), PublicKey: key(t),
			OverlayAddr: netip.AddrFrom4([4]byte{100, 64, 0, byte(1 + i)}), Endpoint: fmt.Sprintf("192.0.2.%d:51820", 1+i),
		})
	}
	protos := []policy.Proto{policy.ProtoTCP, policy.ProtoUDP, policy.ProtoICMP, policy.ProtoICMP6, policy.ProtoAny}
	classes := []store.Classification{store.ClassPHI, store.ClassInternal, store.ClassPublic, ""}
	napps := 1 + rng.IntN(6)
	for i := range napps {
		seg := rng.IntN(nseg)
		a := store.App{
			Name: fmt.Sprintf("app-%d", i), Segment: fmt.Sprintf("seg-%d", seg), DNSName: fmt.Sprintf("app-%d.h.internal", i),
			Addr:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(seg), byte(9 * rng.IntN(2)), byte(16 * (1 + i))}), 32-4*rng.IntN(2)),
			Proto: protos[rng.IntN(len(protos))], Classification: classes[rng.IntN(len(classes))],
		}
		if a.Proto != policy.ProtoICMP && a.Proto != policy.ProtoICMP6 {
			switch rng.IntN(4) {
			case 0:
				a.Ports = []policy.PortRange{policy.AllPorts}
			case 1:
				if a.Proto == policy.ProtoAny {
					break // any may go without ports
				}
				fallthrough
			default:
				for range 1 + rng.IntN(3) {
					first := uint16(1 + rng.IntN(1000))
					a.Ports = append(a.Ports, policy.PortRange{First: first, Last: first + uint16(rng.IntN(3))})
				}
			}
		}
		snap.Apps = append(snap.Apps, a)
	}
	nusers := 1 + rng.IntN(6)
	for i := range nusers {
		snap.Users = append(snap.Users, store.User{Name: fmt.Sprintf("user-%d", i), Disabled: rng.IntN(5) == 0})
		snap.Devices = append(snap.Devices, store.Device{
			ID: fmt.Sprintf("dev-%d", i), User: fmt.Sprintf("user-%d", i), PublicKey: key(t),
			OverlayAddr: netip.AddrFrom4([4]byte{100, 64, 1, byte(i)}),
		})
	}
	ngroups := rng.IntN(4)
	for i := range ngroups {
		g := store.Group{Name: fmt.Sprintf("group-%d", i)}
		for u := range nusers {
			if rng.IntN(2) == 0 {
				g.Members = append(g.Members, fmt.Sprintf("user-%d", u))
			}
		}
		snap.Groups = append(snap.Groups, g)
	}
	if ngroups > 0 {
		seen := map[[2]int]bool{}
		for i := range rng.IntN(8) {
			k := [2]int{rng.IntN(ngroups), rng.IntN(napps)}
			if seen[k] {
				continue
			}
			seen[k] = true
			snap.Rules = append(snap.Rules, store.Rule{Name: fmt.Sprintf("rule-%d", i), Group: fmt.Sprintf("group-%d", k[0]), App: fmt.Sprintf("app-%d", k[1])})
		}
	}
	return snap
}

// directoryAllows is the skeleton's decision: the user is entitled by a
// rule, and the flow matches the app's protocol and ports as the gateway
// matches a skeleton rule.
func directoryAllows(ix *Index, user string, a store.App, proto policy.Proto, port uint16) bool {
	if len(refEntitled(ix, user, a.Name)) == 0 {
		return false
	}
	if a.Proto != policy.ProtoAny && a.Proto != proto {
		return false
	}
	return dirPortAllowed(a.Ports, proto, port)
}

func dirPortAllowed(ports []policy.PortRange, proto policy.Proto, port uint16) bool {
	if proto != policy.ProtoTCP && proto != policy.ProtoUDP || len(ports) == 0 {
		return true
	}
	return slices.ContainsFunc(ports, func(r policy.PortRange) bool { return r.Contains(port) })
}

// probes are the flows tried against an app: its port boundaries and a
// few fixed ports, on every protocol.
func probes(a store.App) [][2]int {
	ports := []int{1, 22, 443, 1000, 65535}
	for _, r := range a.Ports {
		ports = append(ports, int(r.First), int(r.Last), int(r.Last)+1, int(r.First)-1)
	}
	var out [][2]int
	for _, proto := range []policy.Proto{policy.ProtoTCP, policy.ProtoUDP} {
		for _, p := range ports {
			if p >= 0 && p <= 65535 {
				out = append(out, [2]int{int(proto), p})
			}
		}
	}
	return append(out, [2]int{int(policy.ProtoICMP), 0}, [2]int{int(policy.ProtoICMP6), 0})
}

// TestExportAgreesWithDirectory is the proof that both views agree: for
// random directories, the exported file parses, and for every user, app
// and flow the policy's reference evaluator (in a session with no MFA, no
// posture, no tags: the least a device can have) decides exactly what the
// directory decides. The controller's maps agree too: with the export
// applied, every gateway has the same peers and every device routes the
// same addresses as under the directory.
func TestExportAgreesWithDirectory(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 26))
	n := 300
	if testing.Short() {
		n = 50
	}
	checked := 0
	for iter := range n {
		snap := randomDirectory(t, rng)
		src, err := Export(snap, exportNow)
		if err != nil {
			t.Fatalf("iteration %d: %v", iter, err)
		}
		pol, err := policyfile.Parse(ExportFile, src)
		if err != nil {
			t.Fatalf("iteration %d: export does not parse: %v\n%s", iter, err, src)
		}
		dir := NewIndex(snap)
		for _, u := range snap.Users {
			for _, a := range snap.Apps {
				for _, pr := range probes(a) {
					proto, port := policy.Proto(pr[0]), uint16(pr[1])
					want := directoryAllows(dir, u.Name, a, proto, port)
					res := pol.Evaluate(policyfile.Request{User: u.Name, App: a.Name, Proto: proto, Port: port, At: exportNow})
					got := res.Verdict == policy.Allow
					if u.Disabled {
						// The policy does not know who is disabled; the
						// controller gives a disabled user no peers and no
						// routes (checked below). The directory refuses.
						want, got = false, false
					}
					if got != want {
						t.Fatalf("iteration %d: user %s app %s %s/%d: policy says %v (%v), directory says %v\n%s",
							iter, u.Name, a.Name, proto, port, res.Verdict, res.Reason, want, src)
					}
					checked++
				}
			}
		}

		applied := *snap
		applied.Policy = &store.PolicyVersion{Version: 1, File: ExportFile, Source: src}
		pix := NewIndex(&applied)
		if err := pix.PolicyError(); err != nil {
			t.Fatalf("iteration %d: %v", iter, err)
		}
		for _, gw := range snap.Gateways {
			if want, got := peerIDs(dir.GatewayMap(gw).Peers), peerIDs(pix.GatewayMap(gw).Peers); !slices.Equal(got, want) {
				t.Fatalf("iteration %d: gateway %s peers under the export %v, under the directory %v\n%s", iter, gw.ID, got, want, src)
			}
		}
		for _, d := range snap.Devices {
			want, got := allowedIPs(dir.ClientMap(d).Gateways), allowedIPs(pix.ClientMap(d).Gateways)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("iteration %d: device %s routes under the export %v, under the directory %v\n%s", iter, d.ID, got, want, src)
			}
		}
	}
	t.Logf("%d directories, %d decisions compared", n, checked)
}

func peerIDs(peers []controlproto.GatewayPeer) []string {
	var out []string
	for _, p := range peers {
		out = append(out, p.DeviceID)
	}
	return out
}

func allowedIPs(gws []controlproto.ClientGateway) map[string][]netip.Prefix {
	out := map[string][]netip.Prefix{}
	for _, g := range gws {
		out[g.GatewayID] = g.AllowedIPs
	}
	return out
}
