// Command cordon-controller runs the Cordon controller: identity,
// enrollment, policy, network maps, audit and the admin API.
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

	"github.com/cordonhq/cordon/controller/internal/netmap"
	"github.com/cordonhq/cordon/controller/internal/server"
)

func main() {
	dataDir := flag.String("data-dir", "/var/lib/cordon-controller", "directory for the database, CA and keys (created 0700)")
	listen := flag.String("listen", ":8443", "address for the admin API (HTTPS, TCP) and the agent control channel (QUIC, UDP)")
	hosts := flag.String("hosts", "", "comma-separated extra host names or addresses agents use to reach the controller (added to its certificate)")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	var dnsCfg netmap.DNSConfig
	flag.Func("dns-zone", "an internal DNS zone, e.g. hosp.internal (repeatable): gateways answer it, clients never send it to their system resolver; the parent domain of any app name outside every zone is internal too", func(s string) error {
		dnsCfg.Zones = append(dnsCfg.Zones, s)
		return nil
	})
	dnsTTL := flag.Uint("dns-ttl", 5, "TTL in seconds of internal DNS answers, positive and negative (how long a revoked name may stay cached)")
	flag.Parse()
	if *dnsTTL < 1 || *dnsTTL > 3600 {
		fmt.Fprintf(os.Stderr, "cordon-controller: --dns-ttl must be between 1 and 3600 seconds\n")
		os.Exit(2)
	}
	dnsCfg.TTL = uint32(*dnsTTL)

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "cordon-controller: --log-level: %v\n", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var extra []string
	for h := range strings.SplitSeq(*hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			extra = append(extra, h)
		}
	}
	err := server.Run(ctx, server.Config{
		DataDir: *dataDir, Listen: *listen, Hosts: extra, Logger: log, Announce: os.Stdout,
		DNS: dnsCfg,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "cordon-controller: %v\n", err)
		os.Exit(1)
	}
}
