// Command dpbench (module github.com/cordonhq/cordon/bench/dataplane)
// measures Cordon's data plane against upstream wireguard-go, side by side
// in one run, in Linux network namespaces (see world.go for the picture):
// TCP throughput with 1 and 4 streams both ways, UDP at a fixed rate, an
// idle request/response round trip (p50/p99), and the CPU seconds the
// tunnel's processes spend per Gbit, for (a) plain wireguard-go (also
// with the Cordon gateway's nftables ruleset on its gateway), (b) the
// Cordon client in tun mode, (c) in userspace mode (SOCKS5) and (d) over
// the TCP/443 path. Rounds interleave the variants test by test, so every
// ratio is taken within one round; the table shows medians with ranges.
//
// It is its own module so that nothing of it enters the product's go.mod.
// Run it with ./run.sh as root, which builds the product's binaries and
// upstream wireguard-go first; the figures go into docs/benchmarks.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

type options struct {
	bin, wgBin    string
	rounds        int
	w             window
	udpRate       float64 // bit/s
	udpSize       int
	rrCount       int
	rrGap         time.Duration
	variants      []string
	tests         []string
	keep, verbose bool
	hold          bool
}

func main() {
	var o options
	var variants, tests string
	var udpMbit float64
	flag.StringVar(&o.bin, "bin", "", "directory holding cordon-controller, cordon-gateway, cordon and cordonctl")
	flag.StringVar(&o.wgBin, "wireguard-go", "", "upstream wireguard-go binary")
	flag.IntVar(&o.rounds, "rounds", 5, "rounds; each runs every test for every variant, interleaved")
	flag.DurationVar(&o.w.warm, "warm", time.Second, "warm-up before each test's measuring window")
	flag.DurationVar(&o.w.dur, "dur", 4*time.Second, "each test's measuring window")
	flag.Float64Var(&udpMbit, "udp-rate", 300, "UDP test: offered rate in Mbit/s")
	flag.IntVar(&o.udpSize, "udp-size", 1200, "UDP test: datagram payload bytes")
	flag.IntVar(&o.rrCount, "rr-count", 1000, "round-trip test: requests per round")
	flag.DurationVar(&o.rrGap, "rr-gap", time.Millisecond, "round-trip test: idle time before each request")
	flag.StringVar(&variants, "variants", "plain,plain-nft,tun,userspace,tcp443", "variants to run (plain is the reference of every ratio)")
	flag.StringVar(&tests, "tests", strings.Join(allTests(), ","), "tests to run")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (logs, state)")
	flag.BoolVar(&o.verbose, "v", false, "log every measurement")
	flag.BoolVar(&o.hold, "hold", false, "after set-up, print the processes and wait for SIGUSR1 before measuring (to attach perf)")
	flag.Parse()
	o.udpRate = udpMbit * 1e6
	o.variants = strings.Split(variants, ",")
	o.tests = strings.Split(tests, ",")
	lvl := slog.LevelInfo
	if o.verbose {
		lvl = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, log, o); err != nil {
		log.Error("dpbench", "err", err)
		os.Exit(1)
	}
}

// variant is one way from a client namespace to the app.
type variant struct {
	name string
	dial dialFunc
	addr string // the app, IP:port
	udp  bool   // whether it carries UDP (the SOCKS5 proxy does not)
	cpu  func() float64
}

// test is one measurement; it returns named metrics.
type test struct {
	name string
	run  func(ctx context.Context, v variant, id uint64) (map[string]float64, error)
}

func allTests() []string {
	return []string{"tcp1-up", "tcp1-down", "tcp4-up", "tcp4-down", "udp", "rr"}
}

func bench(ctx context.Context, log *slog.Logger, o options) error {
	if o.bin == "" || o.wgBin == "" {
		return errors.New("-bin and -wireguard-go are required (run.sh sets them)")
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root for network namespaces (run as root or with sudo)")
	}
	dir, err := os.MkdirTemp("", "dpbench-")
	if err != nil {
		return err
	}
	if o.keep {
		log.Info("work directory kept", "dir", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	w := &world{bin: o.bin, wgBin: o.wgBin, dir: dir, prefix: fmt.Sprintf("dpb%d", os.Getpid()%100000)}
	defer w.close()
	start := time.Now()
	if err := w.netns(ctx); err != nil {
		return fmt.Errorf("namespaces: %w", err)
	}
	tcpL, udpC, err := w.app.listen(":" + appPort)
	if err != nil {
		return fmt.Errorf("app server: %w", err)
	}
	recv := &counters{}
	srv := &appServer{tcp: tcpL, udp: udpC, recv: recv, log: log}
	srvCtx, stopSrv := context.WithCancel(ctx)
	srvDone := make(chan struct{})
	go func() { defer close(srvDone); srv.serve(srvCtx) }()
	defer func() { stopSrv(); <-srvDone }()

	if err := w.plainTunnels(ctx); err != nil {
		return fmt.Errorf("plain wireguard-go: %w", err)
	}
	if err := w.cordon(ctx); err != nil {
		return fmt.Errorf("cordon: %w", err)
	}
	if err := w.copyRuleset(ctx); err != nil {
		return fmt.Errorf("plain-nft: %w", err)
	}
	all := map[string]variant{
		"plain":     {name: "plain", dial: w.cl.dial, addr: net.JoinHostPort(appPlain, appPort), udp: true, cpu: cpuOf(w.plain.cl, w.plain.gw)},
		"plain-nft": {name: "plain-nft", dial: w.cl.dial, addr: net.JoinHostPort(appNFT, appPort), udp: true, cpu: cpuOf(w.plainNFT.cl, w.plainNFT.gw)},
		"tun":       {name: "tun", dial: w.cl.dial, addr: net.JoinHostPort(appCordon, appPort), udp: true, cpu: cpuOf(w.clTun, w.gateway)},
		"userspace": {name: "userspace", dial: w.clu.socksDial(socksAddr), addr: net.JoinHostPort(appCordon, appPort), cpu: cpuOf(w.clUser, w.gateway)},
		"tcp443":    {name: "tcp443", dial: w.clt.dial, addr: net.JoinHostPort(appCordon, appPort), udp: true, cpu: cpuOf(w.clTCP, w.gateway)},
	}
	var vs []variant
	for _, n := range o.variants {
		v, ok := all[n]
		if !ok {
			return fmt.Errorf("-variants: unknown %q (plain, plain-nft, tun, userspace, tcp443)", n)
		}
		vs = append(vs, v)
	}
	for _, v := range vs {
		if err := waitFor(ctx, 30*time.Second, func() error {
			if _, err := requestResponse(ctx, v.dial, v.addr, 1, 0); err != nil {
				return err
			}
			return nil
		}); err != nil {
			return fmt.Errorf("%s: the app is not reachable: %w; logs in %s (-keep keeps them)", v.name, err, dir)
		}
	}
	if slices.Contains(o.variants, "tcp443") {
		path, err := w.pathOf(ctx, w.clt, "bench-tcp")
		if err != nil || path != "tcp" {
			return fmt.Errorf("tcp443: the client's path is %q (%v), want tcp", path, err)
		}
	}
	log.Info("world up", "took", time.Since(start).Round(time.Millisecond))
	if o.hold {
		for _, p := range w.procs {
			fmt.Printf("%-28s pid %d\n", p.name, p.pid())
		}
		fmt.Printf("holding; kill -USR1 %d to measure\n", os.Getpid())
		hold, cancel := signal.NotifyContext(ctx, syscall.SIGUSR1)
		<-hold.Done()
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}

	tests := map[string]test{}
	for _, s := range []struct {
		name    string
		op      byte
		streams int
	}{{"tcp1-up", opUpload, 1}, {"tcp1-down", opDownload, 1}, {"tcp4-up", opUpload, 4}, {"tcp4-down", opDownload, 4}} {
		tests[s.name] = test{s.name, func(ctx context.Context, v variant, id uint64) (map[string]float64, error) {
			r, err := tcpThroughput(ctx, v.dial, v.addr, s.op, s.streams, o.w, recv, id, v.cpu)
			if err != nil {
				return nil, err
			}
			return map[string]float64{s.name + " Mbit/s": r.bps() / 1e6, s.name + " CPU s/Gbit": r.cpuPerGbit()}, nil
		}}
	}
	tests["udp"] = test{"udp", func(ctx context.Context, v variant, id uint64) (map[string]float64, error) {
		if !v.udp {
			return nil, nil
		}
		r, err := udpRate(ctx, v.dial, v.addr, o.udpRate, o.udpSize, o.w, recv, id, v.cpu)
		if err != nil {
			return nil, err
		}
		return map[string]float64{
			fmt.Sprintf("udp %.0f Mbit/s offered: delivered Mbit/s", o.udpRate/1e6): r.deliveredBps / 1e6,
			"udp loss %": 100 * max(0, 1-r.deliveredBps/r.offeredBps),
		}, nil
	}}
	tests["rr"] = test{"rr", func(ctx context.Context, v variant, _ uint64) (map[string]float64, error) {
		rtts, err := requestResponse(ctx, v.dial, v.addr, o.rrCount, o.rrGap)
		if err != nil {
			return nil, err
		}
		us := make([]float64, len(rtts))
		for i, d := range rtts {
			us[i] = float64(d.Microseconds())
		}
		return map[string]float64{"round trip p50 µs": quantile(us, 0.5), "round trip p99 µs": quantile(us, 0.99)}, nil
	}}
	for _, n := range o.tests {
		if _, ok := tests[n]; !ok {
			return fmt.Errorf("-tests: unknown %q (%s)", n, strings.Join(allTests(), ", "))
		}
	}

	load0 := loadavg()
	res := results{}
	var id uint64
	for r := range o.rounds {
		for _, tn := range o.tests {
			// Rotate the order each round so no variant always runs first.
			for i := range vs {
				v := vs[(i+r)%len(vs)]
				id++
				for _, p := range w.procs {
					if err := p.exited(); err != nil {
						return err
					}
				}
				m, err := tests[tn].run(ctx, v, id)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if err != nil {
					log.Warn("measurement failed; the round counts as missing", "round", r+1, "test", tn, "variant", v.name, "err", err)
					continue
				}
				for k, x := range m {
					res.add(k, v.name, r, o.rounds, x)
					log.Debug("measured", "round", r+1, "variant", v.name, "metric", k, "value", x)
				}
			}
		}
		log.Info("round done", "round", r+1, "of", o.rounds, "load", loadavg())
	}
	fmt.Printf("\nCordon data plane vs upstream wireguard-go, %d rounds interleaved, %v windows after %v warm-up; %d CPUs, %s\n",
		o.rounds, o.w.dur, o.w.warm, runtime.NumCPU(), runtime.Version())
	fmt.Printf("load average before: %s, after: %s\n\n", load0, loadavg())
	res.print(os.Stdout, o.variants)
	return nil
}

func cpuOf(ps ...*proc) func() float64 {
	pids := make([]int, len(ps))
	for i, p := range ps {
		pids[i] = p.pid()
	}
	return func() float64 { return cpuSeconds(pids...) }
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

// results holds metric → variant → one value a round (NaN: not measured).
type results struct {
	order []string
	m     map[string]map[string][]float64
}

func (r *results) add(metric, variant string, round, rounds int, x float64) {
	if r.m == nil {
		r.m = map[string]map[string][]float64{}
	}
	if r.m[metric] == nil {
		r.m[metric] = map[string][]float64{}
		r.order = append(r.order, metric)
	}
	if r.m[metric][variant] == nil {
		xs := make([]float64, rounds)
		for i := range xs {
			xs[i] = math.NaN()
		}
		r.m[metric][variant] = xs
	}
	r.m[metric][variant][round] = x
}
