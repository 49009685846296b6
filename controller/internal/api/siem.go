package api

import (
	"net/http"

	"github.com/cordonhq/cordon/pkg/adminapi"
)

// auditSinks reports each SIEM sink's cursor and lag (package siem).
func (a *API) auditSinks(w http.ResponseWriter, _ *http.Request, _ string) error {
	out := []adminapi.AuditSink{}
	if a.sinks != nil {
		for _, s := range a.sinks() {
			out = append(out, adminapi.AuditSink{Name: s.Name, Format: string(s.Format), Transport: s.Transport, Target: s.Target,
				Cursor: s.Cursor, Checkpoint: s.Checkpoint, LogSize: s.LogSize, Lag: s.Lag, Connected: s.Connected,
				BehindSince: s.BehindSince, Alerting: s.Alerting, LastError: s.LastError, LastErrorAt: s.LastErrorAt,
				LastSent: s.LastSent, Sent: s.Sent})
		}
	}
	return ok(w, out)
}
