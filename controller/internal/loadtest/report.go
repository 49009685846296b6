//go:build loadtest

package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// kindStats pools the runs of one change kind.
type kindStats struct {
	kind              string
	runs              int
	affected, acked   int
	latencies         []time.Duration
	bytes, frames     int64
	cpu, api          time.Duration
	timedOut, errored int
}

func (r *runResult) byKind() []*kindStats {
	var out []*kindStats
	for _, c := range r.changes {
		i := slices.IndexFunc(out, func(k *kindStats) bool { return k.kind == c.kind })
		if i < 0 {
			out = append(out, &kindStats{kind: c.kind})
			i = len(out) - 1
		}
		k := out[i]
		k.runs++
		if c.err != nil {
			k.errored++
			continue
		}
		k.affected += c.affected
		k.acked += c.acked
		k.latencies = append(k.latencies, c.latencies...)
		k.bytes += c.bytes
		k.frames += c.frames
		k.cpu += c.cpu
		k.api += c.apiTime
		if c.timedOut {
			k.timedOut++
		}
	}
	for _, k := range out {
		slices.Sort(k.latencies)
	}
	return out
}

// quantile formats a latency percentile; when some agents never acked, the
// missing ones count as slower than every measured one.
func (k *kindStats) quantile(p float64) string {
	if k.affected == 0 {
		return "-"
	}
	missing := k.affected - k.acked
	rank := int(float64(k.affected)*p/100+0.5) - 1
	rank = min(max(rank, 0), k.affected-1)
	if rank >= k.affected-missing {
		return "> deadline"
	}
	return fmtLatency(k.latencies[rank])
}

func (r *runResult) print(w io.Writer) {
	fmt.Fprintf(w, "\n### N = %d agents\n\n", r.n)
	fmt.Fprintf(w, "load average before %s, after %s; seeding took %s\n\n", r.loadBefore, r.loadAfter, r.seedTime.Round(time.Second))
	limit := "all at once"
	if r.dialLimit > 0 {
		limit = fmt.Sprintf("at most %d handshakes in flight", r.dialLimit)
	}
	fmt.Fprintf(w, "- connect storm (%s): %s until all %d clients had a map (%d had one at the end; median client %s); "+
		"connected (hello sent) by %s, median %s; %d gateway maps pushed meanwhile; controller CPU %.1f s, harness CPU %.1f s; %s of frames sent\n",
		limit, fmtDur(r.storm, !r.stormDone), r.n, r.stormHave, fmtLatency(r.stormP50), fmtLatency(r.connAll), fmtLatency(r.connP50),
		r.stormGWMaps, r.stormCPU.Seconds(), r.harnessCPU.Seconds(), fmtBytes(r.stormBytes))
	idle := "idle controller"
	if !r.stormDone {
		idle = "controller after the storm deadline (clients still reconnecting, so not idle)"
	}
	fmt.Fprintf(w, "- %s: %.1f%% of a core; RSS %s (peak %s); harness RSS %s; agent connection errors %d, revoked %d\n\n",
		idle, 100*r.idleCPU, fmtBytes(r.rss), fmtBytes(r.peakRSS), fmtBytes(r.harnessRSS), r.failures, r.revoked)
	if r.stormDrops >= 0 {
		fmt.Fprintf(w, "- UDP datagrams the host dropped for full receive buffers during the storm: %d\n", r.stormDrops)
	}
	if r.errorKinds != "" {
		fmt.Fprintf(w, "- agent connection errors by kind: %s\n\n", r.errorKinds)
	}
	if len(r.changes) == 0 {
		return
	}
	fmt.Fprintln(w, "| change | runs | agents reached / affected | p50 | p99 | max | bytes per change | frames per change | controller CPU-s per change | API call |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, k := range r.byKind() {
		ok := k.runs - k.errored
		if ok == 0 {
			fmt.Fprintf(w, "| %s | %d | all runs failed | | | | | | | |\n", k.kind, k.runs)
			continue
		}
		max := "-"
		if len(k.latencies) > 0 {
			max = fmtLatency(k.latencies[len(k.latencies)-1])
		}
		if k.acked < k.affected {
			max = "> deadline"
		}
		fmt.Fprintf(w, "| %s | %d | %d / %d | %s | %s | %s | %s | %d | %.2f | %s |\n",
			k.kind, k.runs, k.acked, k.affected, k.quantile(50), k.quantile(99), max,
			fmtBytes(k.bytes/int64(ok)), k.frames/int64(ok), k.cpu.Seconds()/float64(ok), fmtLatency(k.api/time.Duration(ok)))
	}
	for _, c := range r.changes {
		if c.err != nil {
			fmt.Fprintf(w, "\n%s failed: %v\n", c.kind, c.err)
		}
	}
}

func printSummary(w io.Writer, rs []*runResult) {
	fmt.Fprintln(w, "\n### Summary")
	fmt.Fprintln(w, "\n| N | connect storm | idle CPU | RSS (peak) | member change p99 | broad change p99 | broad change bytes | broad change CPU-s |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		member, broad := &kindStats{}, &kindStats{}
		var broadRuns int
		for _, k := range r.byKind() {
			dst := member
			if k.kind == changeGrantAll || k.kind == changeRevokeAll {
				dst = broad
				broadRuns += k.runs - k.errored
			}
			dst.affected += k.affected
			dst.acked += k.acked
			dst.latencies = append(dst.latencies, k.latencies...)
			dst.bytes += k.bytes
			dst.cpu += k.cpu
		}
		slices.Sort(member.latencies)
		slices.Sort(broad.latencies)
		bb, bc := "-", "-"
		if broadRuns > 0 {
			bb = fmtBytes(broad.bytes / int64(broadRuns))
			bc = fmt.Sprintf("%.2f", broad.cpu.Seconds()/float64(broadRuns))
		}
		idle := fmt.Sprintf("%.1f%%", 100*r.idleCPU)
		if !r.stormDone {
			idle = "n/a (storm unfinished)"
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s (%s) | %s | %s | %s | %s |\n", r.n, fmtDur(r.storm, !r.stormDone),
			idle, fmtBytes(r.rss), fmtBytes(r.peakRSS), member.quantile(99), broad.quantile(99), bb, bc)
	}
}

func (c changeResult) line() string {
	if c.err != nil {
		return "error: " + c.err.Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d/%d agents", c.acked, c.affected)
	if len(c.latencies) > 0 {
		fmt.Fprintf(&b, ", p50 %s p99 %s max %s", fmtLatency(pct(c.latencies, 50)), fmtLatency(pct(c.latencies, 99)), fmtLatency(c.latencies[len(c.latencies)-1]))
	}
	if c.timedOut {
		b.WriteString(" (deadline passed)")
	}
	fmt.Fprintf(&b, ", %s in %d frames, controller CPU %.2f s, API call %s", fmtBytes(c.bytes), c.frames, c.cpu.Seconds(), fmtLatency(c.apiTime))
	return b.String()
}

func fmtDur(d time.Duration, exceeded bool) string {
	s := fmtLatency(d)
	if exceeded {
		return "> " + s
	}
	return s
}

func fmtLatency(d time.Duration) string {
	switch {
	case d >= time.Minute:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	}
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f kB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}
