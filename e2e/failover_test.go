package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Gateway failover (issue 13, part 3): three gateways serve segment
// clinical; four clinicians' devices hold request loops to ehr (a new TCP
// connection per request). The gateway that carries the most of them is
// killed (SIGKILL); each device must move to another gateway of the
// segment by itself and succeed with a new request within failoverBound.
// Then once more with the controller stopped as well.
//
// The world of newWorld plus (gw1 is the world's gateway):
//
//	                 [wan ns] br0 192.0.2.0/24
//	  .2 |          .3 |          .4 |        .11 |  .13 .14 .15 |
//	[gw ns]      [gw2 ns]      [gw3 ns]    [cl1 ns]   [cl3..cl5 ns]
//	gw1          gw2           gw3         nurse      nurse2..4
//	app0 .1      app0 .2       app0 .3
//	   \____________|_____________/
//	[app ns] eth0 (gw1), eth2, eth3: 10.20.0.10 ehr; a /32 route back to
//	each gateway's app0 (the gateways masquerade)

// failoverBound is what the test asserts for each device's first
// successful new request after the kill: the goal is 3 s (p99, reported in
// docs/benchmarks.md); the bound leaves room for a busy CI host.
const failoverBound = 6 * time.Second

// failoverRuns is how many gateways are killed with the controller up.
const failoverRuns = 3

type extraGateway struct {
	name, wan, app, iface string
	ns                    netNS
	dir, tokFile          string
	proc                  *proc
}

func TestGatewayFailover(t *testing.T) {
	// Not parallel: it runs alone before the parallel tests, so its
	// processes (several gateways, kills, restarts) neither slow the
	// others' 1 s timing bounds nor are slowed by them.
	cl := newCluster(t, 4)
	w, gws, names, clients, overlay := cl.w, cl.gws, cl.names, cl.clients, cl.overlay
	ehr := w.svcs["ehr"]
	loops := startLoops(t, clients, ehr)
	var took []time.Duration
	for run := range failoverRuns + 1 {
		withController := run < failoverRuns
		if !withController {
			w.controller.stop() // SIGTERM: agents see it gone at once
			t.Logf("run %d: controller stopped at %s", run+1, time.Now().UTC().Format("15:04:05.000"))
		}
		// Every device on a live gateway, its loop succeeding.
		users := map[string]string{} // user → gateway carrying ehr
		waitFor(t, 30*time.Second, "every device routing ehr through a live gateway", func() error {
			for _, c := range clients {
				g, err := carrier(c, names)
				if err != nil {
					return err
				}
				if gws[g] == nil || gws[g].proc.exited() != "" {
					return fmt.Errorf("%s routes ehr through %q, not a live gateway", c.user, g)
				}
				users[c.user] = g
			}
			return nil
		})
		count := map[string]int{}
		for _, g := range users {
			count[g]++
		}
		victim := ""
		for _, name := range slices.Sorted(maps.Keys(count)) {
			if victim == "" || count[name] > count[victim] {
				victim = name
			}
		}
		var moved []*client
		for _, c := range clients {
			if users[c.user] == victim {
				moved = append(moved, c)
			}
		}
		t.Logf("run %d (controller %s): devices per gateway %v; killing %s", run+1, map[bool]string{true: "up", false: "stopped"}[withController], count, victim)
		for _, c := range clients {
			loops.waitSuccess(t, c, time.Now(), 15*time.Second)
		}
		g := gws[victim]
		g.proc.cmd.Process.Kill()
		<-g.proc.done
		killed := time.Now()
		t.Logf("run %d: %s killed at %s", run+1, victim, killed.UTC().Format("15:04:05.000"))
		if g.name == gwName {
			w.gateway = nil // checkAlive must not fail on it
		}
		for _, c := range moved {
			d := loops.waitSuccess(t, c, killed, 30*time.Second)
			t.Logf("run %d: %s reached ehr with a new request %v after %s was killed", run+1, c.user, d.Round(time.Millisecond), victim)
			took = append(took, d)
			if d > failoverBound {
				t.Errorf("run %d: %s needed %v after %s was killed, want ≤ %v", run+1, c.user, d.Round(time.Millisecond), victim, failoverBound)
			}
		}
		for _, c := range clients {
			if g, err := carrier(c, names); err != nil || g == victim {
				t.Errorf("run %d: %s routes ehr through %q (%v) after %s was killed", run+1, c.user, g, err, victim)
			}
		}
		// DNS follows: the stub asks the segment's new gateway.
		for _, c := range moved {
			r := exchange(t, c.ns, overlay[c.user], "ehr.hosp.internal.", dns.TypeA)
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || !strings.Contains(r.Answer[0].String(), "10.20.0.10") {
				t.Errorf("run %d: %s resolving ehr.hosp.internal after %s was killed: %v", run+1, c.user, victim, r)
			}
		}
		if run == 0 {
			// The controller's view: dead past the QUIC idle timeout
			// and the grace period.
			waitFor(t, 60*time.Second, "gateway list to show "+victim+" dead", func() error {
				for _, s := range w.gatewayStates() {
					if s.Name == victim && s.State == "dead" && s.Version != "" && s.LastSeen != "" {
						return nil
					}
				}
				return fmt.Errorf("gateway list: %+v", w.gatewayStates())
			})
		}
		if withController { // back for the next run
			if g.name == gwName {
				g.proc = w.runGateway(fmt.Sprintf("gateway-back%d", run+1))
				w.gateway = g.proc
			} else {
				g.proc = w.runExtraGateway(g, fmt.Sprintf("%s-back%d", g.name, run+1))
			}
			waitFor(t, 30*time.Second, victim+" up again", func() error {
				for _, s := range w.gatewayStates() {
					if s.Name == victim && s.State == "up" {
						return nil
					}
				}
				return fmt.Errorf("gateway list: %+v", w.gatewayStates())
			})
		}
	}
	loops.stop()
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	if len(took) == 0 {
		t.Fatal("no device was on a killed gateway: nothing measured")
	}
	pct := func(p float64) time.Duration { return took[min(len(took)-1, int(p*float64(len(took))))] }
	t.Logf("FAILOVER: %d measurements over %d kills: p50 %v, p99 %v, max %v (goal 3 s, bound %v)",
		len(took), failoverRuns+1, pct(0.5).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond), failoverBound)
	// No unauthorized access meanwhile: the clerk still reaches nothing.
	w.unreachable(w.clerk, ehr)
}

// threeGateways enrolls and starts gw2 and gw3 in segment clinical beside
// the world's gw1, each with the flags extra gives for its WAN address
// (nil: none), and waits until the controller has all three up. It
// returns them by name, gw1 included.
func (w *world) threeGateways(extra func(wan string) []string) map[string]*extraGateway {
	t := w.t
	t.Helper()
	gws := map[string]*extraGateway{gwName: {name: gwName, wan: gwWANAddr, app: gwAppAddr, iface: w.gwIface, ns: w.gw, proc: w.gateway}}
	for i, name := range []string{"gw2", "gw3"} {
		gws[name] = w.addExtraGateway(name, i, extra)
	}
	waitFor(t, 30*time.Second, "three gateways up", func() error {
		up := 0
		for _, g := range w.gatewayStates() {
			if g.State == "up" {
				up++
			}
		}
		if up != 3 {
			return fmt.Errorf("%d gateways up: %+v", up, w.gatewayStates())
		}
		return nil
	})
	return gws
}

// cluster is newWorld with gateways gw2 and gw3 beside gw1, all three up,
// and clients (nurse, nurse2, ...) in the clinicians group reaching ehr.
type cluster struct {
	w       *world
	gws     map[string]*extraGateway // by name
	names   map[string]string        // gateway ID → name
	clients []*client
	overlay map[string]string // user → device overlay address (its DNS stub)
}

func newCluster(t *testing.T, nClients int) *cluster {
	w := newWorld(t)
	c := &cluster{w: w, gws: w.threeGateways(nil), names: map[string]string{}, overlay: map[string]string{}}
	c.noteNames()
	c.clients = []*client{w.nurse}
	for i := range nClients - 1 {
		user := fmt.Sprintf("nurse%d", i+2)
		ns := w.addClientNS(fmt.Sprintf("cl%d", i+3), fmt.Sprintf("192.0.2.%d", 13+i))
		cl := w.newClient(user, ns, ifaceName(fmt.Sprintf("p%d", i), w.seq))
		w.mustCtl("", "group", "add-member", groupName, user)
		w.login(cl)
		w.up(cl)
		c.clients = append(c.clients, cl)
	}
	for _, cl := range c.clients {
		w.waitReach(cl, w.svcs["ehr"], 30*time.Second)
	}
	for _, d := range w.devices() {
		c.overlay[d.User] = d.OverlayAddr
	}
	return c
}

// noteNames maps the gateways' IDs to their names.
func (c *cluster) noteNames() {
	for _, g := range c.w.gatewayStates() {
		c.names[g.ID] = g.Name
	}
}

// addExtraGateway makes gateway name's namespace (the i-th extra one),
// issues its enrollment token and starts it with the flags extra gives
// for its WAN address (nil: none).
func (w *world) addExtraGateway(name string, i int, extra func(wan string) []string) *extraGateway {
	t := w.t
	t.Helper()
	g := &extraGateway{name: name, wan: fmt.Sprintf("192.0.2.%d", 3+i), app: fmt.Sprintf("10.20.0.%d", 2+i),
		iface: ifaceName(fmt.Sprintf("x%d", i), w.seq), dir: filepath.Join(w.dir, name), tokFile: filepath.Join(w.dir, name+"-token")}
	w.addGatewayNS(g, i)
	tok := strings.TrimSpace(w.mustCtl("", "gateway", "token", "create", "--segment", segmentName, "--name", name))
	if err := os.WriteFile(g.tokFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var flags []string
	if extra != nil {
		flags = extra(g.wan)
	}
	g.proc = w.runExtraGateway(g, name, flags...)
	return g
}

// addGatewayNS makes gateway g's namespace: WAN on the bridge, app0 toward
// the app namespace (eth<2+i> there), forwarding on.
func (w *world) addGatewayNS(g *extraGateway, i int) {
	t := w.t
	t.Helper()
	g.ns = w.addNS(g.name)
	appIf := fmt.Sprintf("eth%d", 2+i)
	port := "p-" + g.name
	ip(t, w.wan, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", g.ns.name)
	ip(t, w.wan, "link", "set", port, "master", "br0", "up")
	ip(t, g.ns, "addr", "add", g.wan+"/24", "dev", "eth0")
	ip(t, g.ns, "link", "set", "eth0", "up")
	ip(t, g.ns, "link", "add", "app0", "type", "veth", "peer", "name", appIf, "netns", w.app.name)
	ip(t, g.ns, "addr", "add", g.app+"/24", "dev", "app0")
	ip(t, g.ns, "link", "set", "app0", "up")
	ip(t, w.app, "link", "set", appIf, "up")
	// Replies to this gateway's masqueraded flows go back its own way.
	ip(t, w.app, "route", "add", g.app+"/32", "dev", appIf)
	mustRun(t, "ip", "netns", "exec", g.ns.name, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	t.Cleanup(func() { os.Remove(filepath.Join("/var/run/wireguard", g.iface+".sock")) })
}

// addClientNS makes a client namespace on the WAN bridge.
func (w *world) addClientNS(role, addr string) netNS {
	t := w.t
	t.Helper()
	ns := w.addNS(role)
	port := "p-" + role
	ip(t, w.wan, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
	ip(t, w.wan, "link", "set", port, "master", "br0", "up")
	ip(t, ns, "addr", "add", addr+"/24", "dev", "eth0")
	ip(t, ns, "link", "set", "eth0", "up")
	return ns
}

// addNS creates a namespace of this world, deleted at cleanup.
func (w *world) addNS(role string) netNS {
	t := w.t
	ns := netNS{name: w.id + "-" + role}
	mustRun(t, "ip", "netns", "add", ns.name)
	t.Cleanup(func() {
		if out, err := sh("ip", "netns", "pids", ns.name); err == nil && strings.TrimSpace(out) != "" {
			t.Errorf("processes still running in %s at teardown: %s", ns.name, out)
			for _, p := range strings.Fields(out) {
				sh("kill", "-9", p)
			}
		}
		if out, err := sh("ip", "netns", "del", ns.name); err != nil {
			t.Errorf("delete netns %s: %v %s", ns.name, err, out)
		}
	})
	ip(t, ns, "link", "set", "lo", "up")
	return ns
}

// runExtraGateway starts (or restarts) gateway g, with extra flags.
func (w *world) runExtraGateway(g *extraGateway, name string, extra ...string) *proc {
	return w.start(g.ns, name, append([]string{bin("cordon-gateway"),
		"--state-dir", g.dir, "--controller", controllerURL, "--ca-cert", w.caFile(), "--token-file", g.tokFile,
		"--mode", "tun", "--interface", g.iface, "--listen-port", "51820", "--endpoint", g.wan + ":51820"}, extra...)...)
}

type gatewayState struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	State    string `json:"state"`
	LastSeen string `json:"last_seen"`
	Version  string `json:"version"`
	Peers    *int   `json:"peers"`
}

func (w *world) gatewayStates() []gatewayState {
	var gws []gatewayState
	w.ctlJSON(&gws, "gateway", "list")
	return gws
}

// carrier is the gateway (by name; names maps IDs to names) through which
// c routes ehr, from 'cordon status'.
func carrier(c *client, names map[string]string) (string, error) {
	st, err := c.status()
	if err != nil {
		return "", err
	}
	for _, g := range st.Gateways {
		if slices.Contains(g.AllowedIPs, "10.20.0.10/32") {
			return names[g.ID], nil
		}
	}
	return "", fmt.Errorf("%s routes ehr through no gateway: %+v", c.user, st.Gateways)
}

// requestLoops are the devices' request loops: each GETs ehr on a new
// connection about 10 times a second (a 500 ms dial timeout, as an
// impatient app; 50 ms between a failure and the next try), recording when
// each success started and ended.
type requestLoops struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	ok     map[*client][][2]time.Time // start and end of each successful request
	failed map[*client][]failedRequest
}

// failedRequest is one request of a loop that failed.
type failedRequest struct {
	start time.Time
	err   string
}

func startLoops(t *testing.T, clients []*client, s *service) *requestLoops {
	ctx, cancel := context.WithCancel(t.Context())
	l := &requestLoops{cancel: cancel, ok: map[*client][][2]time.Time{}, failed: map[*client][]failedRequest{}}
	for _, c := range clients {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				start := time.Now()
				body, err := c.getTimeout(s.addr, 500*time.Millisecond)
				pause := 50 * time.Millisecond // after a failure
				if err == nil && body == s.name {
					l.mu.Lock()
					l.ok[c] = append(l.ok[c], [2]time.Time{start, time.Now()})
					l.mu.Unlock()
					pause = 100 * time.Millisecond // about 10 requests a second, as a busy EHR client
				} else if ctx.Err() == nil {
					if err == nil {
						err = fmt.Errorf("answer %q", body)
					}
					l.mu.Lock()
					l.failed[c] = append(l.failed[c], failedRequest{start, err.Error()})
					l.mu.Unlock()
				}
				select {
				case <-ctx.Done():
				case <-time.After(pause):
				}
			}
		})
	}
	t.Cleanup(l.stop)
	return l
}

func (l *requestLoops) stop() { l.cancel(); l.wg.Wait() }

// failures returns the requests that started in [from, to) and failed,
// by user, and how many requests started then in all.
func (l *requestLoops) failures(from, to time.Time) (map[string][]failedRequest, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out, n := map[string][]failedRequest{}, 0
	in := func(t time.Time) bool { return !t.Before(from) && t.Before(to) }
	for c, rs := range l.ok {
		for _, r := range rs {
			if in(r[0]) {
				n++
			}
		}
		for _, f := range l.failed[c] {
			if in(f.start) {
				out[c.user] = append(out[c.user], f)
				n++
			}
		}
	}
	for c, fs := range l.failed {
		if _, seen := l.ok[c]; seen {
			continue
		}
		for _, f := range fs {
			if in(f.start) {
				out[c.user] = append(out[c.user], f)
				n++
			}
		}
	}
	return out, n
}

// waitSuccess waits for c's first successful request started at or after
// since and returns how long after since it ended: the time to the first
// successful new request.
func (l *requestLoops) waitSuccess(t *testing.T, c *client, since time.Time, timeout time.Duration) time.Duration {
	t.Helper()
	var d time.Duration
	waitFor(t, timeout, c.user+"'s request loop to succeed", func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, r := range l.ok[c] {
			if !r[0].Before(since) {
				d = r[1].Sub(since)
				return nil
			}
		}
		return fmt.Errorf("no success since %v", since.Format(time.TimeOnly))
	})
	return d
}
