// Command cordon-controller runs the Cordon controller: identity,
// enrollment, policy, network maps, audit and the admin API.
// "cordon-controller backup" and "cordon-controller restore" make and
// restore an encrypted backup of its data dir (docs/operations.md).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cordonhq/cordon/internal/daemonflags"
	"github.com/cordonhq/cordon/internal/logsetup"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/control"
	"github.com/cordonhq/cordon/controller/internal/netmap"
	"github.com/cordonhq/cordon/controller/internal/oidc"
	"github.com/cordonhq/cordon/controller/internal/server"
	"github.com/cordonhq/cordon/controller/internal/session"
	"github.com/cordonhq/cordon/controller/internal/siem"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

func main() { os.Exit(dispatch(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

// dispatch runs the subcommands "backup" and "restore" (see backup.go),
// or else the controller.
func dispatch(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "backup":
			return runBackup(args[1:], stdin, stdout, stderr)
		case "restore":
			return runRestore(args[1:], stdin, stdout, stderr)
		}
	}
	return run(args, stdout, stderr)
}

// run is the command with its arguments; it returns the exit status: 0,
// 1 (the controller failed) or 2 (bad flags or arguments).
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cordon-controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "/var/lib/cordon-controller", "directory for the database, CA and keys (created 0700)")
	listen := fs.String("listen", ":8443", "address for the admin API (HTTPS, TCP) and the agent control channel (QUIC, UDP)")
	hosts := fs.String("hosts", "", "comma-separated extra host names or addresses agents use to reach the controller (added to its certificate)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	var dnsCfg netmap.DNSConfig
	fs.Func("dns-zone", "an internal DNS zone, e.g. hosp.internal (repeatable): gateways answer it, clients never send it to their system resolver; the parent domain of any app name outside every zone is internal too", func(s string) error {
		dnsCfg.Zones = append(dnsCfg.Zones, s)
		return nil
	})
	dnsTTL := fs.Uint("dns-ttl", 5, "TTL in seconds of internal DNS answers, positive and negative (how long a revoked name may stay cached)")
	limits := session.DefaultLimits()
	fs.DurationVar(&limits.DefaultIdle, "session-idle", limits.DefaultIdle, "automatic logoff: a session with no app traffic at any gateway for this long ends")
	fs.DurationVar(&limits.Absolute, "session-absolute", limits.Absolute, "a session ends this long after sign-in, however active")
	fs.DurationVar(&limits.BreakGlass, "break-glass-duration", limits.BreakGlass, "a break-glass (emergency access) session ends this long after its sign-in, however active; it is never renewed: more time needs a second use, audited and alerted again")
	fs.Func("session-idle-for", "CLASS=DURATION: a different idle limit for apps of one data classification, e.g. phi=10m (repeatable); the apps drop out after it, the session ends after the longest", func(s string) error {
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
	postureInterval := fs.Duration("posture-interval", control.DefaultPostureInterval, "how often clients re-collect their device posture and report it if it changed (a device out of compliance loses apps within about this long); at least 1s")
	driftCheck := fs.Duration("drift-check", control.DefaultDriftCheck, "how often the state the network maps are computed from is compared with the whole store (a difference is logged as an error and repaired); at least 1s")
	grantLifetime := fs.Duration("gateway-grant-lifetime", controlproto.DefaultGrantLifetime, "how long a gateway that cannot reach the controller goes on serving its last map (also across its own restarts); past it the gateway admits nobody until the controller is back (5s to 7d)")
	clockSkew := fs.Duration("clock-skew-threshold", control.DefaultClockSkewThreshold, "a gateway whose clock is off from the controller's by more than this raises an audit.clock.skew alert (cleared when back within half of it)")
	agentCertTTL := fs.Duration("agent-cert-ttl", 30*24*time.Hour, "lifetime of the certificates agents authenticate the control channel with; agents renew theirs after two thirds of it (at least 10s)")
	adminTTL := fs.Duration("admin-session-ttl", 8*time.Hour, "lifetime of the admin token 'cordonctl login --admin' gets (5m to 24h)")
	bootstrapTTL := fs.Duration("bootstrap-token-ttl", 24*time.Hour, "lifetime of the owner token written to DATA-DIR/admin-token when no owner credential exists (5m to 7d)")
	alertThreshold := fs.Int("login-alert-threshold", 5, "failed sign-ins of one user (or from one source) within --login-alert-window that raise an auth.alert event")
	alertWindow := fs.Duration("login-alert-window", 15*time.Minute, "sliding window of --login-alert-threshold (at most one alert per user or source per window)")
	siemConfig := fs.String("siem-config", "", "YAML or JSON file listing the SIEM sinks the audit log is streamed to (syslog over TLS or TCP, OCSF JSON lines; see docs/audit.md); empty: none")
	oidcConfig := fs.String("oidc-config", "", "YAML or JSON file listing the OIDC identity providers users sign in with (see docs/identity.md); empty: local users only")
	logFormat := fs.String("log-format", "text", "log format: "+logsetup.Formats+" (JSON lines for log shippers)")
	metricsListen := fs.String("metrics-listen", "", "serve Prometheus metrics (/metrics) and health checks (/healthz, /readyz) over plain HTTP at this address, e.g. 127.0.0.1:9101 (counts only, no secrets; bind it where only your monitoring reaches); off when empty")
	retention := fs.Int("audit-retention-years", state.DefaultRetentionYears, "years audit records are kept before one admin may archive them; before that archiving takes two admins (at least 6: 45 CFR 164.316(b)(2)); nothing is ever deleted automatically")
	debugListen := fs.String("debug-listen", "", "serve Go's pprof profiles (CPU, heap, goroutines) at this loopback address, e.g. 127.0.0.1:6060; off when empty")
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "cordon-controller: "+format+"\n", args...)
		return 2
	}
	if code, done := daemonflags.Parse(fs, args, stdout, stderr); done {
		return code
	}
	var idps *oidc.File
	if *oidcConfig != "" {
		f, err := oidc.LoadFile(*oidcConfig)
		if err != nil {
			return fail("--oidc-config: %v", err)
		}
		idps = f
	}
	var sinks *siem.File
	if *siemConfig != "" {
		f, err := siem.LoadFile(*siemConfig)
		if err != nil {
			return fail("--siem-config: %v", err)
		}
		sinks = f
	}
	if *adminTTL < 5*time.Minute || *adminTTL > 24*time.Hour || *bootstrapTTL < 5*time.Minute || *bootstrapTTL > 7*24*time.Hour {
		return fail("--admin-session-ttl must be between 5m and 24h, --bootstrap-token-ttl between 5m and 7d")
	}
	if *alertThreshold < 1 || *alertWindow < time.Minute {
		return fail("--login-alert-threshold must be at least 1 and --login-alert-window at least 1m")
	}
	if *dnsTTL < 1 || *dnsTTL > 3600 {
		return fail("--dns-ttl must be between 1 and 3600 seconds")
	}
	dnsCfg.TTL = uint32(*dnsTTL)
	if *postureInterval < time.Second {
		return fail("--posture-interval must be at least 1s")
	}
	if *driftCheck < time.Second {
		return fail("--drift-check must be at least 1s")
	}
	if *grantLifetime < 5*time.Second || *grantLifetime > 7*24*time.Hour {
		return fail("--gateway-grant-lifetime must be between 5s and 7d")
	}
	if err := limits.Validate(); err != nil {
		return fail("%v", err)
	}

	log, err := logsetup.New(stderr, *logLevel, *logFormat)
	if err != nil {
		return fail("%v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var extra []string
	for h := range strings.SplitSeq(*hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			extra = append(extra, h)
		}
	}
	err = server.Run(ctx, server.Config{
		AdminSessionTTL: *adminTTL, BootstrapTokenTTL: *bootstrapTTL,
		LoginAlert: auth.AlertConfig{Threshold: *alertThreshold, Window: *alertWindow},
		DataDir:    *dataDir, Listen: *listen, Hosts: extra, Logger: log, Announce: stdout,
		DNS: dnsCfg, Sessions: limits, PostureInterval: *postureInterval,
		AgentCertTTL: *agentCertTTL, GatewayGrantLifetime: *grantLifetime, DriftCheck: *driftCheck, ClockSkewThreshold: *clockSkew,
		OIDC: idps, DebugListen: *debugListen, MetricsListen: *metricsListen, SIEM: sinks, AuditRetentionYears: *retention,
	})
	if err != nil {
		fmt.Fprintf(stderr, "cordon-controller: %v\n", err)
		return 1
	}
	return 0
}
