package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/pkg/adminapi"
	"golang.org/x/oauth2"
)

// startFrom POSTs to an OIDC start route as a client at addr.
func (e *env) startFrom(path, addr, body string) *httptest.ResponseRecorder {
	e.t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.RemoteAddr = addr
	rec := httptest.NewRecorder()
	e.API.Handler().ServeHTTP(rec, req)
	return rec
}

// A client flooding the public start routes is refused (429, Retry-After,
// audited once) without locking out anyone else, users or admins.
func TestOIDCStartFloodPerSource(t *testing.T) {
	e, _ := newOIDCEnv(t)
	code := `{"idp":"test","redirect_uri":"http://127.0.0.1:9/cb","code_challenge":"` +
		oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier()) + `"}`
	const flood = "198.51.100.7:40000"
	refused := 0
	for i := range 40 {
		path := "/v1/login/oidc/start"
		if i%2 == 1 {
			path = "/v1/admin/login/oidc/start" // the admin route shares the same pool
		}
		rec := e.startFrom(path, flood, code)
		switch rec.Code {
		case http.StatusOK:
		case http.StatusTooManyRequests:
			refused++
			var body adminapi.ErrorBody
			json.Unmarshal(rec.Body.Bytes(), &body)
			if s, err := strconv.Atoi(rec.Header().Get("Retry-After")); err != nil || s < 60 || body.Code != adminapi.CodeRateLimited || !strings.Contains(body.Error, "from this address") {
				t.Fatalf("refusal: Retry-After %q, body %+v", rec.Header().Get("Retry-After"), body)
			}
		default:
			t.Fatalf("start %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	if refused != 40-16 {
		t.Errorf("%d of 40 starts refused, want %d (16 pending per source)", refused, 40-16)
	}
	for range 10 {
		if rec := e.startFrom("/v1/login/oidc/device", flood, `{"idp":"test"}`); rec.Code != http.StatusOK && rec.Code != http.StatusTooManyRequests {
			t.Fatalf("device start: %d %s", rec.Code, rec.Body)
		}
	}
	if rec := e.startFrom("/v1/login/oidc/device", flood, `{"idp":"test"}`); rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), "device-code") {
		t.Errorf("fifth device start from the flood: %d %s, want 429", rec.Code, rec.Body)
	}
	// Another address still signs in, user and admin.
	for _, path := range []string{"/v1/login/oidc/start", "/v1/admin/login/oidc/start"} {
		if rec := e.startFrom(path, "203.0.113.9:50000", code); rec.Code != http.StatusOK {
			t.Errorf("%s from another source: %d %s", path, rec.Code, rec.Body)
		}
	}
	if rec := e.startFrom("/v1/admin/login/oidc/device", "203.0.113.9:50000", `{"idp":"test"}`); rec.Code != http.StatusOK {
		t.Errorf("admin device start from another source: %d %s", rec.Code, rec.Body)
	}

	// Audited once per source and window, not per refused request.
	var busy int
	for _, typ := range []string{"auth.login", "admin.login"} {
		for _, ev := range e.audit(typ) {
			if strings.HasPrefix(ev.Details["reason"], "too many sign-ins pending") {
				busy++
				if ev.Details["source"] != "198.51.100.7" {
					t.Errorf("refusal audited with source %q", ev.Details["source"])
				}
			}
		}
	}
	if busy != 1 {
		t.Errorf("%d refusals audited, want 1", busy)
	}
}
