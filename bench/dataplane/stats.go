package main

import (
	"fmt"
	"math"
	"slices"
)

// median returns the median of xs (the mean of the middle two for an even
// count), NaN for none.
func median(xs []float64) float64 {
	return quantile(xs, 0.5)
}

// quantile returns the q-quantile of xs by linear interpolation between
// the closest ranks, NaN for none. xs is not modified.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

// spread is a median with the range it came from.
type spread struct {
	med, min, max float64
	n             int
}

func summarize(xs []float64) spread {
	if len(xs) == 0 {
		return spread{med: math.NaN(), min: math.NaN(), max: math.NaN()}
	}
	return spread{med: median(xs), min: slices.Min(xs), max: slices.Max(xs), n: len(xs)}
}

// format prints the median and, for more than one value, the range, each
// with prec decimals: "941 (903–977)".
func (s spread) format(prec int) string {
	if s.n == 0 {
		return "–"
	}
	if s.n == 1 {
		return fmt.Sprintf("%.*f", prec, s.med)
	}
	return fmt.Sprintf("%.*f (%.*f–%.*f)", prec, s.med, prec, s.min, prec, s.max)
}

// ratios divides a[i] by b[i] for every round both measured (a value is
// NaN when its round failed), so that a ratio is always taken within one
// round.
func ratios(a, b []float64) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if math.IsNaN(a[i]) || math.IsNaN(b[i]) || b[i] == 0 {
			continue
		}
		out = append(out, a[i]/b[i])
	}
	return out
}

// valid drops the NaNs of failed rounds.
func valid(xs []float64) []float64 {
	return slices.DeleteFunc(slices.Clone(xs), math.IsNaN)
}
