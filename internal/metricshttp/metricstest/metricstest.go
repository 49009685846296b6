// Package metricstest checks, in a daemon's tests, that the Prometheus
// alert rules and Grafana dashboard shipped under deploy/ parse and name
// only metrics the daemon serves.
package metricstest

import (
	"encoding/json"
	"os"
	"regexp"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"
)

// nameRE finds metric names in PromQL: Cordon's and the Go and process
// collectors'. Prometheus's own (up, probe_success) are not matched.
var nameRE = regexp.MustCompile(`\b(cordon|process|go)_[a-z_]+`)

// Served is the metric names reg serves, with the _bucket, _sum and
// _count series of histograms and summaries.
func Served(t testing.TB, reg prometheus.Gatherer) map[string]bool {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	for _, f := range families {
		served[f.GetName()] = true
		switch f.GetType().String() {
		case "HISTOGRAM", "SUMMARY":
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				served[f.GetName()+s] = true
			}
		}
	}
	return served
}

// CheckDeployed fails t unless rulesFile (Prometheus rules, YAML) has at
// least one rule and every rule and every panel of dashFile (Grafana JSON)
// names only metrics in served.
func CheckDeployed(t testing.TB, served map[string]bool, rulesFile, dashFile string) {
	t.Helper()
	check := func(file, expr string) {
		for _, name := range nameRE.FindAllString(expr, -1) {
			if !served[name] {
				t.Errorf("%s: %q names %s, which the daemon does not serve", file, expr, name)
			}
		}
	}
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert, Expr string
			}
		}
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("%s: a rule without alert or expr: %+v", rulesFile, r)
			}
			check(rulesFile, r.Expr)
			n++
		}
	}
	if n == 0 {
		t.Fatalf("%s: no rules", rulesFile)
	}
	if b, err = os.ReadFile(dashFile); err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashFile, err)
	}
	exprs := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			check(dashFile, tg.Expr)
			exprs++
		}
	}
	if exprs == 0 {
		t.Errorf("%s: no panel queries", dashFile)
	}
}
