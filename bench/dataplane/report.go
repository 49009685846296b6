package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// print writes Markdown tables: each metric's median and range per
// variant; the ratios of each variant to plain wireguard-go (and of tun to
// plain-nft, userspace and tcp443 to tun), each the median and range of
// the ratios taken within a round; and the round trip's added time for the
// same pairs, also per round.
func (r *results) print(w io.Writer, variants []string) {
	metrics := slices.Clone(r.order)
	// Throughput first, then CPU, loss and latency, each in test order.
	rank := func(m string) int {
		switch {
		case strings.Contains(m, "CPU"):
			return 1
		case strings.Contains(m, "loss"):
			return 2
		case strings.Contains(m, "round trip"):
			return 3
		}
		return 0
	}
	slices.SortStableFunc(metrics, func(a, b string) int { return rank(a) - rank(b) })
	prec := func(m string) int {
		switch {
		case strings.Contains(m, "CPU"):
			return 2
		case strings.Contains(m, "loss"):
			return 1
		}
		return 0
	}

	fmt.Fprintf(w, "| metric | %s |\n", strings.Join(variants, " | "))
	fmt.Fprintf(w, "|---%s|\n", strings.Repeat("|---", len(variants)))
	for _, m := range metrics {
		row := []string{m}
		for _, v := range variants {
			row = append(row, summarize(valid(r.m[m][v])).format(prec(m)))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}

	type pair struct{ num, den string }
	var pairs []pair
	has := func(v string) bool { return slices.Contains(variants, v) }
	for _, v := range variants {
		if v != "plain" && has("plain") {
			pairs = append(pairs, pair{v, "plain"})
		}
	}
	for _, p := range []pair{{"tun", "plain-nft"}, {"userspace", "tun"}, {"tcp443", "tun"}} {
		if has(p.num) && has(p.den) {
			pairs = append(pairs, p)
		}
	}
	if len(pairs) == 0 {
		return
	}
	names := make([]string, len(pairs))
	for i, p := range pairs {
		names[i] = p.num + " / " + p.den
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "| ratio (median of rounds, range) | %s |\n", strings.Join(names, " | "))
	fmt.Fprintf(w, "|---%s|\n", strings.Repeat("|---", len(pairs)))
	for _, m := range metrics {
		if strings.Contains(m, "loss") {
			continue
		}
		row := []string{m}
		for _, p := range pairs {
			row = append(row, summarize(ratios(r.m[m][p.num], r.m[m][p.den])).format(2))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}

	fmt.Fprintln(w)
	for i, p := range pairs {
		names[i] = p.num + " − " + p.den
	}
	fmt.Fprintf(w, "| added time, µs (median of rounds, range) | %s |\n", strings.Join(names, " | "))
	fmt.Fprintf(w, "|---%s|\n", strings.Repeat("|---", len(pairs)))
	for _, m := range metrics {
		if !strings.Contains(m, "round trip") {
			continue
		}
		row := []string{m}
		for _, p := range pairs {
			row = append(row, summarize(diffs(r.m[m][p.num], r.m[m][p.den])).format(0))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}
}

// diffs is a[i]-b[i] for every round both measured.
func diffs(a, b []float64) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if !math.IsNaN(a[i]) && !math.IsNaN(b[i]) {
			out = append(out, a[i]-b[i])
		}
	}
	return out
}
