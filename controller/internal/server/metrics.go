package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cordonhq/cordon/controller/internal/control"
	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/store"
)

// metricsRegistry is the controller's Prometheus metrics. Each is read
// from the component that keeps it when scraped, so nothing on the hot
// paths changes for them. The metric names are in docs/operations.md.
// totals is control.Server.Totals and latest ledger.Ledger.Latest.
func metricsRegistry(totals func() control.Totals, latest func() *ledger.Signed) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gauge := func(name, help string, labels prometheus.Labels, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "cordon", Name: name, Help: help, ConstLabels: labels}, f))
	}
	counter := func(name, help string, labels prometheus.Labels, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "cordon", Name: name, Help: help, ConstLabels: labels}, f))
	}
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
	return reg
}

// serveMetrics serves /metrics, /healthz (the process answers) and
// /readyz (the store answers a read within 2 s) on ln until ctx ends.
func serveMetrics(ctx context.Context, ln net.Listener, reg *prometheus.Registry, st store.Store, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if _, err := st.AuditLogSize(rctx); err != nil {
			http.Error(w, "not ready: the store does not answer: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	log.Info("metrics and health served", "addr", ln.Addr().String(), "paths", "/metrics /healthz /readyz")
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("metrics listener", "err", err)
	}
}
