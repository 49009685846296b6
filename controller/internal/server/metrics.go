package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cordonhq/cordon/controller/internal/api"
	"github.com/cordonhq/cordon/controller/internal/control"
	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/siem"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/internal/metricshttp"
)

// metricsSources are where the controller's metrics are read from when
// scraped, so nothing on the hot paths changes for them: totals is
// control.Server.Totals, latest ledger.Ledger.Latest and sinks
// siem.Exporter.Status (nil: no SIEM sinks). Nil signInFailures and push
// leave their metrics out (unit tests).
type metricsSources struct {
	totals func() control.Totals
	latest func() *ledger.Signed
	sinks  func() []siem.Status
	// signInFailures is api.API.SignInFailures; push is the histogram
	// control.Config.ObservePush feeds (newPushHistogram).
	signInFailures func() map[string]uint64
	push           prometheus.Histogram
	// auditIndexBehind is sqlite.Store.AuditIndexBehind (nil: left out).
	auditIndexBehind func() int64
}

// newPushHistogram is cordon_control_map_push_seconds: from a map change
// offered to an agent to the agent's ack of it (control.Config.ObservePush).
func newPushHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: metricshttp.Namespace, Name: "control_map_push_seconds",
		Help:    "Seconds from a network map change offered to an agent until the agent acknowledged applying it (or a newer map).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}})
}

// metricsRegistry is the controller's Prometheus metrics (names in
// docs/operations.md).
func metricsRegistry(src metricsSources) *prometheus.Registry {
	totals, latest, sinks := src.totals, src.latest, src.sinks
	reg := metricshttp.NewRegistry()
	m := metricshttp.Funcs{Reg: reg}
	gauge, counter := m.Gauge, m.Counter
	gauge("control_agents", "Agents connected to the control channel now.", prometheus.Labels{"kind": "client"},
		func() float64 { return float64(totals().Clients) })
	gauge("control_agents", "Agents connected to the control channel now.", prometheus.Labels{"kind": "gateway"},
		func() float64 { return float64(totals().Gateways) })
	counter("control_maps_sent_total", "Network maps sent to agents, whole or as a delta.", prometheus.Labels{"form": "whole"},
		func() float64 { return float64(totals().Sent.Maps) })
	counter("control_maps_sent_total", "Network maps sent to agents, whole or as a delta.", prometheus.Labels{"form": "delta"},
		func() float64 { return float64(totals().Sent.Deltas) })
	counter("control_map_bytes_sent_total", "Bytes of network map frames sent to agents.", nil,
		func() float64 { return float64(totals().Sent.Bytes) })
	counter("control_drift_findings_total", "Drift checks that found the state maps are computed from differing from the store (anything but 0 is a defect).", nil,
		func() float64 { return float64(totals().Drifts) })
	gauge("gateways_spool_full", "Gateways whose flow record spool is full now (audit.spool.full raised): they lose flow records and refuse new flows per --spool-full.", nil,
		func() float64 { return float64(totals().SpoolFull) })
	gauge("gateways_clock_skewed", "Gateways whose clock is off from the controller's by more than --clock-skew-threshold now (audit.clock.skew raised).", nil,
		func() float64 { return float64(totals().ClockSkewed) })
	gauge("audit_log_checkpoint_size", "Records covered by the audit log's latest signed checkpoint.", nil, func() float64 {
		if c := latest(); c != nil {
			return float64(c.Size)
		}
		return 0
	})
	gauge("audit_log_checkpoint_timestamp_seconds", "Time of the audit log's latest signed checkpoint (Unix seconds; 0 before the first).", nil, func() float64 {
		if c := latest(); c != nil {
			return float64(c.Time.UnixNano()) / 1e9
		}
		return 0
	})
	if src.auditIndexBehind != nil {
		gauge("audit_search_index_lag_records", "Audit records the search index has not reached yet (a search by user, device or app scans them): below about 40,000 while the indexer keeps up.", nil,
			func() float64 { return float64(src.auditIndexBehind()) })
	}
	const sessHelp = "Devices' newest sessions by state (active or ended), as of the last network map recompute."
	gauge("sessions", sessHelp, prometheus.Labels{"state": "active"}, func() float64 { return float64(totals().Sessions.Active) })
	gauge("sessions", sessHelp, prometheus.Labels{"state": "ended"}, func() float64 { return float64(totals().Sessions.Ended) })
	if src.signInFailures != nil {
		for _, kind := range api.SignInFailureKinds {
			counter("signin_failures_total", "Failed sign-ins since the controller started, by kind: user, admin, admin_token (admin API call with a bad or insufficient token), enrollment (bad enrollment token).",
				prometheus.Labels{"kind": kind}, func() float64 { return float64(src.signInFailures()[kind]) })
		}
	}
	if src.push != nil {
		reg.MustRegister(src.push)
	}
	if sinks != nil {
		for i, sk := range sinks() {
			l := prometheus.Labels{"sink": sk.Name}
			at := func() siem.Status { return sinks()[i] }
			gauge("siem_sink_lag_records", "Audit records the SIEM sink has not accepted yet.", l, func() float64 { return float64(at().Lag) })
			gauge("siem_sink_cursor", "Seq of the last audit record the SIEM sink accepted.", l, func() float64 { return float64(at().Cursor) })
			gauge("siem_sink_connected", "1 while the SIEM sink is connected (its file open).", l, func() float64 { return metricshttp.Bool(at().Connected) })
			gauge("siem_sink_alerting", "1 while an audit.export.lag alert is open for the SIEM sink.", l, func() float64 { return metricshttp.Bool(at().Alerting) })
			counter("siem_sink_records_sent_total", "Audit records sent to the SIEM sink since the controller started.", l,
				func() float64 { return float64(at().Sent) })
		}
	}
	return reg
}

// serveMetrics serves /metrics, /healthz (the process answers) and
// /readyz (the store answers a read within 2 s) on ln until ctx ends.
func serveMetrics(ctx context.Context, ln net.Listener, reg *prometheus.Registry, st store.Store, log *slog.Logger) {
	metricshttp.Serve(ctx, ln, reg, func(ctx context.Context) error {
		if _, err := st.AuditLogSize(ctx); err != nil {
			return fmt.Errorf("the store does not answer: %w", err)
		}
		return nil
	}, log)
}
