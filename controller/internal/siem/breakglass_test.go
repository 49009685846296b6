package siem

import (
	"encoding/json"
	"testing"

	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"golang.org/x/mod/sumdb/tlog"
)

// TestBreakGlassAlertPriority: a break-glass use reaches syslog at
// severity 1 (alert: act now), the highest any record gets, and OCSF as a
// High Detection Finding titled as such.
func TestBreakGlassAlertPriority(t *testing.T) {
	r := auditlog.Record{Seq: 7, Time: t0, Type: audit.AuthBreakGlass, Actor: "user:er-1", Outcome: string(audit.Raised),
		Subject: "bg-0123456789", Details: map[string]string{"user": "er-1", "justification": "ED downtime"}}
	line := r.Canonical()
	msgs, err := parseFrames(appendSyslogRecord(nil, "ctl-1", r, line, tlog.RecordHash(line)))
	if err != nil || len(msgs) != 1 {
		t.Fatalf("frames: %v, %d", err, len(msgs))
	}
	if got, want := msgs[0].Pri, facility*8+1; got != want {
		t.Fatalf("PRI %d, want %d (severity 1, alert)", got, want)
	}
	for _, s := range audit.All() {
		if sev := s.MaxSeverity(); sev.Syslog() < 1 {
			t.Fatalf("%s maps above alert (%d)", s.Type, sev.Syslog())
		}
	}
	b, err := appendOCSFRecord(nil, "origin", r, line, tlog.RecordHash(line))
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		ClassUID   int    `json:"class_uid"`
		Severity   string `json:"severity"`
		FindingInf struct {
			Title string `json:"title"`
		} `json:"finding_info"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	if e.ClassUID != classDetectionFinding || e.Severity != "High" || e.FindingInf.Title != "Break-glass emergency access used" {
		t.Fatalf("OCSF event %+v: want a High Detection Finding", e)
	}
}
