package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/apitest"
	"github.com/cordonhq/cordon/pkg/adminapi"
)

// TestAuditSinks: 'cordonctl audit sinks' shows each SIEM sink's cursor,
// lag and state, as a table and as JSON.
func TestAuditSinks(t *testing.T) {
	at := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	h := newHarnessWith(t, apitest.Options{SIEMSinks: []adminapi.AuditSink{
		{Name: "splunk", Format: "syslog", Transport: "tls", Target: "sc4s:6514", Cursor: 120, LogSize: 120, Connected: true, LastSent: at},
		{Name: "lake", Format: "ocsf", Transport: "file", Target: "/var/log/a.jsonl", Cursor: 7, LogSize: 20007, Lag: 20000,
			Alerting: true, BehindSince: at, LastError: "sync /var/log/a.jsonl: no space left on device\x1b[2J"},
	}})
	out := h.ok("audit", "sinks")
	for _, want := range []string{"splunk", "sc4s:6514", "connected", "lake", "20000", "ALERT: behind", "no space left on device?[2J"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	var xs []adminapi.AuditSink
	if err := json.Unmarshal([]byte(h.ok("audit", "sinks", "-o", "json")), &xs); err != nil {
		t.Fatal(err)
	}
	if len(xs) != 2 || xs[1].Lag != 20000 || !xs[1].Alerting || xs[0].Cursor != 120 || !xs[1].BehindSince.Equal(at) {
		t.Fatalf("json: %+v", xs)
	}

	none := newHarness(t)
	if out := none.ok("audit", "sinks"); !strings.Contains(out, "no SIEM sinks") {
		t.Fatalf("without sinks: %q", out)
	}
}
