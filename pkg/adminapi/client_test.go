package adminapi

import (
	"context"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

func testClient(t *testing.T, h http.HandlerFunc) (*Client, *httptest.Server) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c, err := New(srv.URL, "tok", ca)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, srv
}

// A change whose answer is lost is sent again with the same key; the
// controller's "already applied" becomes an AppliedError.
func TestDoRetriesLostAnswerWithSameKey(t *testing.T) {
	var (
		mu   sync.Mutex
		keys []string
	)
	c, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get(IdempotencyHeader))
		n := len(keys)
		mu.Unlock()
		if n == 1 {
			// Applied, then the connection dies before the answer.
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		writeTestJSON(w, http.StatusConflict, `{"error":"request was already applied","code":"already_applied"}`)
	})
	c.RetryFor = 10 * time.Second
	retries := 0
	c.OnRetry = func(int, error) { retries++ }
	err := c.Do(context.Background(), http.MethodPost, "/v1/groups", map[string]string{"name": "icu"}, nil)
	var ae *AppliedError
	if !errors.As(err, &ae) {
		t.Fatalf("Do = %v, want *AppliedError", err)
	}
	if len(keys) != 2 || keys[0] == "" || keys[0] != keys[1] || ae.RequestID != keys[0] {
		t.Fatalf("keys sent %q (AppliedError for %q), want the same non-empty key twice", keys, ae.RequestID)
	}
	if retries != 1 {
		t.Fatalf("OnRetry called %d times, want 1", retries)
	}
}

// Without RetryFor a lost answer is reported, not retried; reads carry no key.
func TestDoNoRetryByDefault(t *testing.T) {
	calls := 0
	c, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		calls++
		if r.Method == http.MethodGet && r.Header.Get(IdempotencyHeader) != "" {
			t.Errorf("GET carried an Idempotency-Key")
		}
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	})
	err := c.Do(context.Background(), http.MethodDelete, "/v1/groups/icu", nil, nil)
	var ue *UnreachableError
	if !errors.As(err, &ue) || calls != 1 {
		t.Fatalf("Do = %v after %d calls, want UnreachableError after 1", err, calls)
	}
}

// A refused connection on the first attempt cannot have applied anything:
// no retry, however long RetryFor is.
func TestDoRefusedNotRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, _ := testClient(t, func(http.ResponseWriter, *http.Request) {})
	c.base.Host = addr
	c.RetryFor = time.Minute
	c.OnRetry = func(int, error) { t.Error("retried a request that was never sent") }
	err = c.Do(context.Background(), http.MethodPost, "/v1/groups", map[string]string{"name": "icu"}, nil)
	var ue *UnreachableError
	if !errors.As(err, &ue) {
		t.Fatalf("Do = %v, want UnreachableError", err)
	}
}

func writeTestJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write([]byte(body))
}
