package cli_test

import (
	"bytes"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cordonhq/cordon/cordonctl/internal/cli"
	"github.com/cordonhq/cordon/pkg/adminapi"
)

// A change whose answer is lost is sent again with the same request ID;
// when the controller says the first attempt applied, cordonctl says so
// and succeeds.
func TestLostAnswerRetriedAndReportedApplied(t *testing.T) {
	var (
		mu   sync.Mutex
		keys []string
	)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get(adminapi.IdempotencyHeader))
		n := len(keys)
		mu.Unlock()
		if n == 1 {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close() // applied, but the answer never leaves
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte(`{"error":"request ` + keys[0] + ` was already applied; not applied again","code":"already_applied"}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"XDG_CONFIG_HOME": filepath.Join(dir, "config"), cli.EnvController: srv.URL, cli.EnvToken: "tok", cli.EnvCACert: ca}
	var out, errb bytes.Buffer
	code := cli.Main(t.Context(), []string{"group", "create", "icu"}, cli.IO{
		In: strings.NewReader(""), Out: &out, Err: &errb, Getenv: func(k string) string { return env[k] },
	})
	if code != cli.ExitOK {
		t.Fatalf("exit %d, stderr %q; want 0", code, errb.String())
	}
	if len(keys) != 2 || keys[0] == "" || keys[0] != keys[1] {
		t.Fatalf("request IDs sent %q, want the same one twice", keys)
	}
	for _, want := range []string{"no answer from the controller", "the change was applied", keys[0]} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr %q does not say %q", errb.String(), want)
		}
	}
}
