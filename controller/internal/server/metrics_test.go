package server

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/control"
	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/siem"
	"github.com/cordonhq/cordon/internal/metricshttp/metricstest"
	"github.com/cordonhq/cordon/pkg/adminapi"
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
		"cordon_audit_log_checkpoint_timestamp_seconds", "cordon_audit_search_index_lag_records", "cordon_gateways_spool_full", "cordon_gateways_clock_skewed",
		"go_goroutines", "process_resident_memory_bytes"} {
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
	reg := metricsRegistry(metricsSources{totals: func() control.Totals { return control.Totals{} }, latest: func() *ledger.Signed { return nil },
		sinks:          func() []siem.Status { return []siem.Status{{Name: "splunk"}} }, // one sink, so its metrics are served
		signInFailures: func() map[string]uint64 { return nil }, push: newPushHistogram()})
	deploy := filepath.Join("..", "..", "..", "deploy")
	metricstest.CheckDeployed(t, metricstest.Served(t, reg),
		filepath.Join(deploy, "prometheus", "cordon-alerts.yaml"), filepath.Join(deploy, "grafana", "cordon-controller.json"))
}

// TestSIEMSinkMetrics: each SIEM sink's lag, cursor, state and count are
// served with the sink's name as a label, read when scraped.
func TestSIEMSinkMetrics(t *testing.T) {
	lag := int64(5)
	reg := metricsRegistry(metricsSources{totals: func() control.Totals { return control.Totals{} }, latest: func() *ledger.Signed { return nil }, sinks: func() []siem.Status {
		return []siem.Status{{Name: "splunk", Cursor: 10, Lag: lag, Connected: true, Sent: 10}, {Name: "lake", Alerting: true, Lag: 900}}
	}})
	lag = 7
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			for _, l := range m.GetLabel() {
				if l.GetName() == "sink" {
					got[f.GetName()+"/"+l.GetValue()] = v
				}
			}
		}
	}
	want := map[string]float64{
		"cordon_siem_sink_lag_records/splunk": 7, "cordon_siem_sink_lag_records/lake": 900,
		"cordon_siem_sink_cursor/splunk": 10, "cordon_siem_sink_connected/splunk": 1, "cordon_siem_sink_connected/lake": 0,
		"cordon_siem_sink_alerting/lake": 1, "cordon_siem_sink_records_sent_total/splunk": 10,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}
