// Package metricshttp serves a daemon's Prometheus metrics and its health
// endpoints (/metrics, /healthz, /readyz) on one plain HTTP listener, the
// --metrics-listen of the controller, the gateway and the client.
package metricshttp

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
)

// Namespace prefixes every Cordon metric name.
const Namespace = "cordon"

// readyTimeout bounds one readiness check.
const readyTimeout = 2 * time.Second

// NewRegistry returns a registry holding the Go runtime and process
// collectors, to which a daemon adds its own metrics.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Funcs registers metrics whose value is read from the component that
// keeps it when scraped, so nothing on a hot path does work for them.
type Funcs struct{ Reg prometheus.Registerer }

// Gauge registers cordon_<name> read from f at scrape time.
func (m Funcs) Gauge(name, help string, labels prometheus.Labels, f func() float64) {
	m.Reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help, ConstLabels: labels}, f))
}

// Counter registers cordon_<name> read from f at scrape time; f must
// never decrease.
func (m Funcs) Counter(name, help string, labels prometheus.Labels, f func() float64) {
	m.Reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help, ConstLabels: labels}, f))
}

// Bool is 1 for true and 0 for false.
func Bool(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Handler serves GET /metrics (reg), /healthz (the process answers) and
// /readyz (ready returns nil within 2 s; its error is the 503 body, so it
// should say what is missing).
func Handler(reg prometheus.Gatherer, ready func(context.Context) error, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := ready(rctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	return mux
}

// Serve serves Handler on ln until ctx ends, then closes ln.
func Serve(ctx context.Context, ln net.Listener, reg prometheus.Gatherer, ready func(context.Context) error, log *slog.Logger) {
	srv := &http.Server{Handler: Handler(reg, ready, log), ReadHeaderTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	log.Info("metrics and health served", "addr", ln.Addr().String(), "paths", "/metrics /healthz /readyz")
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("metrics listener", "err", err)
	}
}
