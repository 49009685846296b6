// Command cordon-gateway runs a Cordon gateway beside a PHI app subnet: it
// terminates WireGuard from clinicians' devices and authorizes every flow.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/cordonhq/cordon/internal/buildinfo"
	"github.com/cordonhq/cordon/internal/daemonflags"
	"github.com/cordonhq/cordon/internal/logsetup"

	"github.com/cordonhq/cordon/gateway/internal/gateway"
	"github.com/cordonhq/cordon/gateway/internal/hostfw"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run is the command with its arguments; it returns the exit status: 0,
// 1 (the gateway failed) or 2 (bad flags or arguments).
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "uninstall" {
		return uninstall(args[1:])
	}
	if len(args) > 0 && args[0] == "ack-audit-rollback" {
		return ackRollback(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("cordon-gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg gateway.Config
	fs.StringVar(&cfg.StateDir, "state-dir", "/var/lib/cordon-gateway", "directory for keys, certificate and enrollment (created 0700)")
	fs.StringVar(&cfg.Controller, "controller", os.Getenv("CORDON_CONTROLLER"), "controller URL, https://HOST:PORT (needed to enroll) [$CORDON_CONTROLLER]")
	fs.StringVar(&cfg.CACert, "ca-cert", os.Getenv("CORDON_CA_CERT"), "controller CA certificate (needed to enroll) [$CORDON_CA_CERT]")
	fs.StringVar(&cfg.Token, "token", "", "single-use enrollment token (first start only); prefer --token-file")
	tokenFile := fs.String("token-file", "", "file holding the enrollment token")
	fs.StringVar(&cfg.Name, "name", "", "gateway name (default: the name the token was created with)")
	fs.StringVar(&cfg.Mode, "mode", gateway.ModeTUN, "data plane: tun (kernel TUN, needs CAP_NET_ADMIN) or userspace (no privileges)")
	fs.StringVar(&cfg.Interface, "interface", "cordon-gw0", "WireGuard interface name")
	fs.IntVar(&cfg.ListenPort, "listen-port", 51820, "WireGuard UDP port")
	fs.StringVar(&cfg.TCPListen, "tcp-listen", "", "also accept WireGuard over TLS on this TCP HOST:PORT (e.g. :443) for clients whose UDP is blocked; clients dial the --endpoint host on this port (default off)")
	fs.StringVar(&cfg.Endpoint, "endpoint", os.Getenv("CORDON_ENDPOINT"), "HOST:PORT clients dial for WireGuard (required) [$CORDON_ENDPOINT]")
	fs.BoolVar(&cfg.AllowLoopback, "allow-loopback", false, "userspace mode: allow apps on this host's loopback (demo only)")
	fs.BoolVar(&cfg.ManageForwarding, "manage-forwarding", false, "tun mode: turn IPv4 forwarding on at start and back to its previous value on a clean stop (without it, the operator must have set net.ipv4.ip_forward=1)")
	fs.Func("management-sources", "tun mode: CIDR[,CIDR...] allowed to reach this host's own services (SSH, monitoring); everyone else sees only the WireGuard port (repeatable; default none)", func(s string) error {
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
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "serve Prometheus metrics (/metrics) and health (/healthz, /readyz: has a network map) on ADDR, plain HTTP (default off)")
	fs.Int64Var(&cfg.SpoolMaxBytes, "spool-max-bytes", 256<<20, "bound on the flow record spool (<state-dir>/flowspool) holding records until the controller acknowledges them")
	fs.StringVar(&cfg.SpoolFull, "spool-full", gateway.SpoolFailClosedPHI, "new flows while the flow record spool is full: fail-closed-phi (refuse flows to phi apps), fail-closed (refuse all) or fail-open (admit; their records are lost)")
	fs.Func("cluster-listen", "IP:PORT where this gateway gossips with the other gateways of its segment (memberlist, UDP and TCP; the address they reach it at, not 0.0.0.0); default off: no cluster", func(s string) error {
		ap, err := netip.ParseAddrPort(s)
		if err != nil || ap.Addr().IsUnspecified() || ap.Port() == 0 {
			return fmt.Errorf("%q: want IP:PORT with this gateway's own address and a port, e.g. 10.1.0.5:7946", s)
		}
		cfg.ClusterListen = ap
		return nil
	})
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "log format: "+logsetup.Formats+" (JSON lines for log shippers)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: cordon-gateway [flags]       run the gateway\n       cordon-gateway uninstall   remove the gateway's host firewall (after the gateway is stopped for good)\n\nflags:\n")
		fs.PrintDefaults()
	}
	fail := func(code int, format string, args ...any) int {
		fmt.Fprintf(stderr, "cordon-gateway: "+format+"\n", args...)
		return code
	}
	if code, done := daemonflags.Parse(fs, args, stdout, stderr); done {
		return code
	}
	log, err := logsetup.New(stderr, *logLevel, *logFormat)
	if err != nil {
		return fail(2, "%v", err)
	}
	if cfg.Endpoint == "" {
		return fail(2, "--endpoint is required: the HOST:PORT clients dial to reach this gateway's WireGuard port")
	}
	if *tokenFile != "" {
		// A missing file is fine once enrolled (systemd units keep naming it).
		b, err := os.ReadFile(*tokenFile)
		if err != nil && !os.IsNotExist(err) {
			return fail(2, "--token-file: %v", err)
		}
		cfg.Token = strings.TrimSpace(string(b))
	}
	cfg.Version = buildinfo.Version()
	cfg.Logger = log
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := gateway.Run(ctx, cfg); err != nil {
		return fail(1, "%v", err)
	}
	return 0
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
