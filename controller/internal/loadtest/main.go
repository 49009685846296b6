//go:build loadtest

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

type config struct {
	controller      string
	ns              []int
	sc              scenario
	changes         []string
	repeat          int
	stormDeadline   time.Duration
	changeDeadline  time.Duration
	quiet           time.Duration
	idle            time.Duration
	dialConcurrency int
	logLevel        string
	workDir         string
	keep            bool
	debugListen     string
}

func main() {
	var cfg config
	ns := flag.String("n", "1000,3000", "comma-separated agent counts to run, one controller each")
	flag.StringVar(&cfg.controller, "controller", "", "path of the cordon-controller binary to measure (required; bench/controlplane/run.sh builds it)")
	flag.IntVar(&cfg.sc.apps, "apps", 500, "apps in the segment")
	flag.IntVar(&cfg.sc.common, "common", 16, "apps every user may reach (group \"all\")")
	flag.IntVar(&cfg.sc.depts, "depts", 10, "departments (groups); the remaining apps are split among them")
	flag.IntVar(&cfg.sc.spare, "spare", 4, "apps nobody may reach at start (grant-all gives one to everyone)")
	changes := flag.String("changes", strings.Join(changeKinds, ","), "the change script, in order: "+strings.Join(changeKinds, ", "))
	flag.IntVar(&cfg.repeat, "repeat", 3, "how many times the change script runs")
	flag.DurationVar(&cfg.stormDeadline, "storm-deadline", 10*time.Minute, "give up on the connect storm after this long")
	flag.DurationVar(&cfg.changeDeadline, "change-deadline", 2*time.Minute, "give up waiting for one change's agents after this long")
	flag.DurationVar(&cfg.quiet, "quiet", time.Second, "after a change, the controller counts as done once it sent nothing for this long")
	flag.DurationVar(&cfg.idle, "idle", 30*time.Second, "how long idle CPU is measured, every agent connected")
	flag.IntVar(&cfg.dialConcurrency, "dial-concurrency", 0, "QUIC handshakes in flight at most; 0: no limit, every agent dials at once as a fleet does when its controller restarts")
	flag.StringVar(&cfg.logLevel, "log-level", "info", "the controller's --log-level (its log goes to DATA-DIR/controller.log)")
	flag.StringVar(&cfg.workDir, "work-dir", os.TempDir(), "where the controller's data directories are made (on disk: the controller syncs its database)")
	flag.StringVar(&cfg.debugListen, "debug-listen", "", "the controller's --debug-listen (pprof on loopback, e.g. 127.0.0.1:6060), to profile it during a run")
	flag.BoolVar(&cfg.keep, "keep", false, "keep each run's data directory (database, CA, controller log) and print its path")
	flag.Parse()
	if cfg.controller == "" {
		fmt.Fprintln(os.Stderr, "loadtest: -controller is required")
		os.Exit(2)
	}
	for s := range strings.SplitSeq(*ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "loadtest: -n %q: want positive counts\n", *ns)
			os.Exit(2)
		}
		cfg.ns = append(cfg.ns, n)
	}
	for c := range strings.SplitSeq(*changes, ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		if !slices.Contains(changeKinds, c) {
			fmt.Fprintf(os.Stderr, "loadtest: -changes: unknown change %q (want %s)\n", c, strings.Join(changeKinds, ", "))
			os.Exit(2)
		}
		cfg.changes = append(cfg.changes, c)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Printf("control-plane load harness: controller %s, %d CPUs, %d apps (%d common, %d departments of %d, %d spare)\n",
		cfg.controller, runtime.NumCPU(), cfg.sc.apps, cfg.sc.common, cfg.sc.depts, (cfg.sc.apps-cfg.sc.common-cfg.sc.spare)/cfg.sc.depts, cfg.sc.spare)
	var results []*runResult
	failed := false
	for _, n := range cfg.ns {
		if ctx.Err() != nil {
			break
		}
		sc := cfg.sc
		sc.devices = n
		r, err := runOne(ctx, cfg, sc, os.Stdout)
		if err != nil {
			fmt.Fprintf(os.Stderr, "loadtest: N=%d: %v\n", n, err)
			failed = true
			continue
		}
		r.print(os.Stdout)
		results = append(results, r)
	}
	if len(results) > 1 {
		printSummary(os.Stdout, results)
	}
	if failed {
		os.Exit(1)
	}
}

// runResult is what one N measured.
type runResult struct {
	n            int
	seedTime     time.Duration
	storm        time.Duration // until every client had a map
	stormDone    bool
	stormHave    int           // clients with a map at the end of the storm phase
	stormP50     time.Duration // median client's first map
	connAll      time.Duration // until the last client had said hello
	connP50      time.Duration // median client's hello
	stormGWMaps  int64         // gateway maps pushed during the storm (≈ recomputes)
	stormCPU     time.Duration
	stormBytes   int64
	harnessCPU   time.Duration // the harness's own CPU during the storm
	changes      []changeResult
	idleCPU      float64 // fraction of one core
	rss, peakRSS int64
	harnessRSS   int64
	loadBefore   string
	loadAfter    string
	failures     int64
	revoked      int64
	errorKinds   string
	dialLimit    int   // 0: none
	stormDrops   int64 // host UDP receive-buffer drops during the storm, -1 unknown
}

func runOne(ctx context.Context, cfg config, sc scenario, log io.Writer) (res *runResult, err error) {
	res = &runResult{n: sc.devices, loadBefore: loadavg(), dialLimit: max(cfg.dialConcurrency, 0)}
	dataDir, err := os.MkdirTemp(cfg.workDir, fmt.Sprintf("cordon-loadtest-%d-", sc.devices))
	if err != nil {
		return nil, fmt.Errorf("make data dir: %w", err)
	}
	if cfg.keep {
		fmt.Fprintf(log, "N=%d: data directory %s (kept)\n", sc.devices, dataDir)
	} else {
		defer os.RemoveAll(dataDir)
	}
	stage, err := os.MkdirTemp(stagingRoot(), "cordon-loadtest-seed-")
	if err != nil {
		return nil, fmt.Errorf("make staging dir: %w", err)
	}
	t0 := time.Now()
	fmt.Fprintf(log, "N=%d: seeding %d users, devices and sessions, %d apps\n", sc.devices, sc.devices, sc.apps)
	seededWorld, err := seed(ctx, sc, stage, dataDir)
	os.RemoveAll(stage)
	if err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	res.seedTime = time.Since(t0)

	var extra []string
	if cfg.debugListen != "" {
		extra = []string{"--debug-listen", cfg.debugListen}
	}
	proc, api, err := startController(ctx, cfg.controller, dataDir, cfg.logLevel, extra)
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := proc.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	defer api.Close()

	// Everything below runs under actx; the deferred teardown cancels it
	// and waits for the agents and the sampler before the controller
	// stops.
	actx, cancel := context.WithCancel(ctx)
	var bg sync.WaitGroup
	cpu := &sampler{pid: proc.pid}
	bg.Go(func() { cpu.run(actx, 100*time.Millisecond) })
	dials := cfg.dialConcurrency
	if dials <= 0 {
		dials = sc.devices + 1
	}
	fl := newFleet(proc.addr, seededWorld.caPool, dials)
	defer func() {
		cancel()
		fl.close()
		bg.Wait()
	}()

	gws, err := fl.add([]identity{seededWorld.gateway}, controlproto.Hello{Kind: controlproto.KindGateway, AgentVersion: "loadtest", Endpoint: gatewayListen})
	if err != nil {
		return nil, err
	}
	clients, err := fl.add(seededWorld.clients, controlproto.Hello{Kind: controlproto.KindClient, AgentVersion: "loadtest"})
	if err != nil {
		return nil, err
	}
	w := &world{sc: sc, api: api, gateway: gws[0], clients: clients, fleet: fl, cpu: cpu, extraUser: -1, granted: -1}

	fmt.Fprintf(log, "N=%d: controller pid %d on %s; connecting the gateway\n", sc.devices, proc.pid, proc.addr)
	fl.start(actx, gws)
	if !waitFor(actx, time.Minute, func() bool { return gws[0].firstMap.Load() != 0 }) {
		return nil, fmt.Errorf("the gateway got no map within 1m; controller log:\n%s", proc.tail())
	}
	waitQuiet(actx, fl, cfg.quiet, time.Minute)

	fmt.Fprintf(log, "N=%d: connect storm\n", sc.devices)
	gwMaps0, bytes0 := gws[0].maps.Load(), fl.bytes.Load()
	self0, _ := cpuTicks(0)
	drops0 := udpDrops()
	cpu.sample()
	stormStart := time.Now()
	fl.start(actx, clients)
	nextReport := stormStart.Add(30 * time.Second)
	res.stormDone = waitFor(actx, cfg.stormDeadline, func() bool {
		have, conn := 0, 0
		for _, c := range clients {
			if c.firstMap.Load() != 0 {
				have++
			}
			if c.firstConn.Load() != 0 {
				conn++
			}
		}
		if now := time.Now(); now.After(nextReport) && have < len(clients) {
			fmt.Fprintf(log, "N=%d: storm at %s: %d clients connected, %d have a map, %d connection errors so far\n",
				sc.devices, now.Sub(stormStart).Round(time.Second), conn, have, fl.failures.Load())
			nextReport = nextReport.Add(30 * time.Second)
		}
		return have == len(clients)
	})
	stormEnd := time.Now()
	res.stormDrops = -1
	if d1 := udpDrops(); drops0 >= 0 && d1 >= 0 {
		res.stormDrops = d1 - drops0
	}
	var firsts, conns []time.Duration
	for _, c := range clients {
		if at := c.firstConn.Load(); at != 0 {
			conns = append(conns, time.Unix(0, at).Sub(stormStart))
		}
		if at := c.firstMap.Load(); at != 0 {
			firsts = append(firsts, time.Unix(0, at).Sub(stormStart))
		}
	}
	slices.Sort(firsts)
	slices.Sort(conns)
	if len(conns) > 0 {
		res.connP50, res.connAll = pct(conns, 50), conns[len(conns)-1]
	}
	res.stormHave = len(firsts)
	if len(firsts) > 0 {
		res.stormP50 = pct(firsts, 50)
	}
	if res.stormDone {
		res.storm = firsts[len(firsts)-1]
	} else {
		res.storm = stormEnd.Sub(stormStart)
	}
	cpu.sample()
	res.stormCPU = cpu.between(stormStart, stormEnd)
	self1, _ := cpuTicks(0)
	res.harnessCPU = ticksDur(float64(self1 - self0))
	res.stormGWMaps = gws[0].maps.Load() - gwMaps0
	res.stormBytes = fl.bytes.Load() - bytes0
	fmt.Fprintf(log, "N=%d: storm %s (%d/%d clients have a map), settling\n", sc.devices, fmtDur(res.storm, !res.stormDone), res.stormHave, sc.devices)
	waitQuiet(actx, fl, 3*cfg.quiet, cfg.stormDeadline)

	if res.stormDone {
		for r := range cfg.repeat {
			for _, kind := range cfg.changes {
				if actx.Err() != nil {
					break
				}
				c := w.runChange(actx, kind, cfg.changeDeadline, cfg.quiet)
				fmt.Fprintf(log, "N=%d: change %d %s: %s\n", sc.devices, r+1, kind, c.line())
				res.changes = append(res.changes, c)
			}
		}
	} else {
		fmt.Fprintf(log, "N=%d: connect storm did not finish; no changes measured\n", sc.devices)
	}

	fmt.Fprintf(log, "N=%d: idle for %s\n", sc.devices, cfg.idle)
	waitQuiet(actx, fl, cfg.quiet, time.Minute)
	i0, err := cpuTicks(proc.pid)
	if err != nil {
		return nil, err
	}
	idleStart := time.Now()
	select {
	case <-actx.Done():
		return nil, actx.Err()
	case <-time.After(cfg.idle):
	}
	i1, err := cpuTicks(proc.pid)
	if err != nil {
		return nil, err
	}
	res.idleCPU = float64(ticksDur(float64(i1-i0))) / float64(time.Since(idleStart))
	if res.rss, res.peakRSS, err = memory(proc.pid); err != nil {
		return nil, err
	}
	res.harnessRSS, _, _ = memory(0)
	res.failures, res.revoked, res.errorKinds = fl.failures.Load(), fl.revoked.Load(), fl.errorKinds()
	res.loadAfter = loadavg()
	return res, nil
}

// waitFor polls cond every 50 ms until it holds (true) or limit passes.
func waitFor(ctx context.Context, limit time.Duration, cond func() bool) bool {
	end := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// pct is the p-th percentile of sorted durations (nearest rank).
func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
