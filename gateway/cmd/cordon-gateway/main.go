// Command cordon-gateway runs a Cordon gateway beside a PHI app subnet: it
// terminates WireGuard from clinicians' devices and authorizes every flow.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/cordonhq/cordon/gateway/internal/gateway"
	"github.com/cordonhq/cordon/gateway/internal/hostfw"
)

var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "uninstall" {
		os.Exit(uninstall(os.Args[2:]))
	}
	var cfg gateway.Config
	flag.StringVar(&cfg.StateDir, "state-dir", "/var/lib/cordon-gateway", "directory for keys, certificate and enrollment (created 0700)")
	flag.StringVar(&cfg.Controller, "controller", os.Getenv("CORDON_CONTROLLER"), "controller URL, https://HOST:PORT (needed to enroll) [$CORDON_CONTROLLER]")
	flag.StringVar(&cfg.CACert, "ca-cert", os.Getenv("CORDON_CA_CERT"), "controller CA certificate (needed to enroll) [$CORDON_CA_CERT]")
	flag.StringVar(&cfg.Token, "token", "", "single-use enrollment token (first start only); prefer --token-file")
	tokenFile := flag.String("token-file", "", "file holding the enrollment token")
	flag.StringVar(&cfg.Name, "name", "", "gateway name (default: the name the token was created with)")
	flag.StringVar(&cfg.Mode, "mode", gateway.ModeTUN, "data plane: tun (kernel TUN, needs CAP_NET_ADMIN) or userspace (no privileges)")
	flag.StringVar(&cfg.Interface, "interface", "cordon-gw0", "WireGuard interface name")
	flag.IntVar(&cfg.ListenPort, "listen-port", 51820, "WireGuard UDP port")
	flag.StringVar(&cfg.Endpoint, "endpoint", os.Getenv("CORDON_ENDPOINT"), "HOST:PORT clients dial for WireGuard (required) [$CORDON_ENDPOINT]")
	flag.BoolVar(&cfg.AllowLoopback, "allow-loopback", false, "userspace mode: allow apps on this host's loopback (demo only)")
	flag.BoolVar(&cfg.ManageForwarding, "manage-forwarding", false, "tun mode: turn IPv4 forwarding on at start and back to its previous value on a clean stop (without it, the operator must have set net.ipv4.ip_forward=1)")
	flag.Func("management-sources", "tun mode: CIDR[,CIDR...] allowed to reach this host's own services (SSH, monitoring); everyone else sees only the WireGuard port (repeatable; default none)", func(s string) error {
		for f := range strings.SplitSeq(s, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			p, err := netip.ParsePrefix(f)
			if err != nil {
				if a, aerr := netip.ParseAddr(f); aerr == nil {
					p = netip.PrefixFrom(a, a.BitLen())
				} else {
					return fmt.Errorf("%q is not a CIDR or an address (e.g. 10.1.0.0/24)", f)
				}
			}
			cfg.Management = append(cfg.Management, p.Masked())
		}
		return nil
	})
	flag.Int64Var(&cfg.SpoolMaxBytes, "spool-max-bytes", 256<<20, "bound on the flow record spool (<state-dir>/flowspool) holding records until the controller acknowledges them")
	flag.StringVar(&cfg.SpoolFull, "spool-full", gateway.SpoolFailClosedPHI, "new flows while the flow record spool is full: fail-closed-phi (refuse flows to phi apps), fail-closed (refuse all) or fail-open (admit; their records are lost)")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: cordon-gateway [flags]       run the gateway\n       cordon-gateway uninstall   remove the gateway's host firewall (after the gateway is stopped for good)\n\nflags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()

	fail := func(code int, format string, args ...any) {
		fmt.Fprintf(os.Stderr, "cordon-gateway: "+format+"\n", args...)
		os.Exit(code)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		fail(2, "--log-level: %v", err)
	}
	if cfg.Endpoint == "" {
		fail(2, "--endpoint is required: the HOST:PORT clients dial to reach this gateway's WireGuard port")
	}
	if *tokenFile != "" {
		// A missing file is fine once enrolled (systemd units keep naming it).
		b, err := os.ReadFile(*tokenFile)
		if err != nil && !os.IsNotExist(err) {
			fail(2, "--token-file: %v", err)
		}
		cfg.Token = strings.TrimSpace(string(b))
	}
	cfg.Version = version
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := gateway.Run(ctx, cfg); err != nil {
		fail(1, "%v", err)
	}
}

// uninstall removes the host firewall table a tun-mode gateway leaves in
// place when it stops or dies (so the host stays closed), for an operator
// taking the gateway off the host for good.
func uninstall(args []string) int {
	fs := flag.NewFlagSet("uninstall", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ok, err := hostfw.Installed()
	if err != nil {
		fmt.Fprintf(os.Stderr, "cordon-gateway uninstall: %v (run as root)\n", err)
		return 1
	}
	if !ok {
		fmt.Println("no Cordon host firewall on this host (nftables table inet " + hostfw.TableName + "): nothing to remove")
		return 0
	}
	if err := hostfw.Uninstall(); err != nil {
		fmt.Fprintf(os.Stderr, "cordon-gateway uninstall: %v\n", err)
		return 1
	}
	fmt.Println("removed the Cordon host firewall (nftables table inet " + hostfw.TableName + ")")
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err == nil && strings.TrimSpace(string(b)) == "1" {
		fmt.Println("note: IPv4 forwarding is on (net.ipv4.ip_forward=1): this host now forwards whatever its own rules allow; turn it off with 'sysctl -w net.ipv4.ip_forward=0' unless it should route")
	}
	return 0
}
