package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// print writes two Markdown tables: each metric's median and range per
// variant, then the ratios of each variant to plain wireguard-go (and of
// userspace and tcp443 to tun), each the median and range of the ratios
// taken within a round. A last table gives the round trip's added time
// over plain, also per round.
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
	for _, v := range variants {
		if v != "plain" && slices.Contains(variants, "plain") {
			pairs = append(pairs, pair{v, "plain"})
		}
	}
	for _, v := range []string{"userspace", "tcp443"} {
		if slices.Contains(variants, v) && slices.Contains(variants, "tun") {
			pairs = append(pairs, pair{v, "tun"})
		}
	}
	if len(pairs) == 0 {
		return
	}
	fmt.Fprintln(w)
	head := []string{"ratio (median of rounds, range)"}
	for _, p := range pairs {
		head = append(head, p.num+" / "+p.den)
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(head, " | "))
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

	var rt []string
	for _, m := range metrics {
		if strings.Contains(m, "round trip") {
			rt = append(rt, m)
		}
	}
	if len(rt) == 0 || !slices.Contains(variants, "plain") {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "| added over plain, µs (median of rounds, range) | %s |\n", strings.Join(pairNames(pairs), " | "))
	fmt.Fprintf(w, "|---%s|\n", strings.Repeat("|---", len(pairNames(pairs))))
	for _, m := range rt {
		row := []string{m}
		for _, p := range pairs {
			if p.den == "plain" {
				row = append(row, summarize(diffs(r.m[m][p.num], r.m[m]["plain"])).format(0))
			}
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}
}

func pairNames[P interface{ ~struct{ num, den string } }](ps []P) []string {
	var out []string
	for _, p := range ps {
		q := struct{ num, den string }(p)
		if q.den == "plain" {
			out = append(out, q.num)
		}
	}
	return out
}

// diffs is a[i]-b[i] for every round both measured.
func diffs(a, b []float64) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if a[i] == a[i] && b[i] == b[i] { // neither NaN
			out = append(out, a[i]-b[i])
		}
	}
	return out
}
