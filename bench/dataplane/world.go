package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The bench's world, one namespace a role (names dpb<pid>-<role>):
//
//	                     [wan ns] bridge br0, 192.0.2.0/24
//	    .1 |            .2 |              .3 |           .11 |            .12 |          .13 |
//	[ctl ns]          [gw ns]           [gwp ns]         [cl ns]          [clu ns]       [clt ns]
//	cordon-           cordon-gateway    wireguard-go     wireguard-go     cordon up      cordon up
//	controller        tun, udp :51820   (plain) :51821   (plain) 10.99.0.2 userspace     tun, nft drops
//	                  tcp :443          10.99.0.1        cordon up tun    socks5 :1080   udp to .2:51820
//	                  app0 10.20.0.1    app0 10.21.0.1        |                              → tcp :443
//	                       |                 |           (a) plain → 10.21.0.10
//	                       +---[app ns]------+           (b) tun   → 10.20.0.10
//	                       10.20.0.10  10.21.0.10, route 10.99.0.0/24 via 10.21.0.1
//	                       the bench's app server: tcp and udp :5201
//
// (a) upstream wireguard-go at the version of the product's go.mod, a
// plain WireGuard gateway that routes (no filter, no NAT); (a') the same
// in namespace gwn (192.0.2.4, port 51822, overlay 10.98.0.0/24, app
// 10.22.0.10 on a third link) with the Cordon gateway's nftables ruleset
// copied onto it (fib reverse-path checks, conntrack, forward rules with
// MSS clamping, masquerade): what the kernel costs a gateway that must
// keep the boundary, without Cordon's process; (b) the Cordon
// client in tun mode; (c) the Cordon client in userspace mode through its
// SOCKS5 proxy; (d) the Cordon client in tun mode whose UDP to the gateway
// is dropped, so it carries WireGuard over TLS on TCP 443. (b)–(d) go
// through one cordon-gateway in tun mode (flow authorizer, NAT).
const (
	ctlAddr    = "192.0.2.1"
	gwAddr     = "192.0.2.2"
	gwpAddr    = "192.0.2.3"
	clAddr     = "192.0.2.11"
	cluAddr    = "192.0.2.12"
	cltAddr    = "192.0.2.13"
	appCordon  = "10.20.0.10"
	gwnAddr    = "192.0.2.4"
	appPlain   = "10.21.0.10"
	appNFT     = "10.22.0.10"
	appPort    = "5201"
	socksAddr  = "127.0.0.1:1080"
	blockTable = "dpbench_block_udp"
)

type world struct {
	bin    string // directory of the product's binaries
	wgBin  string // upstream wireguard-go
	dir    string
	prefix string

	wan, ctl, gw, gwp, gwn, app, cl, clu, clt netNS
	nss                                       []netNS

	procs []*proc
	// the data plane processes of each side
	plain, plainNFT               wgPair
	gateway, clTun, clUser, clTCP *proc
}

// wgPair is a plain WireGuard tunnel of two upstream wireguard-go
// processes, client and gateway.
type wgPair struct{ cl, gw *proc }

func (w *world) ip(ctx context.Context, ns netNS, args ...string) error {
	_, err := run(ctx, "", nil, "ip", append([]string{"-n", string(ns)}, args...)...)
	return err
}

func (w *world) exec(ctx context.Context, ns netNS, stdin string, argv ...string) (string, error) {
	return run(ctx, stdin, nil, "ip", append([]string{"netns", "exec", string(ns)}, argv...)...)
}

func (w *world) start(ns netNS, name string, env []string, argv ...string) (*proc, error) {
	p, err := startProc(ns, w.dir, name, env, argv...)
	if err != nil {
		return nil, err
	}
	w.procs = append(w.procs, p)
	return p, nil
}

// close stops every process and deletes the namespaces.
func (w *world) close() {
	for _, p := range slices.Backward(w.procs) {
		p.stop()
	}
	for _, ns := range w.nss {
		run(context.Background(), "", nil, "ip", "netns", "del", string(ns))
	}
	for _, n := range []string{"p", "q", "np", "nq", "g", "c", "u", "t"} {
		os.Remove(filepath.Join("/var/run/wireguard", w.iface(n)+".sock"))
	}
}

// iface names a WireGuard interface uniquely on the host: wireguard-go's
// UAPI socket (/var/run/wireguard/NAME.sock) is shared by all namespaces.
func (w *world) iface(role string) string { return w.prefix + role }

// netns creates the namespaces and links of the picture.
func (w *world) netns(ctx context.Context) error {
	for _, role := range []string{"wan", "ctl", "gw", "gwp", "gwn", "app", "cl", "clu", "clt"} {
		ns := netNS(w.prefix + "-" + role)
		if _, err := run(ctx, "", nil, "ip", "netns", "add", string(ns)); err != nil {
			return err
		}
		w.nss = append(w.nss, ns)
		if err := w.ip(ctx, ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	w.wan, w.ctl, w.gw, w.gwp, w.gwn, w.app, w.cl, w.clu, w.clt = w.nss[0], w.nss[1], w.nss[2], w.nss[3], w.nss[4], w.nss[5], w.nss[6], w.nss[7], w.nss[8]
	steps := [][]string{
		{string(w.wan), "link", "add", "br0", "type", "bridge"},
		{string(w.wan), "link", "set", "br0", "up"},
	}
	for _, l := range []struct {
		ns   netNS
		addr string
	}{{w.ctl, ctlAddr}, {w.gw, gwAddr}, {w.gwp, gwpAddr}, {w.gwn, gwnAddr}, {w.cl, clAddr}, {w.clu, cluAddr}, {w.clt, cltAddr}} {
		port := "p" + strings.TrimPrefix(string(l.ns), w.prefix+"-")
		steps = append(steps,
			[]string{string(w.wan), "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", string(l.ns)},
			[]string{string(w.wan), "link", "set", port, "master", "br0", "up"},
			[]string{string(l.ns), "addr", "add", l.addr + "/24", "dev", "eth0"},
			[]string{string(l.ns), "link", "set", "eth0", "up"})
	}
	for _, a := range []struct {
		gw             netNS
		link, gwIP, ip string
	}{{w.gw, "eth0", "10.20.0.1", appCordon}, {w.gwp, "eth1", "10.21.0.1", appPlain}, {w.gwn, "eth2", "10.22.0.1", appNFT}} {
		steps = append(steps,
			[]string{string(a.gw), "link", "add", "app0", "type", "veth", "peer", "name", a.link, "netns", string(w.app)},
			[]string{string(a.gw), "addr", "add", a.gwIP + "/24", "dev", "app0"},
			[]string{string(a.gw), "link", "set", "app0", "up"},
			[]string{string(w.app), "addr", "add", a.ip + "/24", "dev", a.link},
			[]string{string(w.app), "link", "set", a.link, "up"})
	}
	steps = append(steps,
		[]string{string(w.app), "route", "add", "default", "via", "10.20.0.1"},
		[]string{string(w.app), "route", "add", "10.99.0.0/24", "via", "10.21.0.1"},
		[]string{string(w.app), "route", "add", "10.98.0.0/24", "via", "10.22.0.1"})
	for _, s := range steps {
		if err := w.ip(ctx, netNS(s[0]), s[1:]...); err != nil {
			return err
		}
	}
	for _, ns := range []netNS{w.gw, w.gwp, w.gwn} {
		if _, err := w.exec(ctx, ns, "", "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
			return err
		}
	}
	return nil
}

// plainTunnel is one upstream wireguard-go tunnel between cl and a
// gateway namespace that routes appNet to the app.
type plainTunnel struct {
	gw           netNS
	gwAddr, port string // the gateway's WAN address and WireGuard port
	gwIface      string
	clIface      string
	overlay      string // the /24 of the two tunnel addresses, .1 the gateway's, .2 the client's
	appNet       string
}

// startPlain brings up upstream wireguard-go for t and routes t.appNet through it.
func (w *world) startPlain(ctx context.Context, t plainTunnel) (wgPair, error) {
	type end struct {
		ns          netNS
		iface, addr string
		key, pub    string
		p           *proc
	}
	base := strings.TrimSuffix(t.overlay, "0/24")
	ends := []*end{{ns: t.gw, iface: t.gwIface, addr: base + "1"}, {ns: w.cl, iface: t.clIface, addr: base + "2"}}
	for _, e := range ends {
		k, err := run(ctx, "", nil, "wg", "genkey")
		if err != nil {
			return wgPair{}, err
		}
		e.key = strings.TrimSpace(k)
		pub, err := run(ctx, e.key+"\n", nil, "wg", "pubkey")
		if err != nil {
			return wgPair{}, err
		}
		e.pub = strings.TrimSpace(pub)
		f := filepath.Join(w.dir, e.iface+".key")
		if err := os.WriteFile(f, []byte(e.key+"\n"), 0o600); err != nil {
			return wgPair{}, err
		}
		if e.p, err = w.start(e.ns, "wireguard-go-"+e.iface, []string{"LOG_LEVEL=error"}, w.wgBin, "-f", e.iface); err != nil {
			return wgPair{}, err
		}
		if err := waitFor(ctx, 10*time.Second, func() error {
			if err := e.p.exited(); err != nil {
				return err
			}
			_, err := os.Stat(filepath.Join("/var/run/wireguard", e.iface+".sock"))
			return err
		}); err != nil {
			return wgPair{}, fmt.Errorf("wireguard-go %s: %w", e.iface, err)
		}
	}
	gw, cl := ends[0], ends[1]
	cmds := [][]string{
		{string(gw.ns), "wg", "set", gw.iface, "private-key", filepath.Join(w.dir, gw.iface+".key"), "listen-port", t.port,
			"peer", cl.pub, "allowed-ips", cl.addr + "/32"},
		{string(cl.ns), "wg", "set", cl.iface, "private-key", filepath.Join(w.dir, cl.iface+".key"),
			"peer", gw.pub, "allowed-ips", gw.addr + "/32," + t.appNet, "endpoint", t.gwAddr + ":" + t.port},
	}
	for _, c := range cmds {
		if _, err := w.exec(ctx, netNS(c[0]), "", c[1:]...); err != nil {
			return wgPair{}, err
		}
	}
	for _, e := range ends {
		if err := w.ip(ctx, e.ns, "addr", "add", e.addr+"/32", "dev", e.iface); err != nil {
			return wgPair{}, err
		}
		if err := w.ip(ctx, e.ns, "link", "set", e.iface, "up"); err != nil {
			return wgPair{}, err
		}
	}
	if err := w.ip(ctx, gw.ns, "route", "add", cl.addr+"/32", "dev", gw.iface); err != nil {
		return wgPair{}, err
	}
	if err := w.ip(ctx, cl.ns, "route", "add", t.appNet, "dev", cl.iface); err != nil {
		return wgPair{}, err
	}
	return wgPair{cl: cl.p, gw: gw.p}, nil
}

// plainTunnels brings up both plain tunnels; copyRuleset later gives the
// second the Cordon gateway's nftables.
func (w *world) plainTunnels(ctx context.Context) error {
	var err error
	if w.plain, err = w.startPlain(ctx, plainTunnel{gw: w.gwp, gwAddr: gwpAddr, port: "51821", gwIface: w.iface("p"), clIface: w.iface("q"), overlay: "10.99.0.0/24", appNet: "10.21.0.0/24"}); err != nil {
		return err
	}
	w.plainNFT, err = w.startPlain(ctx, plainTunnel{gw: w.gwn, gwAddr: gwnAddr, port: "51822", gwIface: w.iface("np"), clIface: w.iface("nq"), overlay: "10.98.0.0/24", appNet: "10.22.0.0/24"})
	return err
}

// copyRuleset puts the Cordon gateway's nftables ruleset, as it runs, on
// the plain-nft gateway, with that gateway's interface, port and prefixes.
func (w *world) copyRuleset(ctx context.Context) error {
	rs, err := w.exec(ctx, w.gw, "", "nft", "list", "ruleset")
	if err != nil {
		return err
	}
	if !strings.Contains(rs, `"`+w.iface("g")+`"`) {
		return fmt.Errorf("the gateway's nftables ruleset does not name its interface %s:\n%s", w.iface("g"), rs)
	}
	rs = strings.NewReplacer(
		`"`+w.iface("g")+`"`, `"`+w.iface("np")+`"`,
		"100.64.0.0/10", "10.98.0.0/24",
		"10.20.0.0/24", "10.22.0.0/24",
		"dport 51820", "dport 51822",
	).Replace(rs)
	f := filepath.Join(w.dir, "plain-nft.nft")
	if err := os.WriteFile(f, []byte(rs), 0o644); err != nil {
		return err
	}
	_, err = w.exec(ctx, w.gwn, "", "nft", "-f", f)
	return err
}

func (w *world) ctlDir() string { return filepath.Join(w.dir, "controller") }

// cordonctl runs cordonctl from the controller's namespace.
func (w *world) cordonctl(ctx context.Context, stdin string, args ...string) (string, error) {
	env := []string{
		"CORDON_CONTROLLER=https://" + ctlAddr + ":8443",
		"CORDON_CA_CERT=" + filepath.Join(w.ctlDir(), "ca.pem"),
		"HOME=" + w.dir,
		"XDG_CONFIG_HOME=",
	}
	argv := append([]string{"netns", "exec", string(w.ctl), filepath.Join(w.bin, "cordonctl"), "--token-file", filepath.Join(w.ctlDir(), "admin-token")}, args...)
	return run(ctx, stdin, env, "ip", argv...)
}

// cordon starts the controller, configures one segment with the bench app
// (tcp and udp 5201), enrolls the gateway and brings the three clients up.
func (w *world) cordon(ctx context.Context) error {
	ctl, err := w.start(w.ctl, "controller", nil, filepath.Join(w.bin, "cordon-controller"), "--data-dir", w.ctlDir(),
		"--listen", "0.0.0.0:8443", "--hosts", ctlAddr, "--session-idle", "12h", "--session-absolute", "24h")
	if err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, func() error {
		if err := ctl.exited(); err != nil {
			return err
		}
		_, err := w.cordonctl(ctx, "", "segment", "list")
		return err
	}); err != nil {
		return fmt.Errorf("controller did not serve: %w", err)
	}
	users := []string{"bench-tun", "bench-userspace", "bench-tcp"}
	steps := [][]string{
		{"segment", "create", "clinical", "--cidr", "10.20.0.0/24"},
		{"app", "create", "bench", "--segment", "clinical", "--dns-name", "bench.hosp.internal", "--address", appCordon, "--proto", "tcp", "--port", appPort, "--class", "internal"},
		{"app", "create", "bench-udp", "--segment", "clinical", "--dns-name", "bench-udp.hosp.internal", "--address", appCordon, "--proto", "udp", "--port", appPort, "--class", "internal"},
		{"group", "create", "bench"},
		{"rule", "create", "bench-tcp", "--group", "bench", "--app", "bench"},
		{"rule", "create", "bench-udp", "--group", "bench", "--app", "bench-udp"},
	}
	for _, s := range steps {
		if _, err := w.cordonctl(ctx, "", s...); err != nil {
			return err
		}
	}
	secrets := map[string]string{}
	for _, u := range users {
		out, err := w.cordonctl(ctx, "bench password "+u+"\n", "user", "create", u, "--password-stdin", "-o", "json")
		if err != nil {
			return err
		}
		var v struct {
			TOTPSecret string `json:"totp_secret"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil || v.TOTPSecret == "" {
			return fmt.Errorf("cordonctl user create %s: no totp_secret in %q", u, out)
		}
		secrets[u] = v.TOTPSecret
		if _, err := w.cordonctl(ctx, "", "group", "add-member", "bench", u); err != nil {
			return err
		}
	}
	tok, err := w.cordonctl(ctx, "", "gateway", "token", "create", "--segment", "clinical", "--name", "gw1")
	if err != nil {
		return err
	}
	tokFile := filepath.Join(w.dir, "gw-token")
	if err := os.WriteFile(tokFile, []byte(strings.TrimSpace(tok)+"\n"), 0o600); err != nil {
		return err
	}
	w.gateway, err = w.start(w.gw, "cordon-gateway", nil, filepath.Join(w.bin, "cordon-gateway"),
		"--state-dir", filepath.Join(w.dir, "gateway"), "--controller", "https://"+ctlAddr+":8443",
		"--ca-cert", filepath.Join(w.ctlDir(), "ca.pem"), "--token-file", tokFile, "--mode", "tun",
		"--interface", w.iface("g"), "--listen-port", "51820", "--endpoint", gwAddr+":51820", "--tcp-listen", ":443")
	if err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, func() error {
		if err := w.gateway.exited(); err != nil {
			return err
		}
		out, err := w.cordonctl(ctx, "", "gateway", "list", "-o", "json")
		if err != nil {
			return err
		}
		if !strings.Contains(out, `"gw1"`) {
			return errors.New("gw1 not enrolled yet")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("gateway did not enroll: %w", err)
	}
	if err := w.blockUDP(ctx, w.clt); err != nil {
		return err
	}
	for _, c := range []struct {
		user string
		ns   netNS
		p    **proc
		args []string
	}{
		{users[0], w.cl, &w.clTun, []string{"--mode", "tun", "--interface", w.iface("c")}},
		{users[1], w.clu, &w.clUser, []string{"--mode", "userspace", "--socks5", socksAddr, "--http-proxy", ""}},
		{users[2], w.clt, &w.clTCP, []string{"--mode", "tun", "--interface", w.iface("t")}},
	} {
		state := filepath.Join(w.dir, c.user)
		code, err := totpCode(secrets[c.user], time.Now())
		if err != nil {
			return err
		}
		if _, err := w.exec(ctx, c.ns, "bench password "+c.user+"\n", filepath.Join(w.bin, "cordon"), "--state-dir", state, "login",
			"--controller", "https://"+ctlAddr+":8443", "--ca-cert", filepath.Join(w.ctlDir(), "ca.pem"),
			"--user", c.user, "--password-stdin", "--totp", code); err != nil {
			return err
		}
		argv := append([]string{filepath.Join(w.bin, "cordon"), "up", "--state-dir", state, "--dns", "none"}, c.args...)
		if *c.p, err = w.start(c.ns, "cordon-"+c.user, nil, argv...); err != nil {
			return err
		}
	}
	return nil
}

// blockUDP drops UDP from ns to the gateway's WireGuard port: the
// UDP-blocked network of the TCP/443 path.
func (w *world) blockUDP(ctx context.Context, ns netNS) error {
	rules := `table inet ` + blockTable + ` {
	chain out {
		type filter hook output priority 0; policy accept;
		ip daddr ` + gwAddr + ` udp dport 51820 drop
	}
}`
	f := filepath.Join(w.dir, "block-udp.nft")
	if err := os.WriteFile(f, []byte(rules), 0o644); err != nil {
		return err
	}
	_, err := w.exec(ctx, ns, "", "nft", "-f", f)
	return err
}

// pathOf returns the path ('udp' or 'tcp') 'cordon status' reports for
// the client's first gateway.
func (w *world) pathOf(ctx context.Context, ns netNS, user string) (string, error) {
	out, err := w.exec(ctx, ns, "", filepath.Join(w.bin, "cordon"), "--state-dir", filepath.Join(w.dir, user), "status", "-o", "json")
	if err != nil {
		return "", err
	}
	var st struct {
		Gateways []struct {
			Path string `json:"path"`
		} `json:"gateways"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Gateways) == 0 {
		return "", fmt.Errorf("cordon status -o json: no gateway in %q", out)
	}
	return st.Gateways[0].Path, nil
}

// waitFor polls cond every 100 ms until it returns nil or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}
