package main

import (
	"math"
	"strings"
	"testing"
)

func TestQuantile(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		q    float64
		want float64
	}{
		{[]float64{3, 1, 2}, 0.5, 2},
		{[]float64{4, 1, 3, 2}, 0.5, 2.5},
		{[]float64{5}, 0.99, 5},
		{[]float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 0.9, 10},
		{[]float64{10, 0}, 0.25, 2.5},
	} {
		if got := quantile(c.xs, c.q); got != c.want {
			t.Errorf("quantile(%v, %v) = %v, want %v", c.xs, c.q, got, c.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing is not NaN")
	}
	xs := []float64{3, 1, 2}
	median(xs)
	if xs[0] != 3 || xs[1] != 1 {
		t.Errorf("quantile sorted its argument: %v", xs)
	}
}

func TestRatiosSkipFailedRounds(t *testing.T) {
	a := []float64{2, math.NaN(), 9, 4}
	b := []float64{1, 5, 3, 0}
	got := ratios(a, b)
	if len(got) != 2 || got[0] != 2 || got[1] != 3 {
		t.Errorf("ratios = %v, want [2 3] (round 2 failed, round 4 divides by zero)", got)
	}
}

func TestSpreadFormat(t *testing.T) {
	if got := summarize([]float64{0.9, 1.1, 1.0}).format(2); got != "1.00 (0.90–1.10)" {
		t.Errorf("format = %q", got)
	}
	if got := summarize(nil).format(2); got != "–" {
		t.Errorf("format of nothing = %q", got)
	}
	if got := summarize([]float64{math.NaN(), 2}[1:]).format(0); got != "2" {
		t.Errorf("format of one = %q", got)
	}
}

func TestReportPairsAndDiffs(t *testing.T) {
	var r results
	for round, v := range []struct{ plain, tun float64 }{{100, 150}, {200, 220}} {
		r.add("round trip p50 µs", "plain", round, 2, v.plain)
		r.add("round trip p50 µs", "tun", round, 2, v.tun)
	}
	var b strings.Builder
	r.print(&b, []string{"plain", "tun"})
	out := b.String()
	for _, want := range []string{
		"| round trip p50 µs | 150 (100–200) | 185 (150–220) |",
		"| round trip p50 µs | 1.30 (1.10–1.50) |", // 1.5 and 1.1, per round
		"| round trip p50 µs | 35 (20–50) |",       // tun − plain per round
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if got := diffs([]float64{5, math.NaN(), 7}, []float64{1, 1, math.NaN()}); len(got) != 1 || got[0] != 4 {
		t.Errorf("diffs = %v, want [4]", got)
	}
}
