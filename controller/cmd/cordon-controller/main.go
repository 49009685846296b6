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
	"time"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/control"
	"github.com/cordonhq/cordon/controller/internal/netmap"
	"github.com/cordonhq/cordon/controller/internal/oidc"
	"github.com/cordonhq/cordon/controller/internal/server"
	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/pkg/controlproto"
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
	limits := session.DefaultLimits()
	flag.DurationVar(&limits.DefaultIdle, "session-idle", limits.DefaultIdle, "automatic logoff: a session with no app traffic at any gateway for this long ends")
	flag.DurationVar(&limits.Absolute, "session-absolute", limits.Absolute, "a session ends this long after sign-in, however active")
	flag.Func("session-idle-for", "CLASS=DURATION: a different idle limit for apps of one data classification, e.g. phi=10m (repeatable); the apps drop out after it, the session ends after the longest", func(s string) error {
		class, d, ok := strings.Cut(s, "=")
		if !ok || class == "" {
			return fmt.Errorf("%q: want CLASS=DURATION, e.g. phi=10m", s)
		}
		dur, err := time.ParseDuration(d)
		if err != nil {
			return fmt.Errorf("%q: %w", s, err)
		}
		if limits.Idle == nil {
			limits.Idle = map[session.Classification]time.Duration{}
		}
		limits.Idle[session.Classification(class)] = dur
		return nil
	})
	postureInterval := flag.Duration("posture-interval", control.DefaultPostureInterval, "how often clients re-collect their device posture and report it if it changed (a device out of compliance loses apps within about this long); at least 1s")
	driftCheck := flag.Duration("drift-check", control.DefaultDriftCheck, "how often the state the network maps are computed from is compared with the whole store (a difference is logged as an error and repaired); at least 1s")
	grantLifetime := flag.Duration("gateway-grant-lifetime", controlproto.DefaultGrantLifetime, "how long a gateway that cannot reach the controller goes on serving its last map (also across its own restarts); past it the gateway admits nobody until the controller is back (5s to 7d)")
	agentCertTTL := flag.Duration("agent-cert-ttl", 30*24*time.Hour, "lifetime of the certificates agents authenticate the control channel with; agents renew theirs after two thirds of it (at least 10s)")
	adminTTL := flag.Duration("admin-session-ttl", 8*time.Hour, "lifetime of the admin token 'cordonctl login --admin' gets (5m to 24h)")
	bootstrapTTL := flag.Duration("bootstrap-token-ttl", 24*time.Hour, "lifetime of the owner token written to DATA-DIR/admin-token when no owner credential exists (5m to 7d)")
	alertThreshold := flag.Int("login-alert-threshold", 5, "failed sign-ins of one user (or from one source) within --login-alert-window that raise an auth.alert event")
	alertWindow := flag.Duration("login-alert-window", 15*time.Minute, "sliding window of --login-alert-threshold (at most one alert per user or source per window)")
	oidcConfig := flag.String("oidc-config", "", "YAML or JSON file listing the OIDC identity providers users sign in with (see docs/identity.md); empty: local users only")
	retention := flag.Int("audit-retention-years", state.DefaultRetentionYears, "years audit records are kept before one admin may archive them; before that archiving takes two admins (at least 6: 45 CFR 164.316(b)(2)); nothing is ever deleted automatically")
	debugListen := flag.String("debug-listen", "", "serve Go's pprof profiles (CPU, heap, goroutines) at this loopback address, e.g. 127.0.0.1:6060; off when empty")
	flag.Parse()
	var idps *oidc.File
	if *oidcConfig != "" {
		f, err := oidc.LoadFile(*oidcConfig)
		if err != nil {
			fmt.Fprintf(os.Stderr, "cordon-controller: --oidc-config: %v\n", err)
			os.Exit(2)
		}
		idps = f
	}
	if *adminTTL < 5*time.Minute || *adminTTL > 24*time.Hour || *bootstrapTTL < 5*time.Minute || *bootstrapTTL > 7*24*time.Hour {
		fmt.Fprintf(os.Stderr, "cordon-controller: --admin-session-ttl must be between 5m and 24h, --bootstrap-token-ttl between 5m and 7d\n")
		os.Exit(2)
	}
	if *alertThreshold < 1 || *alertWindow < time.Minute {
		fmt.Fprintf(os.Stderr, "cordon-controller: --login-alert-threshold must be at least 1 and --login-alert-window at least 1m\n")
		os.Exit(2)
	}
	if *dnsTTL < 1 || *dnsTTL > 3600 {
		fmt.Fprintf(os.Stderr, "cordon-controller: --dns-ttl must be between 1 and 3600 seconds\n")
		os.Exit(2)
	}
	dnsCfg.TTL = uint32(*dnsTTL)
	if *postureInterval < time.Second {
		fmt.Fprintf(os.Stderr, "cordon-controller: --posture-interval must be at least 1s\n")
		os.Exit(2)
	}
	if *driftCheck < time.Second {
		fmt.Fprintf(os.Stderr, "cordon-controller: --drift-check must be at least 1s\n")
		os.Exit(2)
	}
	if *grantLifetime < 5*time.Second || *grantLifetime > 7*24*time.Hour {
		fmt.Fprintf(os.Stderr, "cordon-controller: --gateway-grant-lifetime must be between 5s and 7d\n")
		os.Exit(2)
	}
	if err := limits.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "cordon-controller: %v\n", err)
		os.Exit(2)
	}

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
		AdminSessionTTL: *adminTTL, BootstrapTokenTTL: *bootstrapTTL,
		LoginAlert: auth.AlertConfig{Threshold: *alertThreshold, Window: *alertWindow},
		DataDir:    *dataDir, Listen: *listen, Hosts: extra, Logger: log, Announce: os.Stdout,
		DNS: dnsCfg, Sessions: limits, PostureInterval: *postureInterval,
		AgentCertTTL: *agentCertTTL, GatewayGrantLifetime: *grantLifetime, DriftCheck: *driftCheck,
		OIDC: idps, DebugListen: *debugListen, AuditRetentionYears: *retention,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "cordon-controller: %v\n", err)
		os.Exit(1)
	}
}
