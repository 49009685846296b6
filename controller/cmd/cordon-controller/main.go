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

	"github.com/cordonhq/cordon/controller/internal/server"
)

func main() {
	dataDir := flag.String("data-dir", "/var/lib/cordon-controller", "directory for the database, CA and keys (created 0700)")
	listen := flag.String("listen", ":8443", "address for the admin API (HTTPS, TCP) and the agent control channel (QUIC, UDP)")
	hosts := flag.String("hosts", "", "comma-separated extra host names or addresses agents use to reach the controller (added to its certificate)")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	flag.Parse()

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
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "cordon-controller: %v\n", err)
		os.Exit(1)
	}
}
