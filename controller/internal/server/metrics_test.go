package server

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/control"
	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"gopkg.in/yaml.v3"
)

// --metrics-listen serves the controller's metrics and health checks;
// the audit log's checkpoint size moves when an admin change is recorded.
func TestMetricsAndHealth(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	addr, logs := start(t, dir, func(c *Config) { c.MetricsListen = metricsAddr })
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + metricsAddr + path)
		if err != nil {
			t.Fatalf("GET %s: %v\n%s", path, err, logs)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := get(p); code != http.StatusOK {
			t.Errorf("GET %s: %d %s", p, code, body)
		}
	}
	metric := func(body, name string) (float64, bool) {
		for _, line := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				return f, err == nil
			}
		}
		return 0, false
	}
	_, body := get("/metrics")
	for _, name := range []string{`cordon_control_agents{kind="client"}`, `cordon_control_agents{kind="gateway"}`,
		`cordon_control_maps_sent_total{form="whole"}`, `cordon_control_maps_sent_total{form="delta"}`,
		"cordon_control_map_bytes_sent_total", "cordon_control_drift_findings_total", "cordon_audit_log_checkpoint_size",
		"cordon_audit_log_checkpoint_timestamp_seconds", "go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := metric(body, name); !ok {
			t.Errorf("metric %s missing from /metrics", name)
		}
	}
	before, _ := metric(body, "cordon_audit_log_checkpoint_size")

	token, err := os.ReadFile(filepath.Join(dir, AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, ca.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := adminapi.New("https://"+addr, strings.TrimSpace(string(token)), caPEM)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.CreateSegment(t.Context(), &adminapi.CreateSegmentRequest{Name: "lab", CIDRs: []string{"10.9.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, body = get("/metrics")
		if after, _ := metric(body, "cordon_audit_log_checkpoint_size"); after > before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cordon_audit_log_checkpoint_size stayed %v after an admin change", before)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The alert rules and the dashboard under deploy/ name only metrics the
// controller serves (or Prometheus's own: up, probe_success), and parse.
func TestDeployedRulesAndDashboardNameServedMetrics(t *testing.T) {
	reg := metricsRegistry(func() control.Totals { return control.Totals{} }, func() *ledger.Signed { return nil })
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	for _, f := range families {
		served[f.GetName()] = true
	}
	nameRE := regexp.MustCompile(`\b(cordon|process|go)_[a-z_]+`)
	check := func(file, expr string) {
		for _, name := range nameRE.FindAllString(expr, -1) {
			if !served[name] {
				t.Errorf("%s: %q names %s, which the controller does not serve", file, expr, name)
			}
		}
	}
	rulesFile := filepath.Join("..", "..", "..", "deploy", "prometheus", "cordon-alerts.yaml")
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
	dashFile := filepath.Join("..", "..", "..", "deploy", "grafana", "cordon-controller.json")
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
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			check(dashFile, tg.Expr)
		}
	}
}
