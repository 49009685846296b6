// Command cordon-gateway runs a Cordon gateway beside a PHI app subnet: it
// terminates WireGuard from clinicians' devices and authorizes every flow.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/cordonhq/cordon/gateway/internal/gateway"
)

var version = "dev"

func main() {
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
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
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
