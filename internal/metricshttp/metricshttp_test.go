package metricshttp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// /readyz follows the ready check and says what is missing; /healthz
// always answers; /metrics reads a Funcs value at scrape time.
func TestHandler(t *testing.T) {
	var notReady atomic.Bool
	notReady.Store(true)
	var n atomic.Int64
	reg := NewRegistry()
	Funcs{Reg: reg}.Counter("test_things_total", "Things.", nil, func() float64 { return float64(n.Load()) })
	h := Handler(reg, func(context.Context) error {
		if notReady.Load() {
			return errors.New("no map yet")
		}
		return nil
	}, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no map yet") {
		t.Errorf("/readyz while not ready: %d %q", code, body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	notReady.Store(false)
	if code, body := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz when ready: %d %q", code, body)
	}
	n.Store(7)
	if _, body := get("/metrics"); !strings.Contains(body, "\ncordon_test_things_total 7\n") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics lacks cordon_test_things_total 7 or the Go collector:\n%s", body)
	}
	if code, _ := get("/nothing"); code != http.StatusNotFound {
		t.Errorf("/nothing: %d", code)
	}
}
